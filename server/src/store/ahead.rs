//! Work a batch does ahead of its operations, in set statements. The operations of one batch
//! were all submitted before any was answered, so any order of them is one they could have
//! run in; the batch runs the hot completions of all of them first, in one statement, their
//! starts in another, and the next tasks those agents asked for in one more
//! (`batch::run_batch`). Each operation then runs as always, in its turn, and finds its row
//! changed already (`WriteCtx::take_ahead`) instead of changing it with a statement of its
//! own: its checks, events and counters are its own, as before. On PostgreSQL that is a few round trips for a
//! batch's completions, starts and claims instead of one or two for each task.
//!
//! Rows changed ahead are writes of the operation that takes them: one refused after taking
//! them rolls its batch back, and a batch whose operations left any untaken does not commit.

use std::collections::{HashMap, HashSet, VecDeque};

use uuid::Uuid;

use super::db::{DbError, Exec, FromRow, Value as DbValue};
use super::rows::{JobRow, TaskRow};
use super::sql;
use super::tasks::{NextTask, Via};
use super::WriteCtx;

/// What an operation will do first, told to its batch when it is queued.
#[derive(Debug, Clone)]
pub(crate) enum Hint {
    /// Complete a work task (the statement of `tasks::task_complete_only`), then take the
    /// agent's next task when it asked for one.
    Complete {
        task: Uuid,
        agent: Uuid,
        lease: Option<Uuid>,
        /// The result as the column holds it.
        result: String,
        next: Option<NextTask>,
    },
    /// Start a claimed task without a heartbeat lease (the statement of `tasks::task_start`).
    Start {
        task: Uuid,
        agent: Uuid,
        lease: Option<Uuid>,
    },
}

impl Hint {
    /// The task the hint changes, and whether it completes it (else starts it).
    fn target(&self) -> (Uuid, bool) {
        match self {
            Hint::Complete { task, .. } => (*task, true),
            Hint::Start { task, .. } => (*task, false),
        }
    }
}

/// How a claim delivers its task: by REST or offer, and whether it starts it.
pub(crate) type ClaimKind = (Via, bool);

/// The claim kind an agent asked for as its next task.
pub(crate) fn kind_of(next: NextTask) -> ClaimKind {
    match next {
        NextTask::Claim => (Via::Claim, false),
        NextTask::Offer => (Via::Offer, false),
        NextTask::Start => (Via::Offer, true),
    }
}

/// Rows changed ahead, until their operations take them.
#[derive(Default)]
pub(crate) struct Ahead {
    /// Task id → the task as its completion left it.
    finished: HashMap<Uuid, TaskRow>,
    /// Task id → the task as its start left it.
    started: HashMap<Uuid, TaskRow>,
    /// (Agent, kind) → the tasks claimed for it, in queue order, each with its lease id.
    claimed: HashMap<(Uuid, ClaimKind), VecDeque<(TaskRow, Uuid)>>,
}

impl Ahead {
    pub(crate) fn clear(&mut self) {
        self.finished.clear();
        self.started.clear();
        self.claimed.clear();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.finished.is_empty() && self.started.is_empty() && self.claimed.is_empty()
    }

    /// The completion of `task` done ahead, if it was done for this agent and lease.
    pub(crate) fn take_finished(
        &mut self,
        task: Uuid,
        agent: Uuid,
        lease: Option<Uuid>,
    ) -> Option<TaskRow> {
        take_for(&mut self.finished, task, agent, lease)
    }

    /// The start of `task` done ahead, if it was done for this agent and lease.
    pub(crate) fn take_started(
        &mut self,
        task: Uuid,
        agent: Uuid,
        lease: Option<Uuid>,
    ) -> Option<TaskRow> {
        take_for(&mut self.started, task, agent, lease)
    }

    /// The next task claimed ahead for the agent, of this kind.
    pub(crate) fn take_claimed(&mut self, agent: Uuid, kind: ClaimKind) -> Option<(TaskRow, Uuid)> {
        let queue = self.claimed.get_mut(&(agent, kind))?;
        let next = queue.pop_front();
        if queue.is_empty() {
            self.claimed.remove(&(agent, kind));
        }
        next
    }

    pub(crate) fn has_claimed(&self, agent: Uuid, kind: ClaimKind) -> bool {
        self.claimed.contains_key(&(agent, kind))
    }
}

/// The row of `task` in `rows` if it was changed for this agent and lease (a hint of another
/// agent or delivery for the same task runs on its own, and is refused as before).
fn take_for(
    rows: &mut HashMap<Uuid, TaskRow>,
    task: Uuid,
    agent: Uuid,
    lease: Option<Uuid>,
) -> Option<TaskRow> {
    let row = rows.get(&task)?;
    let agent = agent.to_string();
    let lease = lease.map(|l| l.to_string());
    if row.agent_id.as_deref() != Some(agent.as_str())
        || lease.is_some_and(|l| row.lease_id.as_deref() != Some(l.as_str()))
    {
        return None;
    }
    rows.remove(&task)
}

/// Runs ahead what the batch's hints say: their completions in one statement, their starts in
/// one more (the first hint of each kind for a task: another one for the same task runs on its
/// own), then the next tasks of the agents whose completion was done and who asked for one.
/// Claims are done ahead only when no completion of the batch can make a task ready (no
/// completed task's job has dependency edges): otherwise each claim must see the completions
/// before it.
pub(crate) async fn prepare(ctx: &mut WriteCtx, hints: &[&Hint]) -> Result<(), DbError> {
    ctx.ahead.clear();
    let mut seen = HashSet::new();
    let hints: Vec<&Hint> = hints
        .iter()
        .copied()
        .filter(|h| seen.insert(h.target()))
        .collect();
    let mut completions = Vec::new();
    let mut starts = Vec::new();
    for hint in &hints {
        match hint {
            Hint::Complete {
                task,
                agent,
                lease,
                result,
                ..
            } => completions.push(vec![
                (*task).into(),
                (*agent).into(),
                result.as_str().into(),
                (*lease).into(),
            ]),
            Hint::Start { task, agent, lease } => {
                starts.push(vec![(*task).into(), (*agent).into(), (*lease).into()])
            }
        }
    }
    let mut unblocks = false;
    let mut jobs = Vec::new();
    let backend = ctx.backend;
    let complete = move |n| sql::task_complete_many(backend, n);
    for row in run_set(
        ctx,
        complete,
        vec![ctx.now.into()],
        completions,
        &[TEXT_NULL; 4],
    )
    .await?
    {
        unblocks |= row.get::<i64>("job_has_deps")? != 0;
        jobs.extend(job_of(&row)?);
        let task = TaskRow::from_row_owned(row)?;
        ctx.ahead.finished.insert(id_of(&task)?, task);
    }
    let start = move |n| sql::task_start_many(backend, n);
    for row in run_set(ctx, start, vec![ctx.now.into()], starts, &[TEXT_NULL; 3]).await? {
        let task = TaskRow::from_row_owned(row)?;
        ctx.ahead.started.insert(id_of(&task)?, task);
    }
    if !unblocks {
        claim_next_ahead(ctx, &hints, &mut jobs).await?;
    }
    // The jobs' rows as these statements read them (PostgreSQL): the counters' copies start
    // from them (see `counters.rs`), so the operations' first changes cost no statement.
    for job in jobs {
        ctx.db.keep_read(job);
    }
    Ok(())
}

/// The next tasks of the agents whose completion was done ahead and who asked for one.
async fn claim_next_ahead(
    ctx: &mut WriteCtx,
    hints: &[&Hint],
    jobs: &mut Vec<JobRow>,
) -> Result<(), DbError> {
    // In the operations' order, up to the first that asked for its next task but whose
    // completion was not done ahead: that one claims in its own turn (its completion may fail,
    // or free a key), and so must every one after it, or they would take the tasks it should.
    let mut wanted: Vec<(Uuid, ClaimKind)> = Vec::new();
    for hint in hints {
        let Hint::Complete {
            task,
            agent,
            next: Some(next),
            ..
        } = hint
        else {
            continue;
        };
        if !ctx.ahead.finished.contains_key(task) {
            break;
        }
        wanted.push((*agent, kind_of(*next)));
    }
    jobs.extend(claim_ahead(ctx, &wanted).await?);
    Ok(())
}

/// The job's row returned beside a task's (`j_…` columns, PostgreSQL), if any.
fn job_of(row: &super::db::Row) -> Result<Option<JobRow>, DbError> {
    let job = row.with_prefix("j_");
    match job.is_empty() {
        true => Ok(None),
        false => JobRow::from_row(&job).map(Some),
    }
}

const TEXT_NULL: DbValue = DbValue::Text(None);
/// A claim's row of arguments that claims nothing: agent, lease, status, lease length, delivery.
const CLAIM_PADDING: [DbValue; 5] = [
    TEXT_NULL,
    TEXT_NULL,
    TEXT_NULL,
    DbValue::Int(None),
    TEXT_NULL,
];

fn id_of(task: &TaskRow) -> Result<Uuid, DbError> {
    Uuid::parse_str(&task.id).map_err(|_| DbError::Decode("id".into(), "a uuid"))
}

/// Runs a set statement (`sql_of(size)`, for one of `sql::SET_SIZES`) over `rows` of arguments,
/// after the arguments `head`: as few statements as the largest size allows, each padded to its
/// size with `padding` rows (NULLs of each column's type: PostgreSQL prepares a statement with
/// the types of its first arguments). The rows it returns.
async fn run_set(
    ctx: &mut WriteCtx,
    sql_of: impl Fn(usize) -> &'static str + Send,
    head: Vec<DbValue>,
    rows: Vec<Vec<DbValue>>,
    padding: &[DbValue],
) -> Result<Vec<super::db::Row>, DbError> {
    let mut out = Vec::new();
    let most = sql::SET_SIZES[sql::SET_SIZES.len() - 1];
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<DbValue>> = rows.by_ref().take(most).collect();
        let Some(size) = sql::set_size(chunk.len()) else {
            break;
        };
        let mut args = head.clone();
        let pad = sql::SET_SIZES[size] - chunk.len();
        args.extend(chunk.into_iter().flatten());
        for _ in 0..pad {
            args.extend(padding.iter().cloned());
        }
        out.extend(ctx.db.fetch(sql_of(size), &args).await?);
    }
    Ok(out)
}

/// Claims for `agents` in one statement (`sql::task_claim_many`), in their order, and keeps
/// what each got for its claim to take (`WriteCtx::take_ahead`). Agents it cannot serve
/// (the run of plain tasks ended) get nothing here and claim on their own. The rows of the
/// claimed tasks' jobs, where the statement returns them (see `job_of`).
pub(crate) async fn claim_ahead(
    ctx: &mut WriteCtx,
    agents: &[(Uuid, ClaimKind)],
) -> Result<Vec<JobRow>, DbError> {
    let mut jobs = Vec::new();
    let mut leases: HashMap<String, (Uuid, ClaimKind)> = HashMap::with_capacity(agents.len());
    let rows: Vec<Vec<DbValue>> = agents
        .iter()
        .map(|&(agent, (via, start))| {
            let lease = Uuid::new_v4();
            leases.insert(lease.to_string(), (agent, (via, start)));
            let lease_ms = match via {
                Via::Claim => ctx.rules.claim_lease_ms,
                Via::Offer => ctx.rules.offer_lease_ms,
            };
            let status = match start {
                false => "claimed",
                true => "running",
            };
            vec![
                agent.into(),
                lease.into(),
                status.into(),
                lease_ms.into(),
                via.as_str().into(),
            ]
        })
        .collect();
    let backend = ctx.backend;
    let sql_of = move |n| sql::task_claim_many(backend, n);
    for row in run_set(ctx, sql_of, vec![ctx.now.into()], rows, &CLAIM_PADDING).await? {
        jobs.extend(job_of(&row)?);
        let row = TaskRow::from_row_owned(row)?;
        let Some((lease, (agent, kind))) = row
            .lease_id
            .as_deref()
            .and_then(|l| leases.get_key_value(l))
            .and_then(|(l, a)| Some((Uuid::parse_str(l).ok()?, *a)))
        else {
            return Err(DbError::Decode(
                "lease_id".into(),
                "a lease this claim made",
            ));
        };
        ctx.ahead
            .claimed
            .entry((agent, kind))
            .or_default()
            .push_back((row, lease));
    }
    Ok(jobs)
}
