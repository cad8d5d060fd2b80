-- Identity: login sessions with rotating refresh tokens, and agent token rotation.
-- Append-only: never edit an applied migration; add a new one.

-- A session is one login; its refresh tokens form a family. Presenting a refresh token that was
-- already rotated away revokes the whole family (it was stolen or replayed).
CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    revoked_at      BIGINT,
    revoked_reason  TEXT,
    source_ip       TEXT,
    user_agent      TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE refresh_tokens (
    token_hash  TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- A rotated agent token waits here until the agent first uses it; until then the old one works,
-- so a lost rotation response cannot lock an agent out.
ALTER TABLE agents ADD COLUMN pending_token_hash TEXT;
CREATE UNIQUE INDEX agents_pending_token ON agents (pending_token_hash);

CREATE INDEX api_tokens_user ON api_tokens (user_id);
CREATE INDEX pairing_codes_tenant ON pairing_codes (tenant_id, created_at);
CREATE INDEX audit_log_tenant_action ON audit_log (tenant_id, action, id);
