-- Room on each wheel page for the update that counts a delivery's start. That update leaves
-- `due_at` alone unless the lease is running out (consumer.sql, start_deliveries), so with
-- free space on the page it is a HOT update: no new entries in the wheel's indexes, and
-- nothing for claims to step over in `wheel_due` until vacuum comes (bench churn).
-- Takes effect for pages written from now on.
ALTER TABLE chronoq.wheel SET (fillfactor = 70);
