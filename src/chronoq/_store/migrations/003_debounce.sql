-- Debounced enqueues (enqueue(..., key=..., debounce=...)). Every enqueue of the key pushes its
-- job's pending occurrence out to now + debounce, but never past this: the time fixed by the
-- enqueue that created the occurrence (its time + max_wait). NULL on every other occurrence.
-- A nullable column without a default: adding it rewrites nothing.
ALTER TABLE chronoq.wheel ADD COLUMN due_by timestamptz;
