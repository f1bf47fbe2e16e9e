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
///
/// `keys: false` passes over every task with an exclusive key (a PostgreSQL batch that runs
/// beside others, `batch::run_batch`, cannot count a key's holders exactly).
pub fn task_claim(backend: Backend, started: bool, keys: bool) -> &'static str {
    static SQL: [std::sync::OnceLock<String>; 8] = [const { std::sync::OnceLock::new() }; 8];
    let i = usize::from(backend == Backend::Postgres) * 4
        + usize::from(started) * 2
        + usize::from(keys);
    SQL[i].get_or_init(|| task_claim_sql(backend, started, keys))
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
/// would sort every pending task). On PostgreSQL a batch that may claim keyed tasks holds the
/// claims lock exclusively (`steps::graph::CLAIM_LOCK`, see `batch::run_batch`), so that the
/// count of a key's holders is exact.
fn task_claim_sql(backend: Backend, started: bool, keys: bool) -> String {
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
    let key_free = match keys {
        true => format!(
            "(t.task_key IS NULL OR ({}) < t.key_limit)",
            key_holders_of_t()
        ),
        false => "t.task_key IS NULL".to_string(),
    };
    let (status, started_at) = match started {
        false => ("'claimed'", "NULL"),
        true => ("'running'", "$2"),
    };
    let set = claim_assignments(status, started_at, "$1", "$2", "$3", "$4", "$5", "$6");
    format!(
        "UPDATE tasks SET {set} \
         WHERE id = (SELECT t.id FROM tasks t WHERE {READY_T} AND +t.available_at <= $2 \
         AND (t.requires IS NULL OR {routed}) \
         AND {key_free} \
         ORDER BY {QUEUE_ORDER_T} LIMIT 1{lock}) \
         RETURNING {TASK_COLUMNS}"
    )
}

/// Ready tasks of `tasks t`: the condition of the partial index `tasks_claim`, word for word.
const READY_T: &str = "t.status = 'pending' AND t.unmet = 0";

/// Queue order over `tasks t`: job priority desc, job age asc, task index asc (the order of the
/// index `tasks_claim`).
const QUEUE_ORDER_T: &str = "t.job_priority DESC, t.job_created_at ASC, t.job_id ASC, t.idx ASC";

/// What a claim sets on the task it takes, each argument the SQL of a value: the status
/// (`claimed`, or `running` when the task starts in the same statement, `auto_start`) and the
/// start time, agent, time, lease id, lease length (ms, never past the deadline),
/// `claim`/`offer`, request id.
#[allow(clippy::too_many_arguments)]
fn claim_assignments(
    status: &str,
    started_at: &str,
    agent: &str,
    now: &str,
    lease: &str,
    lease_ms: &str,
    via: &str,
    request: &str,
) -> String {
    format!(
        "status = {status}, agent_id = {agent}, claimed_at = {now}, started_at = {started_at}, \
         deadline = {now} + timeout_secs * 1000, lease_id = {lease}, \
         lease_expires_at = {now} + CASE WHEN timeout_secs * 1000 < {lease_ms} THEN timeout_secs * 1000 ELSE {lease_ms} END, \
         via = {via}, claim_request_id = {request}, heartbeat_secs = NULL, deliveries = deliveries + 1, \
         progress = 0, progress_message = NULL, updated_at = {now}"
    )
}

/// The sizes a set statement is written for (its rows beyond the real ones are NULL and match
/// nothing): a few texts to prepare and cache, not one per batch size.
pub const SET_SIZES: [usize; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

/// The set size for `n` rows: the smallest of [`SET_SIZES`] that holds them (`None` past the
/// largest).
pub fn set_size(n: usize) -> Option<usize> {
    SET_SIZES.iter().position(|&s| s >= n)
}

/// The claim for several agents at once ([`task_claim_many_sql`]), rendered once per backend,
/// form and size (`set_size`).
pub fn task_claim_many(backend: Backend, size: usize) -> &'static str {
    static SQL: PerSize = PER_SIZE;
    per_size(&SQL, backend, size, task_claim_many_sql)
}

/// `n` rows of a set statement's `VALUES`, one placeholder of each of `types` a row, numbered
/// from `$2` (`$1` is the time), each cast to its type; `rank`: each row starts with its number
/// from 1. `values_rows(2, true, &["TEXT"])` is `(1, CAST($2 AS TEXT)), (2, CAST($3 AS TEXT))`.
fn values_rows(n: usize, rank: bool, types: &[&str]) -> String {
    (0..n)
        .map(|k| {
            let mut cells: Vec<String> = Vec::with_capacity(types.len() + 1);
            if rank {
                cells.push((k + 1).to_string());
            }
            for (i, t) in types.iter().enumerate() {
                cells.push(format!("CAST(${} AS {t})", 2 + k * types.len() + i));
            }
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Set statements rendered once per backend and size.
type PerSize = [[std::sync::OnceLock<String>; SET_SIZES.len()]; 2];
#[allow(clippy::declare_interior_mutable_const)] // only ever copied into a `static`
const PER_SIZE: PerSize = [const { [const { std::sync::OnceLock::new() }; SET_SIZES.len()] }; 2];

/// The statement for set size `size` (an index of [`SET_SIZES`]), rendered by `render` once.
fn per_size(
    cache: &'static PerSize,
    backend: Backend,
    size: usize,
    render: fn(Backend, usize) -> String,
) -> &'static str {
    let size = size.min(SET_SIZES.len() - 1);
    cache[usize::from(backend == Backend::Postgres)][size]
        .get_or_init(|| render(backend, SET_SIZES[size]))
}

/// The claim ([`task_claim_sql`]) for up to `n` agents in one statement: the next `n` ready
/// tasks in queue order, the first to the first agent, the second to the second, and so on, as
/// that many claims one after another would hand them out, at time `$1`. Agent `k` (from 0) is
/// `$(2 + 5k)`, with lease id `$(3 + 5k)`, status `$(4 + 5k)` (`claimed`, or `running` to
/// start the task too), lease length `$(5 + 5k)` ms and delivery `$(6 + 5k)` (`claim` or
/// `offer`); NULL agents take nothing.
///
/// It hands out only the run of tasks before the first that has an exclusive key or `requires`
/// capabilities that some agent of the set has: whether such a task may go to an agent depends
/// on that agent or on the claims before it, which the one-at-a-time claim decides. (Tasks
/// that no agent of the set may take are passed over, as each of their claims would.) The
/// agents left over claim one at a time. (Claims one after another would also find the tasks a completion in between made
/// ready; callers that complete first claim this way only when no completion can.)
fn task_claim_many_sql(backend: Backend, n: usize) -> String {
    // The chosen rows are named by SQLite's rowid (the claim index holds it), so that the
    // update finds each at once rather than through the index of task ids.
    let (lock, key) = match backend {
        Backend::Sqlite => ("", "rowid"),
        Backend::Postgres => (" FOR NO KEY UPDATE SKIP LOCKED", "id"),
    };
    let (jobs, job_match, returning) = with_job(backend);
    // A claim unblocks nothing, so its job's `has_deps` goes unread: SQLite, where it costs a
    // lookup of the job per row, returns the task alone.
    let returning = match backend {
        Backend::Sqlite => TASK_COLUMNS.to_string(),
        Backend::Postgres => returning,
    };
    // Some agent of the set has every capability `t` requires.
    let any_may = match backend {
        Backend::Sqlite => {
            "EXISTS (SELECT 1 FROM agents a WHERE a.id IN (SELECT column2 FROM v) AND NOT EXISTS \
             (SELECT 1 FROM json_each(t.requires) r WHERE r.value NOT IN \
             (SELECT c.value FROM json_each(a.capabilities) c)))"
        }
        Backend::Postgres => {
            "EXISTS (SELECT 1 FROM agents a WHERE a.id IN (SELECT column2 FROM v) \
             AND t.requires::jsonb <@ a.capabilities::jsonb)"
        }
    };
    let set = claim_assignments(
        "v.column4",
        "CASE WHEN v.column4 = 'running' THEN $1 END",
        "v.column2",
        "$1",
        "v.column3",
        "v.column5",
        "v.column6",
        "NULL",
    );
    let agents = values_rows(n, true, &["TEXT", "TEXT", "TEXT", "BIGINT", "TEXT"]);
    format!(
        "WITH v AS (VALUES {agents}) UPDATE tasks SET {set} \
         FROM (SELECT c.c_id, c.c_n FROM (SELECT t.c_id, ROW_NUMBER() OVER w AS c_n, \
         SUM(CASE WHEN t.requires IS NULL AND t.task_key IS NULL THEN 0 ELSE 1 END) OVER w AS c_stop \
         FROM (SELECT t.{key} AS c_id, t.requires, t.task_key, t.job_priority, t.job_created_at, t.job_id, t.idx \
         FROM tasks t WHERE {READY_T} AND +t.available_at <= $1 \
         AND (t.requires IS NULL OR {any_may}) \
         ORDER BY {QUEUE_ORDER_T} LIMIT {n}{lock}) t \
         WINDOW w AS (ORDER BY {QUEUE_ORDER_T} ROWS UNBOUNDED PRECEDING)) c WHERE c.c_stop = 0) p \
         JOIN v ON v.column1 = p.c_n{jobs} \
         WHERE tasks.{key} = p.c_id AND v.column2 IS NOT NULL AND {job_match} \
         RETURNING {returning}"
    )
}

/// What the set statements join and match and return for each task's job: on PostgreSQL its
/// row as `j_…` columns (the job counters' copy, `counters.rs`, starts from it instead of a
/// statement of its own), and its `has_deps` as `job_has_deps`; SQLite, whose `RETURNING` sees
/// only the table it changes, returns `job_has_deps` alone, and its counters start as always.
fn with_job(backend: Backend) -> (&'static str, &'static str, String) {
    match backend {
        Backend::Sqlite => (
            "",
            "1 = 1",
            format!(
                "{TASK_COLUMNS}, (SELECT j.has_deps FROM jobs j WHERE j.id = tasks.job_id) AS job_has_deps"
            ),
        ),
        Backend::Postgres => {
            let tasks = TASK_COLUMNS
                .split(',')
                .map(|c| format!("tasks.{}", c.trim()))
                .collect::<Vec<_>>()
                .join(", ");
            let job = JOB_STATE_COLUMNS
                .split(',')
                .map(|c| match c.trim().rsplit_once(" AS ") {
                    Some((expr, name)) => format!("{expr} AS j_{name}"),
                    None => format!("j.{0} AS j_{0}", c.trim()),
                })
                .collect::<Vec<_>>()
                .join(", ");
            (
                ", jobs j",
                "j.id = tasks.job_id",
                format!("{tasks}, j.has_deps AS job_has_deps, {job}"),
            )
        }
    }
}

/// What finishing a task sets besides its status, each argument the SQL of a value: terminal,
/// out of its lease (the lease id stays, naming the delivery that finished it).
pub fn finish_assignments(result: &str, now: &str) -> String {
    format!(
        "result = {result}, progress = 100, finished_at = {now}, updated_at = {now}, \
         lease_expires_at = NULL, claim_request_id = NULL"
    )
}

/// The hot completion (a work task without an exclusive key that its agent holds, on the lease
/// named if any) of up to `n` tasks in one statement, at time `$1`: task `k` (from 0) is `$(2 + 4k)`, its agent
/// `$(3 + 4k)`, its result `$(4 + 4k)`, the lease `$(5 + 4k)` (NULL tasks match nothing). Each
/// row comes back with its job's `has_deps` as `job_has_deps` (and on PostgreSQL its job's row,
/// see `with_job`). A keyed task is completed by its own operation, in its turn: its key, once
/// free, may go to the claim of an operation before it, whose event would then come first.
pub fn task_complete_many(backend: Backend, size: usize) -> &'static str {
    static SQL: PerSize = PER_SIZE;
    per_size(&SQL, backend, size, task_complete_many_sql)
}

/// The start of up to `n` claimed tasks (no heartbeat lease: see `tasks::task_start`) in one
/// statement, at time `$1`: task `k` (from 0) is `$(2 + 3k)`, its agent `$(3 + 3k)`, the lease
/// `$(4 + 3k)` (NULL tasks match nothing).
pub fn task_start_many(backend: Backend, size: usize) -> &'static str {
    static SQL: PerSize = PER_SIZE;
    per_size(&SQL, backend, size, task_start_many_sql)
}

/// The same text on both backends.
fn task_start_many_sql(_: Backend, n: usize) -> String {
    let tasks = values_rows(n, false, &["TEXT"; 3]);
    format!(
        "UPDATE tasks SET {} FROM (VALUES {tasks}) v \
         WHERE tasks.id = v.column1 AND tasks.agent_id = v.column2 AND tasks.status = 'claimed' \
         AND (v.column3 IS NULL OR tasks.lease_id = v.column3) \
         RETURNING {TASK_COLUMNS}",
        START_ASSIGNMENTS.replace("$3", "$1")
    )
}

/// What starting a task sets (no heartbeat lease), at time `$3`.
pub const START_ASSIGNMENTS: &str = "status = 'running', started_at = $3, updated_at = $3";

fn task_complete_many_sql(backend: Backend, n: usize) -> String {
    let (jobs, job_match, returning) = with_job(backend);
    let set = finish_assignments("v.column3", "$1");
    let tasks = values_rows(n, false, &["TEXT"; 4]);
    format!(
        "UPDATE tasks SET status = 'completed', {set} FROM (VALUES {tasks}) v{jobs} \
         WHERE tasks.id = v.column1 AND tasks.agent_id = v.column2 AND tasks.status IN {ACTIVE_TASKS} \
         AND tasks.task_type = 'work' AND (v.column4 IS NULL OR tasks.lease_id = v.column4) \
         AND tasks.task_key IS NULL AND {job_match} RETURNING {returning}"
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
    fn set_rows_number_their_placeholders_in_order() {
        assert_eq!(
            values_rows(2, true, &["TEXT"]),
            "(1, CAST($2 AS TEXT)), (2, CAST($3 AS TEXT))"
        );
        assert_eq!(
            values_rows(2, false, &["TEXT", "BIGINT"]),
            "(CAST($2 AS TEXT), CAST($3 AS BIGINT)), (CAST($4 AS TEXT), CAST($5 AS BIGINT))"
        );
    }

    #[test]
    fn set_statements_on_postgres_return_the_job_beside_the_task() {
        let (jobs, matched, returning) = with_job(Backend::Postgres);
        assert_eq!((jobs, matched), (", jobs j", "j.id = tasks.job_id"));
        assert!(
            returning.starts_with("tasks.id, tasks.job_id, "),
            "{returning}"
        );
        for column in [
            "CAST(NULL AS TEXT) AS j_job_spec",
            "j.status AS j_status",
            "j.has_deps AS j_has_deps",
            "j.has_deps AS job_has_deps",
        ] {
            assert!(returning.contains(column), "{column}: {returning}");
        }
        assert_eq!(set_size(3), Some(2));
        assert_eq!(SET_SIZES[set_size(512).unwrap()], 512);
        assert_eq!(set_size(513), None);
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
