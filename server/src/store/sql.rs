//! SQL text shared by both backends (`$1` placeholders, which SQLite accepts too), and the few
//! statements that differ per backend, under one name each with the same ORDER BY.

use std::fmt;

use agora_shared::{JobStatus, TaskStatus};

use super::Backend;

/// A set of statuses as an SQL list, `('claimed', 'running')`, rendered from the state machine's
/// own sets in `agora-shared` so that no statement carries a copy of the rules. (The partial
/// indexes in the migrations spell the same lists; SQLite uses such an index only when the
/// statement states its condition.)
pub struct In(&'static [&'static str]);

impl fmt::Display for In {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(")?;
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "'{s}'")?;
        }
        f.write_str(")")
    }
}

/// `const fn $name([Status; N]) -> [&str; N]`: the names of a status set, at compile time
/// (a const fn cannot call a trait method, so one per status type).
macro_rules! names_of {
    ($name:ident, $status:ty) => {
        const fn $name<const N: usize>(set: [$status; N]) -> [&'static str; N] {
            let mut out = [""; N];
            let mut i = 0;
            while i < N {
                out[i] = set[i].as_str();
                i += 1;
            }
            out
        }
    };
}
names_of!(task_names, TaskStatus);
names_of!(job_names, JobStatus);

/// Tasks an agent holds: [`TaskStatus::ACTIVE`].
pub const ACTIVE_TASKS: In = In(&task_names(TaskStatus::ACTIVE));
/// Tasks not finished: [`TaskStatus::OPEN`].
pub const OPEN_TASKS: In = In(&task_names(TaskStatus::OPEN));
/// Tasks finished for good: [`TaskStatus::TERMINAL`].
pub const FINISHED_TASKS: In = In(&task_names(TaskStatus::TERMINAL));
/// Jobs waiting for approvals: [`JobStatus::APPROVABLE`].
pub const APPROVABLE_JOBS: In = In(&job_names(JobStatus::APPROVABLE));
/// Jobs whose tasks may run: [`JobStatus::CLAIMABLE`].
pub const CLAIMABLE_JOBS: In = In(&job_names(JobStatus::CLAIMABLE));

/// `n` numbered placeholders from `$from`: `$2, $3, $4`.
pub fn placeholders(n: usize, from: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub const AGENT_COLUMNS: &str =
    "id, name, status, capabilities, registered_at, last_seen_at, last_approved_at, roles";

/// Jobs with their specs (kept in a table of their own, so the hot updates of a job's counters
/// never touch its spec): what [`JOB_COLUMNS`] reads from.
pub const JOBS_WITH_SPECS: &str = "jobs JOIN job_specs ON job_specs.job_id = jobs.id";

pub const JOB_COLUMNS: &str =
    "id, title, job_spec, status, submitted_by, approvals_required, approvals, \
     priority, tasks_total, tasks_completed, tasks_failed, tasks_running, created_at, updated_at, \
     finished_at, error, approval_expires_at, plan_approvals_required, plan_approvals, plans_rejected, has_deps";

/// A job row as the write paths need it: everything but the spec, which they never read back
/// (a claim must cost the same whatever the size of the job's spec).
pub const JOB_STATE_COLUMNS: &str =
    "id, title, CAST(NULL AS TEXT) AS job_spec, status, submitted_by, approvals_required, approvals, \
     priority, tasks_total, tasks_completed, tasks_failed, tasks_running, created_at, updated_at, \
     finished_at, error, approval_expires_at, plan_approvals_required, plan_approvals, plans_rejected, has_deps";

pub const TASK_COLUMNS: &str =
    "id, job_id, idx, task_type, task_spec, status, attempts, max_retries, \
     timeout_secs, agent_id, claimed_at, started_at, deadline, progress, progress_message, result, \
     error, created_at, updated_at, finished_at, lease_id, lease_expires_at, heartbeat_secs, \
     deliveries, available_at, via, name, depends_on, unmet, requires, task_key";

pub const VOTE_COLUMNS: &str = "job_id, round, voter, agent_id, name, verdict, comment, created_at";

pub const EVENT_COLUMNS: &str = "id, job_id, task_id, agent_id, kind, data, at";

/// Row lock for read-then-write on PostgreSQL (SQLite has one writer and needs none). `NO KEY`
/// because no key ever changes: it does not conflict with the `KEY SHARE` locks that foreign-key
/// checks take (a claim referencing an agent must not wait for that agent's own call).
pub fn for_update(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "",
        Backend::Postgres => " FOR NO KEY UPDATE",
    }
}

/// Row lock that passes over rows another transaction holds: the sweeps take what is free and
/// leave the rest to the next pass, so they never wait on (or deadlock with) agents' calls.
pub fn for_update_skip_locked(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "",
        Backend::Postgres => " FOR NO KEY UPDATE SKIP LOCKED",
    }
}

/// The claim ([`task_claim_sql`]), rendered once per backend and form: a claim, or (`started`)
/// a claim that starts the task in the same statement (`auto_start`: `running`, started at
/// `$2`; as after a separate start, the row keeps the claim's lease until the sweep sets it to
/// the deadline, see `agora_shared::effective_lease_expiry`).
pub fn task_claim(backend: Backend, started: bool) -> &'static str {
    static SQL: [std::sync::OnceLock<String>; 4] = [const { std::sync::OnceLock::new() }; 4];
    let i = usize::from(backend == Backend::Postgres) * 2 + usize::from(started);
    SQL[i].get_or_init(|| task_claim_sql(backend, started))
}

/// The claim: the next ready task (pending, every dependency completed, not waiting out a
/// retry backoff) that agent `$1` may take (it has every capability the task `requires`) and
/// whose exclusive key is free (fewer holders than its `key_limit`), by job priority desc, job
/// age asc, task index asc, handed to `$1` at time `$2` as a new delivery: lease `$3` for `$4` ms
/// (never past the deadline), delivered by `$5` (`claim` or `offer`), for request `$6`.
///
/// Pending tasks exist only in claimable jobs (committed and approving jobs have no tasks; a
/// job that ends fails its open tasks), so no join with `jobs` is needed. The index
/// `tasks_claim` holds only ready tasks (`unmet = 0`), so tasks waiting for dependencies cost
/// the claim nothing; routing and keys are filters on the index's walk in queue order (so a
/// queue whose head is thousands of tasks the asking agent cannot take, for want of a
/// capability or of a free key, costs each of its claims that walk). The
/// unary `+` keeps `available_at` such a filter too, never an index range of its own (which
/// would sort every pending task). On PostgreSQL claims take one lock first
/// (`steps::graph::CLAIM_LOCK`, taken by every batch), so that the count of a key's holders is exact.
fn task_claim_sql(backend: Backend, started: bool) -> String {
    let (lock, routed) = match backend {
        Backend::Sqlite => (
            "",
            "NOT EXISTS (SELECT 1 FROM json_each(t.requires) r WHERE r.value NOT IN \
             (SELECT c.value FROM agents a, json_each(a.capabilities) c WHERE a.id = $1))",
        ),
        Backend::Postgres => (
            " FOR NO KEY UPDATE SKIP LOCKED",
            "t.requires::jsonb <@ (SELECT a.capabilities::jsonb FROM agents a WHERE a.id = $1)",
        ),
    };
    let held = key_holders_of_t();
    let (status, started_at) = match started {
        false => ("claimed", "NULL"),
        true => ("running", "$2"),
    };
    format!(
        "UPDATE tasks SET status = '{status}', agent_id = $1, claimed_at = $2, started_at = {started_at}, \
         deadline = $2 + timeout_secs * 1000, lease_id = $3, \
         lease_expires_at = $2 + CASE WHEN timeout_secs * 1000 < $4 THEN timeout_secs * 1000 ELSE $4 END, \
         via = $5, claim_request_id = $6, heartbeat_secs = NULL, deliveries = deliveries + 1, \
         progress = 0, progress_message = NULL, updated_at = $2 \
         WHERE id = (SELECT t.id FROM tasks t WHERE t.status = 'pending' AND t.unmet = 0 \
         AND +t.available_at <= $2 \
         AND (t.requires IS NULL OR {routed}) \
         AND (t.task_key IS NULL OR ({held}) < t.key_limit) \
         ORDER BY t.job_priority DESC, t.job_created_at ASC, t.job_id ASC, t.idx ASC LIMIT 1{lock}) \
         RETURNING {TASK_COLUMNS}"
    )
}

/// How many tasks hold `t.task_key` (claimed or running), through the index `tasks_key_held`.
fn key_holders_of_t() -> String {
    format!(
        "SELECT COUNT(*) FROM tasks k WHERE k.task_key = t.task_key AND k.status IN {ACTIVE_TASKS}"
    )
}

/// Row lock that keeps an agent registered until the transaction ends: unregistering takes the
/// agent's row `FOR UPDATE` (see [`for_key_update`]), which waits for this lock and is waited
/// for by it, while the agent's own calls (`FOR NO KEY UPDATE`) pass it by.
pub fn for_key_share(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "",
        Backend::Postgres => " FOR KEY SHARE",
    }
}

/// The strongest row lock, for unregistering an agent: claims for it (which take
/// [`for_key_share`]) wait until it has committed and then find it gone.
pub fn for_key_update(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "",
        Backend::Postgres => " FOR UPDATE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_count_from_their_first_number() {
        assert_eq!(placeholders(3, 2), "$2, $3, $4");
        assert_eq!(placeholders(1, 7), "$7");
        assert_eq!(placeholders(0, 1), "");
    }

    #[test]
    fn status_sets_render_as_the_lists_the_indexes_use() {
        assert_eq!(ACTIVE_TASKS.to_string(), "('claimed', 'running')");
        assert_eq!(OPEN_TASKS.to_string(), "('pending', 'claimed', 'running')");
        assert_eq!(FINISHED_TASKS.to_string(), "('completed', 'failed')");
        assert_eq!(APPROVABLE_JOBS.to_string(), "('committed', 'approving')");
        assert_eq!(
            CLAIMABLE_JOBS.to_string(),
            "('accepted', 'planning', 'ready', 'executing')"
        );
    }
}
