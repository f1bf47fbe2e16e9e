-- The approval gate (issue 17, PostgreSQL): roles on agents, votes that approve or reject (by
-- agents or by people through an operator) on a job or on its plan, an approval deadline, and
-- plan review.

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
-- plan tasks take indexes 0..k in order, work tasks follow the last plan. The old CHECK was
-- unnamed; find it by its definition.
DO $$
DECLARE c TEXT;
BEGIN
    FOR c IN SELECT conname FROM pg_constraint
              WHERE conrelid = 'tasks'::regclass AND contype = 'c'
                AND pg_get_constraintdef(oid) LIKE '%task_type = ''plan''%= (idx = 0)%'
    LOOP
        EXECUTE format('ALTER TABLE tasks DROP CONSTRAINT %I', c);
    END LOOP;
END $$;
ALTER TABLE tasks ADD CONSTRAINT tasks_plan_first CHECK (task_type = 'plan' OR idx > 0);
