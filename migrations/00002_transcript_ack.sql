-- +goose Up
-- The highest seq up to which an interview's transcript has no gap: what
-- the controller acknowledges to its VM. Kept on the session row so ingest
-- only reads the segments above it.
ALTER TABLE interviews.interview_sessions
	ADD COLUMN transcript_acked_seq bigint NOT NULL DEFAULT 0 CHECK (transcript_acked_seq >= 0);
-- Starts of one tenant serialise on its row (SELECT … FOR UPDATE), which
-- needs UPDATE.
GRANT UPDATE ON interviews.tenants TO interview_app;
CREATE INDEX candidates_tenant_created ON interviews.candidates (tenant_id, created_at DESC, id DESC);
CREATE INDEX positions_tenant_created ON interviews.positions (tenant_id, created_at DESC, id DESC);
CREATE INDEX interview_sessions_tenant_status_created ON interviews.interview_sessions (tenant_id, status, created_at DESC, id DESC);

-- +goose Down
REVOKE UPDATE ON interviews.tenants FROM interview_app;
DROP INDEX interviews.interview_sessions_tenant_status_created;
DROP INDEX interviews.positions_tenant_created;
DROP INDEX interviews.candidates_tenant_created;
ALTER TABLE interviews.interview_sessions DROP COLUMN transcript_acked_seq;
