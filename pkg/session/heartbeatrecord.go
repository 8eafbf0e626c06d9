package session

import "time"

// HeartbeatRecord is one VM's latest heartbeat as the controller replica
// that received it holds it until it writes its next batch.
type HeartbeatRecord struct {
	ID    string
	At    time.Time
	Stats VMStats
}

// HeartbeatState is what a heartbeat batch reads back of a live session:
// what the replica that holds the VM's heartbeats answers them from.
type HeartbeatState struct {
	ID        string
	Status    State
	EndReason *EndReason
	TokenHash []byte
}
