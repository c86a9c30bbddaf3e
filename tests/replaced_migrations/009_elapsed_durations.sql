-- chronoq 009: a duration added to a time is elapsed time.
--
-- asyncpg sends a Python timedelta as an interval with a days part, and Postgres adds days to a
-- timestamptz as calendar days of the session's TimeZone: 23 or 25 hours across a DST change.
-- chronoq.elapsed(d) counts each day of d as 24 hours, so `now() + chronoq.elapsed(d)` lies d of
-- elapsed time ahead whatever the session's TimeZone. One immutable expression: the planner
-- inlines it.
CREATE FUNCTION chronoq.elapsed(d interval) RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN d - date_trunc('day', d) + extract(day FROM d)::bigint * interval '24 hours';
