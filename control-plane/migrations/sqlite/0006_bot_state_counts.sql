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

CREATE TRIGGER bots_count_insert AFTER INSERT ON bots BEGIN
    INSERT INTO bot_state_counts (tenant_id, agent_id, state, n) VALUES (NEW.tenant_id, NEW.agent_id, NEW.state, 1)
        ON CONFLICT (tenant_id, agent_id, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER bots_count_delete AFTER DELETE ON bots BEGIN
    UPDATE bot_state_counts SET n = n - 1
        WHERE tenant_id = OLD.tenant_id AND agent_id = OLD.agent_id AND state = OLD.state;
END;

CREATE TRIGGER bots_count_update AFTER UPDATE OF state, agent_id ON bots
    WHEN OLD.state <> NEW.state OR OLD.agent_id <> NEW.agent_id
BEGIN
    UPDATE bot_state_counts SET n = n - 1
        WHERE tenant_id = OLD.tenant_id AND agent_id = OLD.agent_id AND state = OLD.state;
    INSERT INTO bot_state_counts (tenant_id, agent_id, state, n) VALUES (NEW.tenant_id, NEW.agent_id, NEW.state, 1)
        ON CONFLICT (tenant_id, agent_id, state) DO UPDATE SET n = n + 1;
END;
