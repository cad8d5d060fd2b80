-- botmox schema v1. Times are milliseconds since the Unix epoch (BIGINT) and JSON is TEXT, on
-- both backends, so that the store's SQL is the same text for SQLite and Postgres.
-- Append-only: never edit an applied migration; add a new one.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    username       TEXT NOT NULL UNIQUE,
    email          TEXT,
    password_hash  TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    disabled_at    BIGINT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX users_tenant ON users (tenant_id);

CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    scopes        TEXT NOT NULL,
    expires_at    BIGINT,
    last_used_at  BIGINT,
    revoked_at    BIGINT,
    created_at    BIGINT NOT NULL
);
CREATE INDEX api_tokens_tenant ON api_tokens (tenant_id);

CREATE TABLE pairing_codes (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    code_hash   TEXT NOT NULL UNIQUE,
    name        TEXT,
    labels      TEXT NOT NULL,
    created_by  TEXT,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    agent_id    TEXT,
    created_at  BIGINT NOT NULL
);

CREATE TABLE agents (
    id                 TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    hostname           TEXT NOT NULL,
    os                 TEXT NOT NULL,
    arch               TEXT NOT NULL,
    version            TEXT NOT NULL,
    labels             TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('pending', 'online', 'offline', 'draining', 'revoked')),
    token_hash         TEXT UNIQUE,
    last_seen_at       BIGINT,
    connected_replica  TEXT,
    metrics            TEXT,
    revoked_at         BIGINT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);
CREATE INDEX agents_tenant_status ON agents (tenant_id, status);

CREATE TABLE bots (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    agent_id          TEXT NOT NULL REFERENCES agents(id),
    name              TEXT NOT NULL,
    exec              TEXT NOT NULL,
    restart           TEXT NOT NULL,
    stop              TEXT NOT NULL,
    tags              TEXT NOT NULL,
    desired_state     TEXT NOT NULL CHECK (desired_state IN ('running', 'stopped')),
    state             TEXT NOT NULL CHECK (state IN ('pending', 'starting', 'running', 'stopping', 'stopped',
                                                     'exited', 'crashed', 'backoff', 'failed', 'unknown')),
    pid               BIGINT,
    started_at        BIGINT,
    last_exit_code    BIGINT,
    last_exit_signal  BIGINT,
    restart_count     BIGINT NOT NULL DEFAULT 0,
    last_error        TEXT,
    definition_hash   TEXT NOT NULL,
    version           BIGINT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE INDEX bots_tenant_state_name ON bots (tenant_id, state, name);
CREATE INDEX bots_tenant_agent_name ON bots (tenant_id, agent_id, name);

-- One row per (bot, tag), so that the tag filter is an index lookup.
CREATE TABLE bot_tags (
    bot_id     TEXT NOT NULL REFERENCES bots(id) ON DELETE CASCADE,
    tenant_id  TEXT NOT NULL,
    tag        TEXT NOT NULL,
    PRIMARY KEY (bot_id, tag)
);
CREATE INDEX bot_tags_tenant_tag ON bot_tags (tenant_id, tag, bot_id);

CREATE TABLE commands (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    agent_id          TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    bot_id            TEXT,
    kind              TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('queued', 'dispatched', 'running', 'succeeded', 'failed',
                                                      'cancelled', 'expired', 'timed_out', 'dead_lettered')),
    payload           TEXT NOT NULL,
    idempotency_key   TEXT,
    created_by_kind   TEXT NOT NULL,
    created_by_id     TEXT,
    attempt           BIGINT NOT NULL DEFAULT 0,
    max_attempts      BIGINT NOT NULL,
    lease_ms          BIGINT NOT NULL,
    run_timeout_ms    BIGINT NOT NULL,
    lease_expires_at  BIGINT,
    expires_at        BIGINT NOT NULL,
    created_at        BIGINT NOT NULL,
    dispatched_at     BIGINT,
    acked_at          BIGINT,
    finished_at       BIGINT,
    updated_at        BIGINT NOT NULL,
    result            TEXT,
    error             TEXT
);
CREATE UNIQUE INDEX commands_idempotency ON commands (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- The claim path: the oldest queued command of one agent.
CREATE INDEX commands_agent_queued ON commands (agent_id, id) WHERE status = 'queued';
-- Hygiene: TTLs of queued commands, leases and deadlines of in-flight ones.
CREATE INDEX commands_queued_expiry ON commands (expires_at) WHERE status = 'queued';
CREATE INDEX commands_inflight_lease ON commands (lease_expires_at) WHERE status IN ('dispatched', 'running');
CREATE INDEX commands_tenant_id ON commands (tenant_id, id);
CREATE INDEX commands_bot ON commands (bot_id, id);

CREATE TABLE incidents (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kind             TEXT NOT NULL,
    severity         TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    subject          TEXT NOT NULL,
    message          TEXT NOT NULL,
    data             TEXT NOT NULL,
    count            BIGINT NOT NULL DEFAULT 1,
    opened_at        BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    resolved_at      BIGINT,
    acknowledged_at  BIGINT,
    acknowledged_by  TEXT
);
-- At most one open incident per subject and kind.
CREATE UNIQUE INDEX incidents_open ON incidents (tenant_id, kind, subject) WHERE resolved_at IS NULL;
CREATE INDEX incidents_tenant_id ON incidents (tenant_id, id);

CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    actor_kind  TEXT NOT NULL,
    actor_id    TEXT,
    action      TEXT NOT NULL,
    target      TEXT,
    request_id  TEXT,
    source_ip   TEXT,
    outcome     TEXT NOT NULL CHECK (outcome IN ('success', 'failure')),
    data        TEXT NOT NULL,
    at          BIGINT NOT NULL
);
CREATE INDEX audit_log_tenant_id ON audit_log (tenant_id, id);

CREATE TABLE secrets (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    nonce       BYTEA NOT NULL,
    ciphertext  BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

-- `seq` is assigned by the agent and strictly increasing per bot, so a re-sent batch is a no-op.
CREATE TABLE log_lines (
    bot_id     TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    tenant_id  TEXT NOT NULL,
    stream     TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    at         BIGINT NOT NULL,
    text       TEXT NOT NULL,
    PRIMARY KEY (bot_id, seq)
);
CREATE INDEX log_lines_at ON log_lines (at);

-- Server-wide values shared by every replica (e.g. the session signing key).
CREATE TABLE server_kv (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
