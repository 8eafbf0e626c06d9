package controller

import (
	"context"
	"fmt"
	"strconv"

	"github.com/google/uuid"
)

// webhooksFailures prints an endpoint's latest deliveries whose last
// attempt failed (`controller webhooks failures <endpoint-id>`), of any
// tenant.
func (c *cli) webhooksFailures(ctx context.Context, args []string) error {
	id, err := uuid.Parse(args[0])
	if err != nil || len(args[0]) != 36 {
		return fmt.Errorf("endpoint id must be a UUID, not %q", args[0])
	}
	if c.opts.limit < 1 || c.opts.limit > 1000 {
		return fmt.Errorf("--limit must be between 1 and 1000, not %d", c.opts.limit)
	}
	rows, err := c.db.WebhookFailures(ctx, id.String(), c.opts.limit)
	if err != nil {
		return err
	}
	if c.opts.json {
		return c.printJSON(map[string]any{"items": rows})
	}
	w := c.table()
	fmt.Fprintln(w, "DELIVERY\tEVENT\tSTATUS\tATTEMPTS\tLAST CODE\tLAST ATTEMPT\tNEXT ATTEMPT\tERROR")
	for _, d := range rows {
		code := "-"
		if d.LastStatusCode != nil {
			code = strconv.Itoa(*d.LastStatusCode)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", d.ID, d.EventType, d.Status, d.Attempts, code,
			timeOrDash(d.LastAttemptAt), timeOrDash(d.NextAttemptAt), orDash(d.LastError))
	}
	return w.Flush()
}
