-- +goose Up
-- Webhook endpoints of a tenant. secret is the whsec_ signing secret,
-- kept as is because every delivery is signed with it (it is not
-- encrypted at rest: anyone who can read this table can sign).
CREATE TABLE interviews.webhook_endpoints (
	id          uuid PRIMARY KEY,
	tenant_id   uuid NOT NULL REFERENCES interviews.tenants (id),
	url         text NOT NULL CHECK (length(url) BETWEEN 1 AND 2000),
	events      text[] NOT NULL CHECK (cardinality(events) > 0),
	description text NOT NULL DEFAULT '' CHECK (length(description) <= 500),
	secret      text NOT NULL,
	disabled    boolean NOT NULL DEFAULT false,
	created_at  timestamptz NOT NULL DEFAULT now(),
	UNIQUE (tenant_id, id)
);
CREATE INDEX webhook_endpoints_tenant_created ON interviews.webhook_endpoints (tenant_id, created_at DESC, id DESC);

-- One message to one endpoint. message_id is the webhook-id of every
-- attempt; body is the payload, sent byte for byte each time (erasing the
-- interview deletes the row). Deleting the endpoint deletes its
-- deliveries; their jobs then end without sending anything.
CREATE TABLE interviews.webhook_deliveries (
	id               uuid PRIMARY KEY,
	tenant_id        uuid NOT NULL,
	endpoint_id      uuid NOT NULL,
	interview_id     uuid,
	message_id       text NOT NULL UNIQUE CHECK (message_id LIKE 'msg\_%'),
	event_type       text NOT NULL,
	body             bytea NOT NULL,
	status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending','succeeded','failed')),
	attempts         int NOT NULL DEFAULT 0,
	last_status_code int,
	last_error       text,
	last_attempt_at  timestamptz,
	next_attempt_at  timestamptz,
	created_at       timestamptz NOT NULL DEFAULT now(),
	FOREIGN KEY (tenant_id, endpoint_id) REFERENCES interviews.webhook_endpoints (tenant_id, id) ON DELETE CASCADE,
	FOREIGN KEY (tenant_id, interview_id) REFERENCES interviews.interview_sessions (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_endpoint_created ON interviews.webhook_deliveries (endpoint_id, created_at DESC, id DESC);
CREATE INDEX webhook_deliveries_interview ON interviews.webhook_deliveries (interview_id);

-- +goose StatementBegin
DO $$
DECLARE t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['webhook_endpoints','webhook_deliveries']
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
DROP TABLE interviews.webhook_deliveries;
DROP TABLE interviews.webhook_endpoints;
