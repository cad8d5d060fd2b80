-- Bots by agent: an agent's `hello` (its live bots not in its snapshot), an agent going
-- offline (its bots become `unknown`) and the agent's bot list all look bots up by agent
-- alone, which no index served (each was a scan of every bot of every tenant). Not on
-- `state`: every state report would then move an index entry.
-- Append-only: never edit an applied migration; add a new one.
CREATE INDEX bots_agent ON bots (agent_id);
