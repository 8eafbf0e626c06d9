-- +goose Up
-- One analysis per interview (the latest run): pending while its job is
-- queued, running while a worker holds it, then ready, failed or
-- not_applicable. A re-run resets the same row, so replicas and retries
-- never produce a second one.
CREATE TABLE interviews.insights (
	interview_id     uuid PRIMARY KEY,
	tenant_id        uuid NOT NULL,
	status           text NOT NULL CHECK (status IN ('pending','running','ready','failed','not_applicable')),
	model            text NOT NULL DEFAULT '',
	simulated        boolean NOT NULL DEFAULT false,
	overall_score    double precision,
	recommendation   text CHECK (recommendation IN ('strong_yes','yes','no','strong_no')),
	summary          text NOT NULL DEFAULT '',
	competencies     jsonb NOT NULL DEFAULT '[]',
	strengths        jsonb NOT NULL DEFAULT '[]',
	concerns         jsonb NOT NULL DEFAULT '[]',
	input_tokens     bigint NOT NULL DEFAULT 0,
	output_tokens    bigint NOT NULL DEFAULT 0,
	dropped_evidence int NOT NULL DEFAULT 0,
	omitted_segments int NOT NULL DEFAULT 0,
	error            text NOT NULL DEFAULT '',
	attempts         int NOT NULL DEFAULT 0,
	created_at       timestamptz NOT NULL DEFAULT now(),
	completed_at     timestamptz,
	FOREIGN KEY (tenant_id, interview_id) REFERENCES interviews.interview_sessions (tenant_id, id) ON DELETE CASCADE
);
ALTER TABLE interviews.insights ENABLE ROW LEVEL SECURITY;
ALTER TABLE interviews.insights FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON interviews.insights
	USING (tenant_id = interviews.current_tenant() OR interviews.system_scope())
	WITH CHECK (tenant_id = interviews.current_tenant() OR interviews.system_scope());
GRANT SELECT, INSERT, UPDATE, DELETE ON interviews.insights TO interview_app;

-- +goose Down
DROP TABLE interviews.insights;
