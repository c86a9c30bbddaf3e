-- name: db_now
-- The database's clock: the start of the current transaction (now()), so that every time a
-- transaction computes from it agrees with what its statements see as now().
SELECT now();
