package provision

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/interviewvm/controlplane/pkg/session"
)

// Outcomes of a pre-warmed machine (the outcome label of
// prewarm_outcomes_total).
const (
	PrewarmUsed      = "used"
	PrewarmExpired   = "expired"
	PrewarmCancelled = "cancelled"
	PrewarmFailed    = "failed"
)

// hasMachine reports whether the interview has a recorded machine that was
// not destroyed.
func hasMachine(iv *session.Interview) bool {
	return iv.Machine != nil && iv.Machine.ID != "" && iv.Machine.State != session.MachineDestroyed
}

// NewToken returns a new random session token and its SHA-256, the hash
// being what the interview stores.
func (s *Service) NewToken() (string, []byte) { return newToken() }

// MachineSpec is the machine of interview iv as a start creates it: its
// name, region, metadata, and an environment carrying token. A pre-warm
// creates exactly this machine, without booting it.
func (s *Service) MachineSpec(iv session.Interview, token string) session.MachineSpec {
	region := iv.Region
	if region == "" {
		region = s.cfg.Region
	}
	return session.MachineSpec{
		Name: session.MachineName(iv.Architecture, iv.TenantID, iv.ID), SessionID: iv.ID, TenantID: iv.TenantID,
		Arch: iv.Architecture, Region: region,
		Env: map[string]string{
			session.EnvSessionID:     iv.ID,
			session.EnvSessionToken:  token,
			session.EnvControllerURL: s.cfg.ControllerURL,
		},
		Metadata: map[string]string{
			session.MetaSessionID: iv.ID,
			session.MetaTenantID:  iv.TenantID,
			session.MetaArch:      iv.Architecture,
			session.MetaManagedBy: session.ManagedByValue,
		},
	}
}

// maxConfigEnv bounds the configuration carried in a machine's
// environment; a larger one (a very long position description) is left
// out and the VM fetches it.
const maxConfigEnv = 32 << 10

// withConfig adds the VM's configuration to the environment of spec, the
// machine of started interview iv: its VM reports ready without asking
// for it first. Without it (it cannot be read, or it is too large) the VM
// fetches it at boot, as a pre-warmed one does. pos is the interview's
// position when the start read it (else it is read here).
func (s *Service) withConfig(ctx context.Context, iv session.Interview, pos *session.PositionRecord, spec *session.MachineSpec) {
	cfg, err := s.vmConfig(ctx, iv, pos)
	if err != nil {
		s.log(iv).Warn("VM configuration not given with the machine; the VM will fetch it", "error", err)
		return
	}
	b, err := json.Marshal(cfg)
	if err != nil || len(b) > maxConfigEnv {
		s.log(iv).Info("VM configuration not given with the machine; the VM will fetch it", "bytes", len(b), "error", err)
		return
	}
	spec.Env[session.EnvSessionConfig] = string(b)
}

// Changed wakes whoever waits on interview id in this process (a start
// waiting for a pre-warm create to be recorded).
func (s *Service) Changed(id string) { s.changed(id) }

// PrewarmEnded accounts for the end of iv's pre-warm: its outcome and the
// time its machine spent pre-warmed (from PrewarmedAt, when recorded).
func (s *Service) PrewarmEnded(iv session.Interview, outcome string) {
	s.metrics.prewarmOutcomes.WithLabelValues(outcome).Inc()
	if iv.PrewarmedAt != nil {
		s.metrics.prewarmSeconds.Add(max(s.now().Sub(*iv.PrewarmedAt).Seconds(), 0))
	}
}

// awaitPrewarmed waits until the pre-warmed machine of provisioning
// interview id is recorded and returns it, and whether it was made for
// another region than the interview's (stale); nil when the pre-warm was
// given up (its claim cleared without a machine), the interview left
// provisioning, or ctx ended. A pre-warmer on any replica records it: the
// row is polled as well as watched.
func (s *Service) awaitPrewarmed(ctx context.Context, id string) (*session.Machine, bool) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		w := s.watch(id)
		cur, err := s.store.Interview(ctx, session.SystemScope(), id)
		if err == nil {
			if cur.Status != session.StateProvisioning {
				return nil, false
			}
			if hasMachine(&cur) {
				m := *cur.Machine
				return &m, cur.PrewarmStale()
			}
			if cur.PrewarmClaimedAt == nil {
				return nil, false
			}
		}
		select {
		case <-w.done:
		case <-tick.C:
		case <-ctx.Done():
			return nil, false
		}
	}
}

// renewToken gives a provisioning interview whose pre-warm was given up a
// new token for its cold create.
func (s *Service) renewToken(ctx context.Context, id string) (string, error) {
	token, hash := newToken()
	_, err := s.store.UpdateInterview(ctx, session.SystemScope(), id, func(cur *session.Interview) ([]session.Event, error) {
		if cur.Status != session.StateProvisioning || cur.PrewarmClaimedAt != nil || hasMachine(cur) {
			return nil, session.Errorf(session.ECONFLICT, "interview is %s with a pre-warm", cur.Status)
		}
		cur.TokenHash = hash
		cur.PrewarmedAt = nil
		cur.PrewarmRegion = ""
		return nil, nil
	})
	return token, err
}

// dropStalePrewarm destroys machine mid, pre-warmed for provisioning
// interview id's former region, and forgets it, so the start creates the
// machine cold in the interview's region. Both steps are idempotent: a
// launcher resumed after a crash in between repeats them.
func (s *Service) dropStalePrewarm(ctx context.Context, id, mid string) error {
	if err := s.machines.Destroy(ctx, mid); err != nil && !errors.Is(err, session.ErrMachineNotFound) {
		return fmt.Errorf("destroy machine %s pre-warmed in the former region: %w", mid, err)
	}
	cur, err := s.store.UpdateInterview(ctx, session.SystemScope(), id, func(cur *session.Interview) ([]session.Event, error) {
		if cur.Status != session.StateProvisioning || cur.Machine == nil || cur.Machine.ID != mid {
			return nil, errNothingToDo
		}
		cur.Machine = nil
		return nil, nil
	})
	if errors.Is(err, errNothingToDo) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("record machine %s destroyed: %w", mid, err)
	}
	s.PrewarmEnded(cur, PrewarmCancelled)
	return nil
}
