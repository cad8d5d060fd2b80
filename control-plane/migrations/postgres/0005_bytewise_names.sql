-- Bot names sort (and page) bytewise on Postgres too, as they do on SQLite, whatever the
-- server's locale: the same `GET /bots` order and cursors on both backends.
ALTER TABLE bots ALTER COLUMN name TYPE TEXT COLLATE "C";
