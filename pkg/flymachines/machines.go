package flymachines

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// maxWaitPerCall is the longest timeout Fly accepts on one wait request.
const maxWaitPerCall = 60 * time.Second

// waitMargin is added to a wait's server-side timeout for the HTTP attempt.
const waitMargin = 15 * time.Second

func machinesPath(app string) string {
	return "/apps/" + url.PathEscape(app) + "/machines"
}

func machinePath(app, id string) string {
	return machinesPath(app) + "/" + url.PathEscape(id)
}

// Get returns one machine. A machine Fly does not know gives an error
// matching ErrNotFound; a destroyed one Fly still remembers comes back with
// State "destroyed".
func (c *Client) Get(ctx context.Context, app, id string) (*Machine, error) {
	var m Machine
	err := c.do(ctx, request{
		op: opGet, id: id, method: http.MethodGet, path: machinePath(app, id),
		out: &m, quiet: []int{http.StatusNotFound},
	})
	if err != nil {
		return nil, fmt.Errorf("get machine %s: %w", id, err)
	}
	return &m, nil
}

// List returns the app's machines matching opts, oldest first.
func (c *Client) List(ctx context.Context, app string, opts ListOptions) ([]Machine, error) {
	var ms []Machine
	if err := c.list(ctx, app, listQuery(opts), &ms); err != nil {
		return nil, err
	}
	sortByCreated(ms, func(m *Machine) string { return m.CreatedAt })
	return ms, nil
}

// ListSummaries returns the app's machines matching opts in Fly's summary
// form (opts.Summary is implied), oldest first: id, name, state, region,
// address and creation time, without config or metadata. Metadata filters
// in opts still apply: Fly filters before summarising. This is the cheap
// way to see thousands of machines; Get reads one in full.
func (c *Client) ListSummaries(ctx context.Context, app string, opts ListOptions) ([]MachineSummary, error) {
	opts.Summary = true
	var ms []MachineSummary
	if err := c.list(ctx, app, listQuery(opts), &ms); err != nil {
		return nil, err
	}
	sortByCreated(ms, func(m *MachineSummary) string { return m.CreatedAt })
	return ms, nil
}

func (c *Client) list(ctx context.Context, app string, q url.Values, out any) error {
	err := c.do(ctx, request{
		op: opList, id: "app:" + app, method: http.MethodGet, path: machinesPath(app),
		query: q, out: out,
	})
	if err != nil {
		return fmt.Errorf("list machines of %s: %w", app, err)
	}
	return nil
}

func listQuery(opts ListOptions) url.Values {
	q := url.Values{}
	q.Set("include_deleted", strconv.FormatBool(opts.IncludeDeleted))
	keys := make([]string, 0, len(opts.Metadata))
	for k := range opts.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		q.Set("metadata."+k, opts.Metadata[k])
	}
	if opts.Region != "" {
		q.Set("region", opts.Region)
	}
	if len(opts.States) > 0 {
		q.Set("state", strings.Join(opts.States, ","))
	}
	if opts.Summary {
		q.Set("summary", "true")
	}
	return q
}

// sortByCreated orders machines by created_at, keeping Fly's order for
// equal or unreadable times. Each time is parsed once.
func sortByCreated[M any](ms []M, created func(*M) string) {
	type key struct {
		t  time.Time
		ok bool
	}
	keys := make([]key, len(ms))
	sorted := true
	var last time.Time
	for i := range ms {
		t, err := time.Parse(time.RFC3339Nano, created(&ms[i]))
		keys[i] = key{t, err == nil}
		if err == nil {
			if t.Before(last) {
				sorted = false
			}
			last = t
		}
	}
	if sorted {
		return // Fly's usual order already
	}
	idx := make([]int, len(ms))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		ka, kb := keys[idx[a]], keys[idx[b]]
		return ka.ok && kb.ok && ka.t.Before(kb.t)
	})
	out := make([]M, len(ms))
	for i, j := range idx {
		out[i] = ms[j]
	}
	copy(ms, out)
}

// Start starts a created, stopped or suspended machine.
func (c *Client) Start(ctx context.Context, app, id string) error {
	var out struct {
		PreviousState string `json:"previous_state"`
	}
	err := c.do(ctx, request{
		op: opStart, id: id, method: http.MethodPost, path: machinePath(app, id) + "/start", out: &out,
	})
	if err != nil {
		return fmt.Errorf("start machine %s: %w", id, err)
	}
	c.log.Debug("started machine", "machine_id", id, "previous_state", out.PreviousState)
	return nil
}

// Stop stops a machine; a zero StopRequest sends no body (Fly's defaults).
func (c *Client) Stop(ctx context.Context, app, id string, sr StopRequest) error {
	r := request{op: opStop, id: id, method: http.MethodPost, path: machinePath(app, id) + "/stop"}
	if sr != (StopRequest{}) {
		r.body = sr
	}
	if err := c.do(ctx, r); err != nil {
		return fmt.Errorf("stop machine %s: %w", id, err)
	}
	return nil
}

// Destroy destroys a machine; force kills it first if it runs. A machine
// that is already gone (404) counts as destroyed.
func (c *Client) Destroy(ctx context.Context, app, id string, force bool) error {
	q := url.Values{}
	if force {
		q.Set("force", "true")
	}
	err := c.do(ctx, request{
		op: opDestroy, id: id, method: http.MethodDelete, path: machinePath(app, id),
		query: q, quiet: []int{http.StatusNotFound},
	})
	if errors.Is(err, ErrNotFound) {
		c.log.Debug("machine already gone", "machine_id", id)
		return nil
	}
	if err != nil {
		return fmt.Errorf("destroy machine %s: %w", id, err)
	}
	return nil
}

// Wait blocks until the machine reaches opts.State (default started) or
// ctx ends. Fly holds each wait request at most 60 s and answers 408 when
// the state was not reached in time; Wait then asks again, so a slow boot
// may take as long as ctx allows. After each 408 it gets the machine once:
// a machine destroyed meanwhile ends the wait with ErrDestroyed, one Fly no
// longer knows with ErrNotFound.
func (c *Client) Wait(ctx context.Context, app, id string, opts WaitOptions) error {
	state := cmp.Or(opts.State, StateStarted)
	perCall := opts.PerCall
	if perCall <= 0 || perCall > maxWaitPerCall {
		perCall = maxWaitPerCall
	}
	for {
		t := perCall
		if dl, ok := ctx.Deadline(); ok {
			t = min(t, time.Until(dl))
		}
		secs := max(int(t/time.Second), 1)
		q := url.Values{}
		q.Set("state", state)
		q.Set("timeout", strconv.Itoa(secs))
		if opts.InstanceID != "" {
			q.Set("instance_id", opts.InstanceID)
		}
		start := time.Now()
		err := c.do(ctx, request{
			op: opWait, id: id, method: http.MethodGet, path: machinePath(app, id) + "/wait",
			query: q, policy: retryWait,
			timeout: time.Duration(secs)*time.Second + waitMargin,
			quiet:   []int{http.StatusRequestTimeout},
		})
		if err == nil {
			return nil
		}
		if !errors.Is(err, ErrTimeout) {
			return fmt.Errorf("wait for machine %s to be %s: %w", id, state, err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("wait for machine %s to be %s: %w (last answer: %w)", id, state, ctx.Err(), err)
		}
		// Fly may keep answering 408 for a machine that can no longer get
		// there: look once per wait call.
		if state != StateDestroyed {
			m, gerr := c.Get(ctx, app, id)
			switch {
			case errors.Is(gerr, ErrNotFound):
				return fmt.Errorf("wait for machine %s to be %s: %w", id, state, gerr)
			case gerr == nil && m.State == state:
				return nil
			case gerr == nil && m.Gone():
				return fmt.Errorf("wait for machine %s to be %s: machine is %s: %w", id, state, m.State, ErrDestroyed)
			}
		}
		c.log.Debug("machine not yet in state, waiting again", "machine_id", id, "state", state)
		// A 408 that came back early must not turn into a busy loop.
		if time.Since(start) < time.Second {
			if err := sleep(ctx, 250*time.Millisecond); err != nil {
				return fmt.Errorf("wait for machine %s to be %s: %w", id, state, err)
			}
		}
	}
}

// GetMetadata returns the machine's metadata.
func (c *Client) GetMetadata(ctx context.Context, app, id string) (map[string]string, error) {
	md := map[string]string{}
	err := c.do(ctx, request{
		op: opGetMetadata, id: id, method: http.MethodGet, path: machinePath(app, id) + "/metadata", out: &md,
	})
	if err != nil {
		return nil, fmt.Errorf("get metadata of machine %s: %w", id, err)
	}
	return md, nil
}

// SetMetadata sets one metadata key (without creating a machine version).
func (c *Client) SetMetadata(ctx context.Context, app, id, key, value string) error {
	err := c.do(ctx, request{
		op: opSetMetadata, id: id, method: http.MethodPost,
		path: machinePath(app, id) + "/metadata/" + url.PathEscape(key),
		body: map[string]string{"value": value},
	})
	if err != nil {
		return fmt.Errorf("set metadata %s of machine %s: %w", key, id, err)
	}
	return nil
}

// DeleteMetadata removes one metadata key.
func (c *Client) DeleteMetadata(ctx context.Context, app, id, key string) error {
	err := c.do(ctx, request{
		op: opDeleteMetadata, id: id, method: http.MethodDelete,
		path: machinePath(app, id) + "/metadata/" + url.PathEscape(key),
	})
	if err != nil {
		return fmt.Errorf("delete metadata %s of machine %s: %w", key, id, err)
	}
	return nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
