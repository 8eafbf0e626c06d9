-- +goose Up
-- What the VM said in its last heartbeat, so any replica can export fleet
-- numbers: the last seq it produced, segments it still holds, its retries.
ALTER TABLE interviews.interview_sessions
	ADD COLUMN vm_last_seq bigint NOT NULL DEFAULT 0,
	ADD COLUMN vm_buffered_segments int NOT NULL DEFAULT 0,
	ADD COLUMN vm_retries bigint NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE interviews.interview_sessions
	DROP COLUMN vm_last_seq, DROP COLUMN vm_buffered_segments, DROP COLUMN vm_retries;
