-- Pending tasks with an exclusive key: a batch that finds none may claim beside other
-- replicas' batches (the claims lock taken shared, see `batch::run_batch`).
CREATE INDEX tasks_keyed_pending ON tasks (task_key)
    WHERE status = 'pending' AND task_key IS NOT NULL;

-- The claims lock of a batch whose operations may run beside other replicas' (claims, starts,
-- completions; see `batch::run_batch`): exclusive while a pending task has an exclusive key,
-- else shared. 'x' or 's'. A function, so that its query is planned once per connection, not
-- with every batch.
CREATE FUNCTION agora_claims_lock(lock_key BIGINT) RETURNS TEXT AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM tasks WHERE status = 'pending' AND task_key IS NOT NULL) THEN
        PERFORM pg_advisory_xact_lock(lock_key);
        RETURN 'x';
    END IF;
    PERFORM pg_advisory_xact_lock_shared(lock_key);
    RETURN 's';
END
$$ LANGUAGE plpgsql;
