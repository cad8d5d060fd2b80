-- Every bot state report and every control order rewrites `state` or `desired_state` of
-- thousands of bots a second under load, and each index on either column was two more
-- B-tree edits per row. What those indexes served now goes through the counts (one row per
-- tenant, agent, desired state and state, kept by triggers): a query about the bots in some
-- state first asks which agents have any, then reads those agents' bots through
-- `bots_agent` / `bots_tenant_agent_name` (docs/ARCHITECTURE.md, "Bot state without an
-- index"). The same as the Postgres migration of the same number.
-- Append-only: never edit an applied migration; add a new one.
DROP INDEX bots_tenant_state_name;
DROP INDEX bots_desired_state;

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

DROP TRIGGER bots_count_insert;
DROP TRIGGER bots_count_delete;
DROP TRIGGER bots_count_update;
DROP TABLE bot_state_counts;

CREATE TRIGGER bots_count_insert AFTER INSERT ON bots BEGIN
    INSERT INTO bot_counts (tenant_id, agent_id, desired_state, state, n)
        VALUES (NEW.tenant_id, NEW.agent_id, NEW.desired_state, NEW.state, 1)
        ON CONFLICT (tenant_id, agent_id, desired_state, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER bots_count_delete AFTER DELETE ON bots BEGIN
    UPDATE bot_counts SET n = n - 1
        WHERE tenant_id = OLD.tenant_id AND agent_id = OLD.agent_id
          AND desired_state = OLD.desired_state AND state = OLD.state;
END;

CREATE TRIGGER bots_count_update AFTER UPDATE OF state, desired_state, agent_id ON bots
    WHEN OLD.state <> NEW.state OR OLD.desired_state <> NEW.desired_state OR OLD.agent_id <> NEW.agent_id
BEGIN
    UPDATE bot_counts SET n = n - 1
        WHERE tenant_id = OLD.tenant_id AND agent_id = OLD.agent_id
          AND desired_state = OLD.desired_state AND state = OLD.state;
    INSERT INTO bot_counts (tenant_id, agent_id, desired_state, state, n)
        VALUES (NEW.tenant_id, NEW.agent_id, NEW.desired_state, NEW.state, 1)
        ON CONFLICT (tenant_id, agent_id, desired_state, state) DO UPDATE SET n = n + 1;
END;
