-- +goose Up
-- Tenant API keys for backends. Only the SHA-256 of a key is kept (keys
-- carry 256 random bits, so a plain hash suffices); prefix is its first
-- characters, shown in lists so people can tell their keys apart.
CREATE TABLE interviews.api_keys (
	id           uuid PRIMARY KEY,
	tenant_id    uuid NOT NULL REFERENCES interviews.tenants (id),
	name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
	role         text NOT NULL CHECK (role IN ('admin','recruiter','viewer')),
	key_hash     bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),
	prefix       text NOT NULL,
	created_at   timestamptz NOT NULL DEFAULT now(),
	last_used_at timestamptz,
	UNIQUE (tenant_id, id)
);
CREATE INDEX api_keys_tenant_created ON interviews.api_keys (tenant_id, created_at DESC, id DESC);

-- The answers of creating requests, by the tenant and the hash of the
-- client's Idempotency-Key, kept until expires_at. claim identifies the
-- attempt that runs the request; status is NULL while it runs. response
-- is the answer's body, encrypted with a key derived from the
-- Idempotency-Key itself, which is not stored.
CREATE TABLE interviews.idempotency_keys (
	tenant_id    uuid NOT NULL REFERENCES interviews.tenants (id),
	key_hash     bytea NOT NULL CHECK (length(key_hash) = 32),
	request_hash bytea NOT NULL CHECK (length(request_hash) = 32),
	claim        uuid NOT NULL,
	claimed_at   timestamptz NOT NULL DEFAULT now(),
	status       int CHECK (status BETWEEN 100 AND 599),
	content_type text,
	response     bytea,
	-- subject_ids: the ids the answer names (its "id" and "candidate_id"),
	-- so erasing a candidate or an interview also erases stored answers
	-- that hold their data.
	subject_ids  uuid[] NOT NULL DEFAULT '{}',
	expires_at   timestamptz NOT NULL,
	PRIMARY KEY (tenant_id, key_hash)
);
CREATE INDEX idempotency_keys_expires ON interviews.idempotency_keys (expires_at);
CREATE INDEX idempotency_keys_subjects ON interviews.idempotency_keys USING gin (subject_ids);

-- +goose StatementBegin
DO $$
DECLARE t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['api_keys','idempotency_keys']
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

-- +goose Down
DROP TABLE interviews.idempotency_keys;
DROP TABLE interviews.api_keys;
