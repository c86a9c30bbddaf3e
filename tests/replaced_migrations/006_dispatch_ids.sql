-- Which timer batch made the row's latest committed publish. Each batch draws a random id and
-- sends it in its messages. A worker does not count a first delivery's start before running it
-- in a group (one commit for the group), so a run that kills its worker goes uncounted; that
-- is safe only for the one copy a committed batch published first. Any other copy (published
-- again after its lease ran out, so `dispatches` > 1, or by a batch that rolled back after
-- the broker had it, so its id is not this one) may follow such a run: it is handed back and
-- runs alone, its start committed first.
ALTER TABLE chronoq.wheel ADD COLUMN dispatch_id bigint;
