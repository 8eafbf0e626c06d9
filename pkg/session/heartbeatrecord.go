package session

import "time"

// HeartbeatRecord is one VM's latest heartbeat as the controller replica
// that received it holds it until it writes its next batch.
type HeartbeatRecord struct {
	ID    string
	At    time.Time
	Stats VMStats
}
