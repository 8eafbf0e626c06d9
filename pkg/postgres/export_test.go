package postgres

// HeartbeatUpdate is the statement that writes a batch of heartbeats, for
// the test that checks its plan.
const HeartbeatUpdate = heartbeatUpdate
