-- The command path as one transaction (issue 10): per-bot ordering and bulk batches.
-- Append-only: never edit an applied migration; add a new one.

-- A bot's command sequence: every start/stop/restart takes the next number, in the same
-- transaction as the desired state it sets; agents refuse a command older than one they ran.
ALTER TABLE bots ADD COLUMN command_seq BIGINT NOT NULL DEFAULT 0;

-- The bot's sequence number a command carries, and the bulk action that queued it.
ALTER TABLE commands ADD COLUMN bot_seq BIGINT;
ALTER TABLE commands ADD COLUMN batch_id TEXT;
CREATE INDEX commands_batch ON commands (tenant_id, batch_id, id) WHERE batch_id IS NOT NULL;
-- Superseding: the queued commands of one bot.
CREATE INDEX commands_bot_queued ON commands (bot_id, id) WHERE status = 'queued';

-- One row per bulk action (`POST /bots/actions`): what it matched, queued and skipped, and
-- its Idempotency-Key, so a repeat returns the same batch and changes nothing.
CREATE TABLE command_batches (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    idempotency_key  TEXT,
    action           TEXT NOT NULL,
    matched          BIGINT NOT NULL,
    accepted         BIGINT NOT NULL,
    skipped          TEXT NOT NULL,
    created_by_kind  TEXT NOT NULL,
    created_by_id    TEXT,
    created_at       BIGINT NOT NULL
);
CREATE UNIQUE INDEX command_batches_idempotency ON command_batches (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX command_batches_created ON command_batches (created_at);
