-- Pending tasks with an exclusive key: a batch that finds none may claim beside other
-- replicas' batches (the claims lock taken shared, see `batch::run_batch`).
CREATE INDEX tasks_keyed_pending ON tasks (task_key)
    WHERE status = 'pending' AND task_key IS NOT NULL;
