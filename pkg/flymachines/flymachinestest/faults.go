package flymachinestest

import (
	"net"
	"net/http"
	"time"
)

// Fault changes how the fake answers a call. Queue faults with FailNext.
type Fault struct {
	// Status, when set, is the answer: instead of handling the call, or
	// after handling it with AfterWork.
	Status int
	// Message is the error text ("error" field); a default fits Status.
	Message string
	// FlyStatus is Fly's error code ("status" field), e.g.
	// "insufficient_capacity".
	FlyStatus string
	// RetryAfter sets a Retry-After header (rounded up to whole seconds).
	RetryAfter time.Duration
	// AfterWork handles the call first (a create creates the machine) and
	// then answers Status: the client cannot know it succeeded.
	AfterWork bool
	// Drop handles the call, then resets the connection without answering:
	// the work is done but the client sees a network error.
	Drop bool
	// Hang handles the call, then holds the answer until the client gives
	// up (or the server closes), and resets the connection: the client
	// sees a timeout.
	Hang bool
	// Delay is added before the call is handled.
	Delay time.Duration
}

// CapacityFault is Fly's answer when no host in the region can take the
// machine.
func CapacityFault() Fault {
	return Fault{
		Status:    http.StatusPreconditionFailed,
		FlyStatus: "insufficient_capacity",
		Message:   "insufficient resources to create new machine: no capacity in region",
	}
}

type queuedFault struct {
	left  int
	fault Fault
}

// FailNext makes the next n calls of op (not counting calls refused for
// authentication or rate limits) behave as f. Faults queue in order.
func (s *Server) FailNext(op Op, n int, f Fault) {
	if n <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[op] = append(s.faults[op], &queuedFault{left: n, fault: f})
}

func (s *Server) takeFault(op Op) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.faults[op]
	if len(q) == 0 {
		return nil
	}
	f := q[0].fault
	q[0].left--
	if q[0].left == 0 {
		s.faults[op] = q[1:]
	}
	return &f
}

// reset closes the connection under w abruptly (RST), without an answer.
func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("flymachinestest: response writer cannot be hijacked")
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}
