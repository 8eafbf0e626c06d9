-- +goose Up
-- The control plane keeps its tables in their own schema so it can share a
-- database with an existing application without touching "public".
CREATE SCHEMA IF NOT EXISTS interviews;

-- interview_app is the role every tenant-scoped transaction switches to
-- (SET LOCAL ROLE). It has no BYPASSRLS, so row-level security holds
-- whichever role DATABASE_URL logs in as. Roles are cluster-wide: create it
-- only once.
-- +goose StatementBegin
DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'interview_app') THEN
		CREATE ROLE interview_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
	END IF;
END
$$;
-- +goose StatementEnd
GRANT interview_app TO CURRENT_USER;
GRANT USAGE ON SCHEMA interviews TO interview_app;

-- current_tenant() is the tenant of the running transaction, or NULL.
-- +goose StatementBegin
CREATE FUNCTION interviews.current_tenant() RETURNS uuid
LANGUAGE sql STABLE AS $$
	SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid
$$;
-- +goose StatementEnd

-- system_scope() is true only in transactions of the reconciler and the
-- internal API, which address sessions across tenants by id.
-- +goose StatementBegin
CREATE FUNCTION interviews.system_scope() RETURNS boolean
LANGUAGE sql STABLE AS $$
	SELECT coalesce(current_setting('app.system_scope', true), '') = 'on'
$$;
-- +goose StatementEnd

CREATE TABLE interviews.tenants (
	id         uuid PRIMARY KEY,
	created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE interviews.companies (
	id         uuid PRIMARY KEY,
	tenant_id  uuid NOT NULL REFERENCES interviews.tenants (id),
	name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
	created_at timestamptz NOT NULL DEFAULT now(),
	UNIQUE (tenant_id, id)
);

CREATE TABLE interviews.candidates (
	id         uuid PRIMARY KEY,
	tenant_id  uuid NOT NULL REFERENCES interviews.tenants (id),
	full_name  text NOT NULL CHECK (length(full_name) BETWEEN 1 AND 200),
	email      text NOT NULL CHECK (length(email) BETWEEN 3 AND 320),
	created_at timestamptz NOT NULL DEFAULT now(),
	UNIQUE (tenant_id, id)
);

CREATE TABLE interviews.positions (
	id          uuid PRIMARY KEY,
	tenant_id   uuid NOT NULL REFERENCES interviews.tenants (id),
	title       text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
	description text NOT NULL DEFAULT '',
	created_at  timestamptz NOT NULL DEFAULT now(),
	UNIQUE (tenant_id, id)
);

-- Weights are relative: 0.6/0.4 and 3/2 mean the same.
CREATE TABLE interviews.position_competencies (
	position_id uuid NOT NULL,
	tenant_id   uuid NOT NULL,
	ordinal     int NOT NULL CHECK (ordinal >= 0),
	name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
	weight      double precision NOT NULL CHECK (weight > 0 AND weight < 'Infinity'),
	description text NOT NULL DEFAULT '',
	PRIMARY KEY (position_id, ordinal),
	FOREIGN KEY (tenant_id, position_id) REFERENCES interviews.positions (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE interviews.interview_sessions (
	id               uuid PRIMARY KEY,
	tenant_id        uuid NOT NULL,
	candidate_id     uuid NOT NULL,
	position_id      uuid NOT NULL,
	company_id       uuid,
	status           text NOT NULL DEFAULT 'scheduled' CHECK (status IN
		('scheduled','provisioning','ready','in_progress','ending','completed','failed','cancelled')),
	end_reason       text CHECK (end_reason IN ('completed','ended_by_user','max_duration','idle_timeout',
		'cancelled','provision_failed','machine_lost','heartbeat_timeout')),
	architecture     text NOT NULL DEFAULT 'hybrid',
	max_duration_s   int NOT NULL CHECK (max_duration_s > 0),
	token_hash       bytea,
	machine_provider text,
	machine_id       text,
	machine_name     text,
	machine_region   text,
	machine_state    text,
	machine_addr     text,
	last_seq_reported bigint,
	created_at       timestamptz NOT NULL DEFAULT now(),
	updated_at       timestamptz NOT NULL DEFAULT now(),
	started_at       timestamptz,
	ready_at         timestamptz,
	ended_at         timestamptz,
	last_heartbeat_at timestamptz,
	UNIQUE (tenant_id, id),
	FOREIGN KEY (tenant_id, candidate_id) REFERENCES interviews.candidates (tenant_id, id),
	FOREIGN KEY (tenant_id, position_id) REFERENCES interviews.positions (tenant_id, id),
	FOREIGN KEY (tenant_id, company_id) REFERENCES interviews.companies (tenant_id, id)
);
CREATE INDEX interview_sessions_tenant_created ON interviews.interview_sessions (tenant_id, created_at DESC, id DESC);
CREATE INDEX interview_sessions_live ON interviews.interview_sessions (status)
	WHERE status IN ('provisioning','ready','in_progress','ending');

CREATE TABLE interviews.session_events (
	id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	session_id  uuid NOT NULL,
	tenant_id   uuid NOT NULL,
	at          timestamptz NOT NULL DEFAULT clock_timestamp(),
	from_status text NOT NULL,
	to_status   text NOT NULL,
	reason      text NOT NULL DEFAULT '',
	actor       text NOT NULL,
	FOREIGN KEY (tenant_id, session_id) REFERENCES interviews.interview_sessions (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX session_events_session ON interviews.session_events (session_id, id);

CREATE TABLE interviews.transcript_segments (
	session_id uuid NOT NULL,
	seq        bigint NOT NULL CHECK (seq >= 1),
	tenant_id  uuid NOT NULL,
	speaker    text NOT NULL CHECK (speaker IN ('candidate','interviewer')),
	text       text NOT NULL CHECK (length(text) <= 20000),
	item_id    text NOT NULL DEFAULT '',
	failed     boolean NOT NULL DEFAULT false,
	created_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (session_id, seq),
	FOREIGN KEY (tenant_id, session_id) REFERENCES interviews.interview_sessions (tenant_id, id) ON DELETE CASCADE
);

-- Row-level security: a row is visible when its tenant is the
-- transaction's tenant, or in the explicit system scope. FORCE makes the
-- policies hold for the tables' owner too.
-- +goose StatementBegin
DO $$
DECLARE t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['companies','candidates','positions','position_competencies',
		'interview_sessions','session_events','transcript_segments']
	LOOP
		EXECUTE format('ALTER TABLE interviews.%I ENABLE ROW LEVEL SECURITY', t);
		EXECUTE format('ALTER TABLE interviews.%I FORCE ROW LEVEL SECURITY', t);
		EXECUTE format('CREATE POLICY tenant_isolation ON interviews.%I USING '
			'(tenant_id = interviews.current_tenant() OR interviews.system_scope()) WITH CHECK '
			'(tenant_id = interviews.current_tenant() OR interviews.system_scope())', t);
		EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON interviews.%I TO interview_app', t);
	END LOOP;
END
$$;
-- +goose StatementEnd
ALTER TABLE interviews.tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE interviews.tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON interviews.tenants
	USING (id = interviews.current_tenant() OR interviews.system_scope())
	WITH CHECK (id = interviews.current_tenant() OR interviews.system_scope());
GRANT SELECT, INSERT ON interviews.tenants TO interview_app;
GRANT EXECUTE ON FUNCTION interviews.current_tenant(), interviews.system_scope() TO interview_app;

-- +goose Down
DROP SCHEMA interviews CASCADE;
