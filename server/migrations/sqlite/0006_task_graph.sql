-- Plans with control fields (issue 19): dependencies, capability routing, exclusive keys, and
-- idempotent job submission.

-- name: the task's name in its plan. depends_on: the job's task indexes it waits for (a JSON
-- array, NULL when none); unmet counts those not completed yet, kept by the writes that complete
-- tasks, so readiness is data the claim index holds. requires: capabilities an agent needs all
-- of (a sorted JSON array, NULL when none). task_key: the exclusive key; key_limit: how many
-- tasks holding it may be claimed or running at once (KEY_LIMITS when the task was planned).
ALTER TABLE tasks ADD COLUMN name TEXT;
ALTER TABLE tasks ADD COLUMN depends_on TEXT;
ALTER TABLE tasks ADD COLUMN unmet BIGINT NOT NULL DEFAULT 0 CHECK (unmet >= 0);
ALTER TABLE tasks ADD COLUMN requires TEXT;
ALTER TABLE tasks ADD COLUMN task_key TEXT;
ALTER TABLE tasks ADD COLUMN key_limit BIGINT NOT NULL DEFAULT 1 CHECK (key_limit >= 1);

-- The claim walks only ready tasks: pending with every dependency completed.
DROP INDEX tasks_claim;
CREATE INDEX tasks_claim ON tasks (job_priority DESC, job_created_at, job_id, idx)
    WHERE status = 'pending' AND unmet = 0;
-- Holders of each key, counted by the claim.
CREATE INDEX tasks_key_held ON tasks (task_key)
    WHERE status IN ('claimed', 'running') AND task_key IS NOT NULL;
-- Pending tasks by what they require (/api/stats, the task view's "waiting for").
CREATE INDEX tasks_requires ON tasks (requires)
    WHERE status = 'pending' AND requires IS NOT NULL;

-- Dependency edges, from the task depended on (dep_idx) to its dependent (task_idx): a
-- completion finds the tasks it unblocks, a failure those it fails, in one index range.
CREATE TABLE task_deps (
    job_id   TEXT NOT NULL REFERENCES jobs (id),
    dep_idx  BIGINT NOT NULL,
    task_idx BIGINT NOT NULL,
    PRIMARY KEY (job_id, dep_idx, task_idx)
);

-- POST /api/jobs with an idempotency_key: the job the key first created, the hash of the body
-- that created it, and when (a key older than IDEMPOTENCY_TTL_SECS may be taken again). The key
-- is claimed before its job is written, so job_id has no foreign key.
CREATE TABLE job_idempotency (
    idem_key   TEXT PRIMARY KEY,
    job_id     TEXT NOT NULL,
    body_hash  TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX job_idempotency_created ON job_idempotency (created_at);
