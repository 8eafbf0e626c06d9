-- +goose Up
-- The customer's own references: an external id (e.g. the ATS's), unique
-- per tenant when set, and free-form string metadata, on interviews and
-- candidates.
ALTER TABLE interviews.interview_sessions
	ADD COLUMN external_id text CHECK (char_length(external_id) BETWEEN 1 AND 200),
	ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object');
CREATE UNIQUE INDEX interview_sessions_external_id ON interviews.interview_sessions (tenant_id, external_id)
	WHERE external_id IS NOT NULL;

ALTER TABLE interviews.candidates
	ADD COLUMN external_id text CHECK (char_length(external_id) BETWEEN 1 AND 200),
	ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object');
CREATE UNIQUE INDEX candidates_external_id ON interviews.candidates (tenant_id, external_id)
	WHERE external_id IS NOT NULL;

-- +goose Down
DROP INDEX interviews.candidates_external_id;
ALTER TABLE interviews.candidates DROP COLUMN external_id, DROP COLUMN metadata;
DROP INDEX interviews.interview_sessions_external_id;
ALTER TABLE interviews.interview_sessions DROP COLUMN external_id, DROP COLUMN metadata;
