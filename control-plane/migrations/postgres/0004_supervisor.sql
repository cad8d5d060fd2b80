-- The supervisor: listing incidents newest first, open ones first; reconciliation's lookups.
-- Append-only: never edit an applied migration; add a new one.
CREATE INDEX incidents_tenant_open ON incidents (tenant_id, resolved_at, id);
CREATE INDEX bots_desired_state ON bots (desired_state, state);
CREATE INDEX commands_finished ON commands (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX audit_log_at ON audit_log (at);
