-- Bots by (tenant, agent, state), kept by triggers, so that the counts behind `GET /bots`, the
-- dashboard and `/metrics` read a few rows instead of counting a registry of 100,000 bots on
-- every request. Rows are never removed (a count may go back to 0); nothing else writes here.
-- No foreign keys: a trigger running inside a cascade must never trip over one.
-- Append-only: never edit an applied migration; add a new one.
CREATE TABLE bot_state_counts (
    tenant_id  TEXT NOT NULL,
    agent_id   TEXT NOT NULL,
    state      TEXT NOT NULL,
    n          BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, agent_id, state)
);

INSERT INTO bot_state_counts (tenant_id, agent_id, state, n)
    SELECT tenant_id, agent_id, state, COUNT(*) FROM bots GROUP BY tenant_id, agent_id, state;

-- Statement-level, with transition tables: one statement's changes (the offline sweep marks
-- every bot of an agent `unknown` at once) become one delta per row of this table, applied in
-- key order, so that concurrent statements lock these rows in the same order (no deadlocks).
CREATE FUNCTION bot_state_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO bot_state_counts (tenant_id, agent_id, state, n)
            SELECT tenant_id, agent_id, state, COUNT(*) FROM new_rows
            GROUP BY tenant_id, agent_id, state ORDER BY tenant_id, agent_id, state
            ON CONFLICT (tenant_id, agent_id, state) DO UPDATE SET n = bot_state_counts.n + EXCLUDED.n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO bot_state_counts (tenant_id, agent_id, state, n)
            SELECT tenant_id, agent_id, state, -COUNT(*) FROM old_rows
            GROUP BY tenant_id, agent_id, state ORDER BY tenant_id, agent_id, state
            ON CONFLICT (tenant_id, agent_id, state) DO UPDATE SET n = bot_state_counts.n + EXCLUDED.n;
    ELSE
        INSERT INTO bot_state_counts (tenant_id, agent_id, state, n)
            SELECT tenant_id, agent_id, state, SUM(d) FROM (
                SELECT tenant_id, agent_id, state, 1 AS d FROM new_rows
                UNION ALL
                SELECT tenant_id, agent_id, state, -1 AS d FROM old_rows
            ) AS changes
            GROUP BY tenant_id, agent_id, state HAVING SUM(d) <> 0 ORDER BY tenant_id, agent_id, state
            ON CONFLICT (tenant_id, agent_id, state) DO UPDATE SET n = bot_state_counts.n + EXCLUDED.n;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER bots_count_insert AFTER INSERT ON bots
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bot_state_counts_apply();
CREATE TRIGGER bots_count_delete AFTER DELETE ON bots
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION bot_state_counts_apply();
CREATE TRIGGER bots_count_update AFTER UPDATE ON bots
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bot_state_counts_apply();
