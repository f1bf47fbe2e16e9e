-- The dashboard's charts (GET /api/stats/series). Completed and failed tasks per minute are
-- counted from tasks.finished_at through these partial indexes; the queue depth and the agents
-- online cannot be counted afterwards, so the scheduler samples them once a minute.
CREATE INDEX tasks_failed ON tasks (finished_at) WHERE status = 'failed';
CREATE TABLE stats_samples (
    minute        BIGINT PRIMARY KEY, -- Unix time in minutes
    pending       BIGINT NOT NULL,
    agents_online BIGINT NOT NULL
);
