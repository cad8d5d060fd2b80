-- The agent protocol: when the observed state of a bot was reported (older reports lose).
-- Append-only: never edit an applied migration; add a new one.
ALTER TABLE bots ADD COLUMN state_at BIGINT;
CREATE INDEX agents_status_seen ON agents (status, last_seen_at);
CREATE INDEX log_lines_tenant_bot ON log_lines (tenant_id, bot_id, seq);
