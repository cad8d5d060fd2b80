-- Every bot state report and every control order rewrites `state` or `desired_state` of
-- thousands of bots a second under load. While an index covered either column, each such
-- update was a new row version with an entry in every index of `bots` (six); without one it
-- is a heap-only (HOT) update, written in place on its page, with no index entry at all.
-- What those indexes served now goes through the counts (one row per tenant, agent, desired
-- state and state, kept by triggers): a query about the bots in some state first asks which
-- agents have any, then reads those agents' bots through `bots_agent` /
-- `bots_tenant_agent_name` (docs/ARCHITECTURE.md, "Bot state without an index").
-- Append-only: never edit an applied migration; add a new one.
DROP INDEX bots_tenant_state_name;
DROP INDEX bots_desired_state;
DROP STATISTICS bots_desired_and_state;
-- Room on each page for the next versions of its rows, so that they stay HOT.
ALTER TABLE bots SET (fillfactor = 80);

-- `bot_state_counts` with the desired state in its key: the supervisor's drift (desired and
-- observed state disagree) is a question about both.
CREATE TABLE bot_counts (
    tenant_id      TEXT NOT NULL,
    agent_id       TEXT NOT NULL,
    desired_state  TEXT NOT NULL,
    state          TEXT NOT NULL,
    n              BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, agent_id, desired_state, state)
);

INSERT INTO bot_counts (tenant_id, agent_id, desired_state, state, n)
    SELECT tenant_id, agent_id, desired_state, state, COUNT(*) FROM bots
    GROUP BY tenant_id, agent_id, desired_state, state;

DROP TRIGGER bots_count_insert ON bots;
DROP TRIGGER bots_count_delete ON bots;
DROP TRIGGER bots_count_update ON bots;
DROP FUNCTION bot_state_counts_apply();
DROP TABLE bot_state_counts;

-- As before (migration 0006): statement-level, one delta per row of the counts, applied in
-- key order so that concurrent statements lock these rows in the same order.
CREATE FUNCTION bot_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO bot_counts (tenant_id, agent_id, desired_state, state, n)
            SELECT tenant_id, agent_id, desired_state, state, COUNT(*) FROM new_rows
            GROUP BY tenant_id, agent_id, desired_state, state ORDER BY tenant_id, agent_id, desired_state, state
            ON CONFLICT (tenant_id, agent_id, desired_state, state) DO UPDATE SET n = bot_counts.n + EXCLUDED.n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO bot_counts (tenant_id, agent_id, desired_state, state, n)
            SELECT tenant_id, agent_id, desired_state, state, -COUNT(*) FROM old_rows
            GROUP BY tenant_id, agent_id, desired_state, state ORDER BY tenant_id, agent_id, desired_state, state
            ON CONFLICT (tenant_id, agent_id, desired_state, state) DO UPDATE SET n = bot_counts.n + EXCLUDED.n;
    ELSE
        INSERT INTO bot_counts (tenant_id, agent_id, desired_state, state, n)
            SELECT tenant_id, agent_id, desired_state, state, SUM(d) FROM (
                SELECT tenant_id, agent_id, desired_state, state, 1 AS d FROM new_rows
                UNION ALL
                SELECT tenant_id, agent_id, desired_state, state, -1 AS d FROM old_rows
            ) AS changes
            GROUP BY tenant_id, agent_id, desired_state, state HAVING SUM(d) <> 0
            ORDER BY tenant_id, agent_id, desired_state, state
            ON CONFLICT (tenant_id, agent_id, desired_state, state) DO UPDATE SET n = bot_counts.n + EXCLUDED.n;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER bots_count_insert AFTER INSERT ON bots
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bot_counts_apply();
CREATE TRIGGER bots_count_delete AFTER DELETE ON bots
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION bot_counts_apply();
CREATE TRIGGER bots_count_update AFTER UPDATE ON bots
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bot_counts_apply();
