-- The queue and the audit log are the tables written most: a command row per click, per bulk
-- bot, per supervisor order, and an audit entry per state-changing request. Each foreign key
-- on them was a row trigger per insert running `SELECT … FOR KEY SHARE` on the parent row:
-- measured on 10,000 inserted commands, the two keys of `commands` took 55% of the insert
-- (452–466 ms with them, 175–232 ms without), and every concurrent insert locked the one
-- tenant row, which Postgres records as a new multixact each time.
--
-- What the keys guarded is kept by the store, in the transactions that write these rows
-- (docs/ARCHITECTURE.md, "Commands without foreign keys"):
-- - a command is inserted by the transaction that read its agent: through its bot, locked
--   `FOR UPDATE` (the bot's own key on `agents` keeps the agent while the bot names it), or
--   the agent row itself, locked `FOR KEY SHARE` (an agent-wide command, a store-level enqueue);
-- - deleting an agent deletes its commands in the same transaction (`Store::delete_agent`),
--   after the agent row, so a command committed in between is deleted too;
-- - tenants are never deleted.
-- `log_lines` has had no foreign key from the start, for the same reason.
-- Append-only: never edit an applied migration; add a new one.
ALTER TABLE commands DROP CONSTRAINT commands_tenant_id_fkey;
ALTER TABLE commands DROP CONSTRAINT commands_agent_id_fkey;
ALTER TABLE audit_log DROP CONSTRAINT audit_log_tenant_id_fkey;
