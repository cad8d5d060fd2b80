-- Draining an agent (issue 14): the operator's decision, kept apart from its presence so that
-- it survives disconnections. While `drained_at` is set the agent takes no new starts, and the
-- API shows its status as `draining` (unless revoked). Presence stays in `status`.
-- Append-only: never edit an applied migration; add a new one.
ALTER TABLE agents ADD COLUMN drained_at BIGINT;
