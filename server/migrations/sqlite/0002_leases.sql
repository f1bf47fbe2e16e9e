-- Leases: every delivery of a task (REST claim, WebSocket offer) is a lease of its own.
-- lease_id names the current delivery (NULL when no agent holds the task; a finished task keeps
-- the one that finished it); lease_expires_at is when it runs out, never after the deadline (an
-- unstarted claim or offer then goes back to pending, a started task counts a failed attempt);
-- deliveries counts every claim and offer; available_at holds a task back after a failed attempt
-- (retry backoff); claim_request_id makes a REST claim idempotent; via says how the task was
-- delivered (a WebSocket agent's tasks follow its socket).

ALTER TABLE tasks ADD COLUMN lease_id TEXT;
ALTER TABLE tasks ADD COLUMN lease_expires_at BIGINT;
ALTER TABLE tasks ADD COLUMN heartbeat_secs BIGINT CHECK (heartbeat_secs IS NULL OR heartbeat_secs >= 1);
ALTER TABLE tasks ADD COLUMN deliveries BIGINT NOT NULL DEFAULT 0 CHECK (deliveries >= 0);
ALTER TABLE tasks ADD COLUMN available_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN claim_request_id TEXT;
ALTER TABLE tasks ADD COLUMN via TEXT CHECK (via IS NULL OR via IN ('claim', 'offer'));

-- Tasks held when this migration runs keep their deadline as their lease.
UPDATE tasks SET lease_expires_at = deadline, deliveries = 1, via = 'claim'
 WHERE status IN ('claimed', 'running');

-- The sweep finds every expired delivery, past its deadline or its lease, by the lease alone
-- (lease_expires_at <= deadline): this index replaces the deadline's.
DROP INDEX tasks_deadline;
CREATE INDEX tasks_lease ON tasks (lease_expires_at) WHERE status IN ('claimed', 'running');
