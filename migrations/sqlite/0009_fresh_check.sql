-- Kept in step with migrations/postgres/0009_fresh_check.sql, which adds a function for optimistic batches.
-- SQLite has one writer, which never needs the check: nothing to change here.
SELECT 1;
