package postgres

import "context"

// HeartbeatUpdate is the statement that writes a batch of heartbeats, for
// the test that checks its plan.
const HeartbeatUpdate = heartbeatUpdate

// IngestSetting reads a server setting on a connection of the transcript
// ingest's own pool (for tests).
func IngestSetting(ctx context.Context, db *DB, name string) (string, error) {
	db.ingestOnce.Do(db.startIngest)
	var v string
	err := db.ingest.pool.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v)
	return v, err
}
