-- has_deps: 1 when any task of the job depends on another (it has rows in task_deps). A
-- completion looks for the tasks it unblocks only in such a job: the plans of most jobs have no
-- edges, and that search cost a statement per completion.
ALTER TABLE jobs ADD COLUMN has_deps BIGINT NOT NULL DEFAULT 0;
UPDATE jobs SET has_deps = 1 WHERE id IN (SELECT job_id FROM task_deps);
