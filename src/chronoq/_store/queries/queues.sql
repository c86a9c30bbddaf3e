-- name: pause_queue
-- True if this call paused the queue (it was not paused already).
INSERT INTO chronoq.queue_controls AS c (queue, paused) VALUES ($1, true)
ON CONFLICT (queue) DO UPDATE SET paused = true, updated_at = now() WHERE NOT c.paused
RETURNING true AS paused;

-- name: unpause_queue
UPDATE chronoq.queue_controls SET paused = false, updated_at = now() WHERE queue = $1 AND paused
RETURNING true AS resumed;

-- name: set_queue_limits
INSERT INTO chronoq.queue_controls AS c (queue, max_running, rate_count, rate_period_ms)
VALUES ($1, $2, $3, $4)
ON CONFLICT (queue) DO UPDATE
SET max_running = $2, rate_count = $3, rate_period_ms = $4, updated_at = now();

-- name: drop_queue_control
-- A queue neither paused nor limited runs freely: its control row goes. The DELETE waits for
-- every batch that holds the row (claim_due, lock_controlled_queues), so free_queue_rows,
-- the next statement, sees every row those batches marked controlled.
DELETE FROM chronoq.queue_controls
WHERE queue = $1 AND NOT paused AND max_running IS NULL AND rate_count IS NULL
RETURNING queue;

-- name: free_queue_rows
UPDATE chronoq.wheel SET controlled = false WHERE controlled AND queue = $1;

-- name: forget_queue_dispatches
DELETE FROM chronoq.queue_dispatches WHERE queue = $1;

-- name: queue_control
SELECT paused, max_running, rate_count, rate_period_ms FROM chronoq.queue_controls WHERE queue = $1;
