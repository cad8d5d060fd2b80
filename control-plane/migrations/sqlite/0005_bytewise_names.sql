-- SQLite already compares TEXT bytewise (BINARY); this keeps both backends' migration
-- histories in step with Postgres' 0005.
SELECT 1;
