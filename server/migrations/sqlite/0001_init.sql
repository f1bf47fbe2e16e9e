-- Agora schema (SQLite). Times are milliseconds since the Unix epoch; ids are UUID text.
-- Never edit a migration once applied: add a new one.

CREATE TABLE agents (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('online', 'offline')),
    capabilities     TEXT NOT NULL DEFAULT '[]',
    -- SHA-256 of the bearer token, hex; NULL once unregistered.
    token_hash       TEXT UNIQUE,
    registered_at    BIGINT NOT NULL,
    last_seen_at     BIGINT NOT NULL,
    last_approved_at BIGINT,
    unregistered_at  BIGINT,
    CHECK (unregistered_at IS NULL OR (status = 'offline' AND token_hash IS NULL))
);
CREATE INDEX agents_stale ON agents (last_seen_at) WHERE status = 'online';

CREATE TABLE jobs (
    id                 TEXT PRIMARY KEY,
    title              TEXT NOT NULL,
    job_spec           TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('committed', 'approving', 'accepted', 'planning',
                                                       'ready', 'executing', 'completed', 'failed')),
    submitted_by       TEXT REFERENCES agents (id),
    approvals_required BIGINT NOT NULL CHECK (approvals_required >= 1),
    approvals          BIGINT NOT NULL DEFAULT 0 CHECK (approvals >= 0),
    priority           BIGINT NOT NULL DEFAULT 0,
    tasks_total        BIGINT NOT NULL DEFAULT 0,
    tasks_completed    BIGINT NOT NULL DEFAULT 0,
    tasks_failed       BIGINT NOT NULL DEFAULT 0,
    tasks_running      BIGINT NOT NULL DEFAULT 0,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    finished_at        BIGINT,
    error              TEXT,
    CHECK ((status IN ('completed', 'failed')) = (finished_at IS NOT NULL)),
    CHECK (tasks_completed + tasks_failed + tasks_running <= tasks_total)
);
CREATE INDEX jobs_created ON jobs (created_at, id);
CREATE INDEX jobs_status_created ON jobs (status, created_at, id);

CREATE TABLE tasks (
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
    -- Copies of the job's ordering keys, so the claim is one index range scan.
    job_priority     BIGINT NOT NULL,
    job_created_at   BIGINT NOT NULL,
    UNIQUE (job_id, idx),
    CHECK ((task_type = 'plan') = (idx = 0)),
    CHECK (status NOT IN ('claimed', 'running') OR (agent_id IS NOT NULL AND deadline IS NOT NULL)),
    CHECK (status <> 'pending' OR agent_id IS NULL),
    CHECK ((status IN ('completed', 'failed')) = (finished_at IS NOT NULL))
);
CREATE INDEX tasks_claim ON tasks (job_priority DESC, job_created_at, job_id, idx) WHERE status = 'pending';
CREATE INDEX tasks_deadline ON tasks (deadline) WHERE status IN ('claimed', 'running');
CREATE INDEX tasks_agent ON tasks (agent_id) WHERE status IN ('claimed', 'running');
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE status = 'completed';

CREATE TABLE approvals (
    job_id     TEXT NOT NULL REFERENCES jobs (id),
    agent_id   TEXT NOT NULL REFERENCES agents (id),
    comment    TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (job_id, agent_id)
);

CREATE TABLE events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id   TEXT,
    task_id  TEXT,
    agent_id TEXT,
    kind     TEXT NOT NULL,
    data     TEXT NOT NULL,
    at       BIGINT NOT NULL
);
CREATE INDEX events_job ON events (job_id, id);
