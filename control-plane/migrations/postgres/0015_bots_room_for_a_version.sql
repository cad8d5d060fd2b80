-- Room on each page of `bots` for one new version of every row on it. A bulk action updates
-- every bot it selects in one transaction (desired state, command sequence number); the old
-- versions stay until it commits, so a page needs room for all its rows' new versions at
-- once. With `fillfactor` 80 (0013) only a quarter of them fit: the rest moved to other pages,
-- with new entries in each of the table's four indexes (10,000 bots in 5 statements of 2,000:
-- 2,502 heap-only updates, 261 ms; with 50, all 10,000, 116 ms).
-- Pages already filled keep their rows until those move (their next update that does not
-- fit goes to a page filled to half), so an existing registry gets the room as it is updated.
-- Append-only: never edit an applied migration; add a new one.
ALTER TABLE bots SET (fillfactor = 50);
