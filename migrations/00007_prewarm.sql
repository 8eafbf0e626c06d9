-- +goose Up
-- Scheduled interviews and their pre-warmed machines: when the interview
-- is planned, the region its machine runs in, when the pre-warmer claimed
-- it (a create in flight, before any machine is recorded), and when its
-- pre-warmed machine was recorded.
ALTER TABLE interviews.interview_sessions
	ADD COLUMN scheduled_at timestamptz,
	ADD COLUMN region text NOT NULL DEFAULT '' CHECK (char_length(region) <= 64),
	ADD COLUMN prewarm_claimed_at timestamptz,
	ADD COLUMN prewarmed_at timestamptz;
-- The pre-warmer's query: scheduled interviews with a planned time.
CREATE INDEX interview_sessions_prewarm ON interviews.interview_sessions (scheduled_at)
	WHERE status = 'scheduled' AND scheduled_at IS NOT NULL;

-- +goose Down
DROP INDEX interviews.interview_sessions_prewarm;
ALTER TABLE interviews.interview_sessions
	DROP COLUMN scheduled_at, DROP COLUMN region, DROP COLUMN prewarm_claimed_at, DROP COLUMN prewarmed_at;
