-- name: inline_occurrence_key
-- The idempotency key of a handler run inline (chronoq.testing): the wheel's own format.
SELECT chronoq.occurrence_key($1, $2);

-- name: empty_jsonb
-- An empty jsonb object, to see how a connection decodes jsonb: as JSON text (asyncpg's
-- default) or through chronoq's codec (a caller's own connection may have either).
SELECT '{}'::jsonb;
