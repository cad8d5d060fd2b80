-- The order of agents' bot-state reports: the agent's time (`at`, microseconds since
-- the epoch, on the agent's clock) of the newest report applied to the bot's observed state.
-- A report whose `at` is not later is a repeat or a replay of something older and changes
-- nothing. Set only from reports: the `hello` snapshot carries no agent time, and the
-- server's clock is not comparable with the agent's. NULL until the bot's first report, and
-- again when the bot moves to another agent (another clock). Microseconds, not the usual
-- milliseconds: one exit makes two transitions (`crashed`, then `backoff`) within the same
-- millisecond, and the second is news, not a repeat.
-- Append-only: never edit an applied migration; add a new one.
ALTER TABLE bots ADD COLUMN reported_at_us BIGINT;
