-- The approval gate (issue 17): roles on agents, votes that approve or reject (by agents or by
-- people through an operator) on a job or on its plan, an approval deadline, and plan review.

ALTER TABLE agents ADD COLUMN roles TEXT NOT NULL DEFAULT '[]';

-- When a job still waiting for approvals fails (NULL: never).
ALTER TABLE jobs ADD COLUMN approval_expires_at BIGINT;
ALTER TABLE jobs ADD COLUMN plan_approvals_required BIGINT NOT NULL DEFAULT 0 CHECK (plan_approvals_required >= 0);
-- Approvals of the current plan; reset when a plan is rejected.
ALTER TABLE jobs ADD COLUMN plan_approvals BIGINT NOT NULL DEFAULT 0 CHECK (plan_approvals >= 0);
ALTER TABLE jobs ADD COLUMN plans_rejected BIGINT NOT NULL DEFAULT 0 CHECK (plans_rejected >= 0);
CREATE INDEX jobs_approval_expiry ON jobs (approval_expires_at) WHERE status IN ('committed', 'approving');

-- One vote per voter per job (round 0) and per plan (round n: the n-th plan). voter is the
-- agent's id or 'human:<name>'; agent_id is NULL for a person.
CREATE TABLE votes (
    job_id     TEXT NOT NULL REFERENCES jobs (id),
    round      BIGINT NOT NULL CHECK (round >= 0),
    voter      TEXT NOT NULL,
    agent_id   TEXT REFERENCES agents (id),
    name       TEXT NOT NULL,
    verdict    TEXT NOT NULL CHECK (verdict IN ('approve', 'reject')),
    comment    TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (job_id, round, voter)
);
INSERT INTO votes (job_id, round, voter, agent_id, name, verdict, comment, created_at)
SELECT a.job_id, 0, a.agent_id, a.agent_id, g.name, 'approve', a.comment, a.created_at
  FROM approvals a JOIN agents g ON g.id = a.agent_id;
DROP TABLE approvals;

-- A rejected plan is followed by a new plan task, so plan tasks are no longer only index 0:
-- plan tasks take indexes 0..k in order, work tasks follow the last plan. SQLite cannot drop a
-- CHECK, so the table is rebuilt with the same columns and indexes.
CREATE TABLE tasks_new (
    id               TEXT PRIMARY KEY,
    job_id           TEXT NOT NULL REFERENCES jobs (id),
    idx              BIGINT NOT NULL CHECK (idx >= 0),
    task_type        TEXT NOT NULL CHECK (task_type IN ('plan', 'work')),
    task_spec        TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'claimed', 'running', 'completed', 'failed')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    max_retries      BIGINT NOT NULL,
    timeout_secs     BIGINT NOT NULL CHECK (timeout_secs >= 1),
    agent_id         TEXT REFERENCES agents (id),
    claimed_at       BIGINT,
    started_at       BIGINT,
    deadline         BIGINT,
    progress         BIGINT NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    progress_message TEXT,
    result           TEXT,
    error            TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    finished_at      BIGINT,
    job_priority     BIGINT NOT NULL,
    job_created_at   BIGINT NOT NULL,
    lease_id         TEXT,
    lease_expires_at BIGINT,
    heartbeat_secs   BIGINT CHECK (heartbeat_secs IS NULL OR heartbeat_secs >= 1),
    deliveries       BIGINT NOT NULL DEFAULT 0 CHECK (deliveries >= 0),
    available_at     BIGINT NOT NULL DEFAULT 0,
    claim_request_id TEXT,
    via              TEXT CHECK (via IS NULL OR via IN ('claim', 'offer')),
    UNIQUE (job_id, idx),
    CHECK (task_type = 'plan' OR idx > 0),
    CHECK (status NOT IN ('claimed', 'running') OR (agent_id IS NOT NULL AND deadline IS NOT NULL)),
    CHECK (status <> 'pending' OR agent_id IS NULL),
    CHECK ((status IN ('completed', 'failed')) = (finished_at IS NOT NULL))
);
INSERT INTO tasks_new (id, job_id, idx, task_type, task_spec, status, attempts, max_retries,
    timeout_secs, agent_id, claimed_at, started_at, deadline, progress, progress_message, result,
    error, created_at, updated_at, finished_at, job_priority, job_created_at, lease_id,
    lease_expires_at, heartbeat_secs, deliveries, available_at, claim_request_id, via)
SELECT id, job_id, idx, task_type, task_spec, status, attempts, max_retries,
    timeout_secs, agent_id, claimed_at, started_at, deadline, progress, progress_message, result,
    error, created_at, updated_at, finished_at, job_priority, job_created_at, lease_id,
    lease_expires_at, heartbeat_secs, deliveries, available_at, claim_request_id, via
  FROM tasks;
DROP TABLE tasks;
ALTER TABLE tasks_new RENAME TO tasks;
CREATE INDEX tasks_claim ON tasks (job_priority DESC, job_created_at, job_id, idx) WHERE status = 'pending';
CREATE INDEX tasks_agent ON tasks (agent_id) WHERE status IN ('claimed', 'running');
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE status = 'completed';
CREATE INDEX tasks_lease ON tasks (lease_expires_at) WHERE status IN ('claimed', 'running');
CREATE INDEX tasks_failed ON tasks (finished_at) WHERE status = 'failed';
