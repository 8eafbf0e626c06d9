-- +goose Up
-- When the interview entered its current state: the reconciler bounds how
-- long an interview may stay provisioning or ending.
ALTER TABLE interviews.interview_sessions ADD COLUMN state_changed_at timestamptz;
UPDATE interviews.interview_sessions SET state_changed_at = updated_at;
ALTER TABLE interviews.interview_sessions ALTER COLUMN state_changed_at SET DEFAULT now();
ALTER TABLE interviews.interview_sessions ALTER COLUMN state_changed_at SET NOT NULL;

-- +goose Down
ALTER TABLE interviews.interview_sessions DROP COLUMN state_changed_at;
