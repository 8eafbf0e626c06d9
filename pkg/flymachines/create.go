package flymachines

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// maxLookupDelay caps the pause between recovery lookups.
const maxLookupDelay = 5 * time.Second

// Create creates a machine and returns Fly's answer (state "created"; it
// boots afterwards unless SkipLaunch).
//
// A create is never resent once it may have reached Fly. When the outcome
// is unknown — the attempt timed out, the connection broke after the
// request was written, or Fly answered 408 or 5xx — Create pauses, lists
// the app's machines by req.Name and the req.RecoverKey metadata, and
// returns the machine it finds. Only when repeated lookups find nothing is
// the create sent again (at most Config.CreateAttempts times). A "name
// taken" answer is resolved by the same lookup. Without a Name or a
// RecoverKey an unknown outcome is returned as an error: the machine may
// or may not exist.
func (c *Client) Create(ctx context.Context, app string, req CreateRequest) (*Machine, error) {
	label := cmp.Or(req.Name, "(unnamed)")
	if req.Config.Image == "" {
		return nil, fmt.Errorf("create machine %s: config.image is required", label)
	}
	if req.RecoverKey != "" && req.Config.Metadata[req.RecoverKey] == "" {
		return nil, fmt.Errorf("create machine %s: recover key %q has no value in config.metadata", label, req.RecoverKey)
	}
	recoverable := req.Name != "" || req.RecoverKey != ""

	for attempt := 1; ; attempt++ {
		m, err := c.createOnce(ctx, app, req)
		if err == nil {
			return m, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("create machine %s (it may exist; look it up by name or metadata): %w", label, err)
		}
		switch {
		case errors.Is(err, ErrNameTaken) && recoverable:
			c.log.Info("machine name taken; looking the machine up", "name", req.Name, "error", err)
			found, lerr := c.recoverCreate(ctx, app, req, c.lookups+2)
			if found != nil {
				return found, nil
			}
			return nil, fmt.Errorf("create machine %s: %w", label, errors.Join(err, lerr))

		case ambiguous(ctx, err):
			if !recoverable {
				return nil, fmt.Errorf("create machine %s: outcome unknown and nothing to look it up by: %w", label, err)
			}
			c.log.Warn("create outcome unknown; looking the machine up before any retry",
				"name", req.Name, "attempt", attempt, "error", err)
			found, lerr := c.recoverCreate(ctx, app, req, c.lookups)
			if found != nil {
				return found, nil
			}
			if lerr != nil {
				// We cannot tell whether it exists: creating again could
				// make a second machine.
				return nil, fmt.Errorf("create machine %s: outcome unknown, lookup failed: %w", label, errors.Join(err, lerr))
			}
			if attempt >= c.createAttempts {
				return nil, fmt.Errorf("create machine %s: absent after %d attempts: %w", label, attempt, err)
			}
			c.log.Info("machine absent after an unknown create outcome; creating again", "name", req.Name, "attempt", attempt+1)

		default:
			return nil, fmt.Errorf("create machine %s: %w", label, err)
		}
	}
}

func (c *Client) createOnce(ctx context.Context, app string, req CreateRequest) (*Machine, error) {
	var m Machine
	err := c.do(ctx, request{
		op: opCreate, id: "app:" + app, method: http.MethodPost, path: machinesPath(app),
		body: req, out: &m, policy: retryUnsent, low: req.Background,
	})
	if err != nil {
		return nil, err
	}
	return &m, nil
}

// ambiguous reports whether a failed create may nevertheless have created
// the machine.
func ambiguous(ctx context.Context, err error) bool {
	var fe *Error
	if errors.As(err, &fe) {
		return fe.StatusCode == http.StatusRequestTimeout || fe.StatusCode >= 500
	}
	var rl *rateLimitError
	if errors.As(err, &rl) {
		return false // never sent
	}
	if ctx.Err() != nil {
		return false
	}
	// A transport error: unless the connection was never made, the request
	// may have been processed (including an attempt that timed out).
	return !notSent(err)
}

// recoverCreate looks for the machine req would have created, lookups
// times with a growing pause. It returns the machine, or nil and the last
// lookup error (nil when every lookup answered and found nothing).
func (c *Client) recoverCreate(ctx context.Context, app string, req CreateRequest, lookups int) (*Machine, error) {
	delay := c.lookupDelay
	var lastErr error
	for i := 0; i < lookups; i++ {
		if err := sleep(ctx, delay); err != nil {
			c.metrics.recoveries.WithLabelValues("error").Inc()
			return nil, err
		}
		delay = min(2*delay, maxLookupDelay)
		m, err := c.findCreated(ctx, app, req)
		if err != nil {
			lastErr = err
			continue
		}
		lastErr = nil
		if m != nil {
			c.metrics.recoveries.WithLabelValues("found").Inc()
			c.log.Info("found machine of a create whose outcome was unknown",
				"machine_id", m.ID, "name", m.Name, "lookup", i+1)
			return m, nil
		}
	}
	if lastErr != nil {
		c.metrics.recoveries.WithLabelValues("error").Inc()
		return nil, lastErr
	}
	c.metrics.recoveries.WithLabelValues("absent").Inc()
	return nil, nil
}

// findCreated lists the app's live machines matching req's name and
// recovery metadata. With duplicates it returns the oldest and logs them.
func (c *Client) findCreated(ctx context.Context, app string, req CreateRequest) (*Machine, error) {
	var opts ListOptions
	if req.RecoverKey != "" {
		opts.Metadata = map[string]string{req.RecoverKey: req.Config.Metadata[req.RecoverKey]}
	}
	ms, err := c.List(ctx, app, opts)
	if err != nil {
		return nil, err
	}
	var found []Machine
	for _, m := range ms {
		if m.Gone() {
			continue
		}
		if req.Name != "" && m.Name != req.Name {
			continue
		}
		if req.RecoverKey != "" && m.Metadata()[req.RecoverKey] != req.Config.Metadata[req.RecoverKey] {
			continue
		}
		found = append(found, m)
	}
	if len(found) == 0 {
		return nil, nil
	}
	if len(found) > 1 {
		ids := make([]string, len(found))
		for i, m := range found {
			ids[i] = m.ID
		}
		c.log.LogAttrs(ctx, slog.LevelError, "several machines match one create; returning the oldest",
			slog.String("name", req.Name), slog.Any("machine_ids", ids))
	}
	return &found[0], nil
}
