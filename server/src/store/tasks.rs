//! Task operations: the claim (each one a delivery with a lease of its own), the assigned
//! agent's start/progress/complete/fail, a plan landing (as work tasks or for review), and the sweeps (expired
//! leases and deadlines, heartbeats). Inserting tasks and ending a delivery (release, failed
//! attempt, the delivery limit, retry backoff) are steps in `steps/tasks.rs`.
//!
//! The rules themselves (which lease may report, the backoff, the delivery limit) are plain
//! functions of `agora_shared::lease`; this file and its steps apply them in SQL.

use agora_shared::{
    parse_plan, running_lease_expiry, ClaimedTask, EventData, FinishedWithNext, JobEvent,
    JobStatus, PlanProposed, PlannedTask, Task, TaskAction, TaskClaimed, TaskProgressed,
    TaskStarted, TaskStatus, TaskType,
};
use serde_json::Value;
use uuid::Uuid;

use super::db::{Exec, ExecExt, Value as DbValue};
use super::error::{Result, StoreError};
use super::events::{event_insert, EventDraft};
use super::rows::{parse, u32_of, uuid, JobRow, TaskRow};
use super::sql::{self, ACTIVE_TASKS, FINISHED_TASKS, TASK_COLUMNS};
use super::steps::agents::{agent_name, agent_registered, agent_seen, agents_registered};
use super::steps::graph::{claim_inputs, deps_completed};
use super::steps::jobs::{job_fetch, job_task_changed, job_transition};
use super::steps::plans::plan_work_tasks;
use super::steps::tasks::{
    completed_event, event_for, task_fail_attempt, task_fetch, task_for_agent, task_release,
    tasks_insert, FailCause,
};
use super::{Store, WriteCtx};
use crate::args;

/// How a task was delivered: its lease clock, and what becomes of it when its agent goes quiet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Via {
    /// A REST claim: `CLAIM_LEASE_SECS` until started; a started task keeps its running deadline
    /// (or its heartbeat lease) however long the agent is silent.
    Claim,
    /// A WebSocket offer: the offer TTL until accepted; the socket is the heartbeat, so a dead
    /// socket or a stale agent releases it.
    Offer,
}

impl Via {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Via::Claim => "claim",
            Via::Offer => "offer",
        }
    }
}

pub struct TaskClaimParams {
    pub agent_id: Uuid,
    /// The same id from the same agent while its lease lives answers the same delivery.
    pub request_id: Option<String>,
}

pub struct TaskStartParams {
    pub agent_id: Uuid,
    pub task_id: Uuid,
    pub lease_id: Option<Uuid>,
    pub heartbeat_secs: Option<u64>,
}

pub struct TaskProgressParams {
    pub agent_id: Uuid,
    pub task_id: Uuid,
    pub progress: u32,
    pub message: Option<String>,
    pub extend_secs: Option<u64>,
    pub lease_id: Option<Uuid>,
}

pub struct TaskCompleteParams {
    pub agent_id: Uuid,
    pub task_id: Uuid,
    pub result: Value,
    pub lease_id: Option<Uuid>,
    pub next: Option<NextTask>,
}

pub struct TaskFailParams {
    pub agent_id: Uuid,
    pub task_id: Uuid,
    pub error: String,
    pub retryable: bool,
    pub lease_id: Option<Uuid>,
    pub next: Option<NextTask>,
}

/// The agent's next task, taken in the same commit as the report that finished its last one:
/// one round trip per task for a busy agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextTask {
    /// A REST claim (`?next=true`), as `POST /api/tasks/claim` would make it.
    Claim,
    /// A WebSocket offer, to be accepted (the dispatcher's, for agents without `auto_start`).
    Offer,
    /// A WebSocket offer for an agent that asked for `auto_start`: claimed and started.
    Start,
}

/// A task an agent lets go of, named by the delivery it ends: a release meant for an earlier
/// delivery of the same task finds a different lease and does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub task_id: Uuid,
    pub lease_id: Uuid,
}

impl Held {
    /// The delivery a claim made.
    pub fn of(claimed: &ClaimedTask) -> Held {
        Held {
            task_id: claimed.task.id,
            lease_id: claimed.lease_id,
        }
    }
}

/// A REST claim: the agent's earlier delivery when `request_id` names one whose lease lives,
/// else the next available task.
pub(crate) async fn task_claim(
    ctx: &mut WriteCtx,
    p: TaskClaimParams,
) -> Result<Option<ClaimedTask>> {
    agent_seen(ctx, p.agent_id).await?;
    if let Some(request) = p.request_id.as_deref() {
        if let Some(again) = task_claim_again(ctx, p.agent_id, request).await? {
            return Ok(Some(again));
        }
    }
    if !agent_registered(ctx, p.agent_id).await? {
        return Err(StoreError::not_found("agent", p.agent_id));
    }
    task_claim_next(ctx, p.agent_id, Via::Claim, p.request_id, false).await
}

/// The delivery an earlier claim with this `request_id` made, while its lease lives.
async fn task_claim_again(
    ctx: &mut WriteCtx,
    agent: Uuid,
    request: &str,
) -> Result<Option<ClaimedTask>> {
    let row: Option<TaskRow> = ctx
        .db
        .opt(
            &format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE agent_id = $1 AND claim_request_id = $2 \
                 AND status IN {ACTIVE_TASKS} \
                 AND (lease_expires_at > $3 OR (status = 'running' AND heartbeat_secs IS NULL AND deadline > $3))"
            ),
            args![agent, request, ctx.now],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let Some(lease_id) = row.lease()? else {
        return Ok(None);
    };
    let job = job_fetch(ctx, uuid(&row.job_id)?).await?;
    let (inputs, inputs_omitted) = claim_inputs(ctx, &row).await?;
    Ok(Some(ClaimedTask {
        task: row.into_task()?,
        job: job.summary()?,
        lease_id,
        inputs,
        inputs_omitted,
    }))
}

/// What a batch of dispatcher claims got: one entry per agent asked, in order (`None` for an
/// agent that is no longer registered, or once nothing was left).
pub struct ClaimBatch {
    pub claimed: Vec<Option<ClaimedTask>>,
    /// The queue ran out of available work during the batch (for the capabilities asked).
    pub queue_empty: bool,
}

/// Claims for several agents in one transaction (the dispatcher's batch), in order. Each entry
/// gets at most one task; an agent unregistered meanwhile gets none. Work one agent cannot take
/// another may (capabilities), so an empty answer ends the batch only for agents with the same
/// capabilities; the queue counts as empty when a claim found nothing and none after it found
/// anything.
pub(crate) async fn task_claim_many(
    ctx: &mut WriteCtx,
    agents: Vec<(Uuid, bool)>,
) -> Result<ClaimBatch> {
    let mut batch = ClaimBatch {
        claimed: Vec::with_capacity(agents.len()),
        queue_empty: false,
    };
    // Every agent's row before any task or job row: the lock order of unregistering too.
    let ids: Vec<Uuid> = agents.iter().map(|(a, _)| *a).collect();
    let registered = agents_registered(ctx, &ids).await?;
    // The run of tasks any agent may take, in one statement (`ahead.rs`); the rest
    // one claim at a time. (For one agent the claim's own statement is the same and simpler:
    // an idle agent's wake waits for it.)
    let wanted: Vec<(Uuid, super::ahead::ClaimKind)> = agents
        .iter()
        .filter(|(a, _)| registered.contains_key(a))
        .map(|&(a, start)| (a, (Via::Offer, start)))
        .collect();
    if wanted.len() > 1 {
        for job in super::ahead::claim_ahead(ctx, &wanted).await? {
            ctx.db.keep_read(job);
        }
    }
    let mut starved: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for (agent, auto_start) in &agents {
        let Some(caps) = registered.get(agent) else {
            batch.claimed.push(None);
            continue;
        };
        let next = match auto_start {
            true => NextTask::Start,
            false => NextTask::Offer,
        };
        let ahead = ctx.ahead.has_claimed(*agent, super::ahead::kind_of(next));
        if starved.contains(caps.as_str()) && !ahead {
            batch.claimed.push(None);
            continue;
        }
        let claimed = task_take(ctx, *agent, next).await?;
        match claimed {
            None => {
                starved.insert(caps.as_str());
                batch.queue_empty = true;
            }
            // Work for these capabilities after others found none: ask again.
            Some(_) => batch.queue_empty = false,
        }
        batch.claimed.push(claimed);
    }
    Ok(batch)
}

/// The agent's next task, as it asked for it.
async fn task_take(ctx: &mut WriteCtx, agent: Uuid, next: NextTask) -> Result<Option<ClaimedTask>> {
    let via = match next {
        NextTask::Claim => Via::Claim,
        NextTask::Offer | NextTask::Start => Via::Offer,
    };
    task_claim_next(ctx, agent, via, None, next == NextTask::Start).await
}

/// The claim itself: the same statement for REST, long-poll and WebSocket dispatch. Each call
/// is a new delivery with its own lease. `start`: the task is started in the same statement
/// (`auto_start`), with the events of both steps.
async fn task_claim_next(
    ctx: &mut WriteCtx,
    agent_id: Uuid,
    via: Via,
    request_id: Option<String>,
    start: bool,
) -> Result<Option<ClaimedTask>> {
    let ahead = match request_id {
        None => ctx.take_ahead(|a| a.take_claimed(agent_id, (via, start))),
        Some(_) => None,
    };
    let (row, lease_id) = match ahead {
        Some(claimed) => claimed,
        None => {
            let lease_id = Uuid::new_v4();
            let lease_ms = match via {
                Via::Claim => ctx.rules.claim_lease_ms,
                Via::Offer => ctx.rules.offer_lease_ms,
            };
            let row: Option<TaskRow> = ctx
                .db
                .opt(
                    sql::task_claim(ctx.backend, start, !ctx.shared),
                    args![
                        agent_id,
                        ctx.now,
                        lease_id,
                        lease_ms,
                        via.as_str(),
                        request_id
                    ],
                )
                .await?;
            let Some(row) = row else { return Ok(None) };
            (row, lease_id)
        }
    };
    let job = job_task_changed(
        ctx,
        &row.job_id,
        row.task_type()?,
        Some(TaskStatus::Pending),
        TaskStatus::Claimed,
        None,
    )
    .await?;
    let data = EventData::TaskClaimed(TaskClaimed {
        index: row.index(),
        task_type: row.task_type()?,
        status: TaskStatus::Claimed,
        attempts: row.attempts(),
        deliveries: row.deliveries(),
        deadline: row.deadline.map(super::rows::ts),
    });
    event_insert(ctx, event_for(&row, data)?).await?;
    if start {
        agent_seen(ctx, agent_id).await?;
        let data = EventData::TaskStarted(TaskStarted {
            index: row.index(),
            task_type: row.task_type()?,
            status: TaskStatus::Running,
            heartbeat_secs: None,
        });
        event_insert(ctx, event_for(&row, data)?).await?;
    }
    let (inputs, inputs_omitted) = claim_inputs(ctx, &row).await?;
    Ok(Some(ClaimedTask {
        task: row.into_task()?,
        job: job.summary()?,
        lease_id,
        inputs,
        inputs_omitted,
    }))
}

/// Milliseconds of a count of seconds from outside, saturating.
fn secs_ms(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000)
}

pub(crate) async fn task_start(ctx: &mut WriteCtx, p: TaskStartParams) -> Result<Task> {
    // One statement on the hot path: the conditions are the checks. When it matches nothing,
    // the slow path says why (404, LEASE_LOST, 403 or 409). The running lease is the deadline
    // (left implicit: see `agora_shared::effective_lease_expiry`), or the heartbeat interval
    // when the agent asked for one.
    let started: Option<TaskRow> = match p.heartbeat_secs {
        None => match ctx.take_ahead(|a| a.take_started(p.task_id, p.agent_id, p.lease_id)) {
            Some(row) => Some(row),
            None => ctx.db
                .opt(
                    &format!(
                        "UPDATE tasks SET {} \
                         WHERE id = $1 AND agent_id = $2 AND status = 'claimed' AND ($4 IS NULL OR lease_id = $4) \
                         RETURNING {TASK_COLUMNS}",
                        sql::START_ASSIGNMENTS
                    ),
                    args![p.task_id, p.agent_id, ctx.now, p.lease_id],
                )
                .await?,
        },
        Some(heartbeat) => {
            let heartbeat_secs = i64::try_from(heartbeat).unwrap_or(i64::MAX);
            ctx.db
                .opt(
                    &format!(
                        "UPDATE tasks SET {}, heartbeat_secs = $5, \
                         lease_expires_at = CASE WHEN deadline < $3 + $6 THEN deadline ELSE $3 + $6 END \
                         WHERE id = $1 AND agent_id = $2 AND status = 'claimed' AND ($4 IS NULL OR lease_id = $4) \
                         RETURNING {TASK_COLUMNS}",
                        sql::START_ASSIGNMENTS
                    ),
                    args![p.task_id, p.agent_id, ctx.now, p.lease_id, heartbeat_secs, secs_ms(heartbeat)],
                )
                .await?
        }
    };
    let Some(row) = started else {
        task_for_agent(ctx, p.task_id, p.agent_id, TaskAction::Start, p.lease_id).await?;
        return Err(StoreError::InvalidState(format!(
            "task {} changed while starting; retry",
            p.task_id
        )));
    };
    let next = TaskStatus::Running;
    agent_seen(ctx, p.agent_id).await?;
    let data = EventData::TaskStarted(TaskStarted {
        index: row.index(),
        task_type: row.task_type()?,
        status: next,
        heartbeat_secs: p.heartbeat_secs,
    });
    event_insert(ctx, event_for(&row, data)?).await?;
    row.into_task()
}

pub(crate) async fn task_progress(ctx: &mut WriteCtx, p: TaskProgressParams) -> Result<Task> {
    let (row, next) =
        task_for_agent(ctx, p.task_id, p.agent_id, TaskAction::Progress, p.lease_id).await?;
    let deadline = match p.extend_secs {
        Some(extend) if i64::try_from(extend).unwrap_or(i64::MAX) > row.timeout_secs => {
            return Err(StoreError::invalid(
                "extend_secs",
                format!(
                    "may be at most the task's timeout_secs ({}), got {extend}",
                    row.timeout_secs
                ),
            ));
        }
        Some(extend) => ctx.now + secs_ms(extend),
        None => row.deadline.unwrap_or(ctx.now),
    };
    // Progress starts a claimed task (its claim lease ends: the running lease is the deadline,
    // left implicit) and renews a heartbeat lease.
    let lease_expires_at = row
        .heartbeat_secs
        .map(|h| running_lease_expiry(ctx.now, deadline, Some(h.saturating_mul(1000))));
    agent_seen(ctx, p.agent_id).await?;
    let row: TaskRow = ctx
        .db
        .one(
            &format!(
        "UPDATE tasks SET status = $2, progress = $3, progress_message = $4, deadline = $5, \
         started_at = COALESCE(started_at, $6), updated_at = $6, \
         lease_expires_at = COALESCE($7, lease_expires_at) \
         WHERE id = $1 RETURNING {TASK_COLUMNS}"
    ),
            args![
                &row.id,
                next.as_str(),
                i64::from(p.progress),
                p.message.clone(),
                deadline,
                ctx.now,
                lease_expires_at
            ],
        )
        .await?;
    let data = EventData::TaskProgress(TaskProgressed {
        index: row.index(),
        task_type: row.task_type()?,
        status: next,
        progress: p.progress,
        message: p.message.clone(),
    });
    event_insert(ctx, event_for(&row, data)?).await?;
    row.into_task()
}

/// Completes the task and, when the agent asked for it, takes its next in the same commit.
pub(crate) async fn task_complete(
    ctx: &mut WriteCtx,
    p: TaskCompleteParams,
) -> Result<FinishedWithNext> {
    let (agent, next) = (p.agent_id, p.next);
    let task = task_complete_only(ctx, p).await?;
    task_then(ctx, agent, task, next).await
}

/// The report is written; the agent's next task, if it asked for one.
async fn task_then(
    ctx: &mut WriteCtx,
    agent: Uuid,
    task: Task,
    next: Option<NextTask>,
) -> Result<FinishedWithNext> {
    let next = match next {
        Some(next) => task_take(ctx, agent, next).await?,
        None => None,
    };
    Ok(FinishedWithNext { task, next })
}

async fn task_complete_only(ctx: &mut WriteCtx, p: TaskCompleteParams) -> Result<Task> {
    let TaskCompleteParams {
        agent_id: agent,
        task_id: id,
        result,
        lease_id,
        next: _,
    } = p;
    // The hot path, a work task: one statement whose conditions are the checks (run ahead
    // for the whole batch, see `ahead.rs`, when the operation was queued with its hint).
    let done: Option<TaskRow> = match ctx.take_ahead(|a| a.take_finished(id, agent, lease_id)) {
        Some(row) => Some(row),
        None => ctx
        .db
        .opt(
            &format!(
                "UPDATE tasks SET status = 'completed', {} \
                 WHERE id = $1 AND agent_id = $2 AND status IN {ACTIVE_TASKS} AND task_type = 'work' \
                 AND ($5 IS NULL OR lease_id = $5) RETURNING {TASK_COLUMNS}",
                sql::finish_assignments("$3", "$4")
            ),
            args![id, agent, result.to_string(), ctx.now, lease_id],
        )
        .await?,
    };
    if let Some(row) = done {
        agent_seen(ctx, agent).await?;
        let next = TaskStatus::Completed;
        event_insert(ctx, completed_event(&row)?).await?;
        if row.task_key.is_some() {
            // Its key is free for the next holder.
            ctx.work_added();
        }
        // Claimed and running count alike, so either is the right "from".
        let job = job_task_changed(
            ctx,
            &row.job_id,
            TaskType::Work,
            Some(TaskStatus::Running),
            next,
            None,
        )
        .await?;
        deps_completed(ctx, &job, &row).await?;
        return row.into_task();
    }
    // A plan task (its result must be validated before anything is written), or a refusal.
    let (row, next) = task_for_agent(ctx, id, agent, TaskAction::Complete, lease_id).await?;
    let task_type = row.task_type()?;
    // Validate the plan before writing anything: a bad plan leaves the task running.
    let specs = match task_type {
        TaskType::Plan => Some(parse_plan(&result)?),
        TaskType::Work => None,
    };
    agent_seen(ctx, agent).await?;
    let from = row.status()?;
    let row: TaskRow = ctx
        .db
        .one(
            &format!(
                "UPDATE tasks SET status = $2, {} WHERE id = $1 RETURNING {TASK_COLUMNS}",
                sql::finish_assignments("$3", "$4")
            ),
            args![&row.id, next.as_str(), result.to_string(), ctx.now],
        )
        .await?;
    event_insert(ctx, completed_event(&row)?).await?;
    let job = job_task_changed(ctx, &row.job_id, task_type, Some(from), next, None).await?;
    if let Some(specs) = specs {
        plan_land(ctx, job, &row, specs).await?;
    }
    row.into_task()
}

/// Moves the job to `ready` with the plan's work tasks (after the plan task), or completes it
/// when the plan is empty. A job that asks for plan review gets no work task yet: the plan waits
/// for its reviewers (`plan.proposed`), and their quorum creates the tasks.
async fn plan_land(
    ctx: &mut WriteCtx,
    job: JobRow,
    plan: &TaskRow,
    specs: Vec<PlannedTask>,
) -> Result<()> {
    if job.status()? != JobStatus::Planning {
        return Ok(());
    }
    let work_tasks = specs.len();
    let job = job_transition(ctx, &job, JobEvent::PlanCompleted { work_tasks }, None).await?;
    if job.plan_under_review()? {
        let planner = match plan.agent_id.as_deref() {
            Some(id) => Some(agent_name(ctx, id).await?),
            None => None,
        };
        let data = EventData::PlanProposed(PlanProposed {
            round: u32_of(job.plans_rejected).saturating_add(1),
            work_tasks: u32::try_from(work_tasks).unwrap_or(u32::MAX),
            plan_approvals_required: u32_of(job.plan_approvals_required),
            planner,
        });
        let draft = EventDraft::new(data)
            .job(uuid(&job.id)?)
            .task(uuid(&plan.id)?)
            .agent(plan.agent_id.as_deref().map(uuid).transpose()?);
        event_insert(ctx, draft).await?;
        return Ok(());
    }
    let tasks = plan_work_tasks(plan, specs, &ctx.rules);
    tasks_insert(ctx, &job, tasks).await?;
    Ok(())
}

/// A failed attempt and, when the agent asked for it, its next task in the same commit.
pub(crate) async fn task_fail(ctx: &mut WriteCtx, p: TaskFailParams) -> Result<FinishedWithNext> {
    let (row, _) = task_for_agent(ctx, p.task_id, p.agent_id, TaskAction::Fail, p.lease_id).await?;
    agent_seen(ctx, p.agent_id).await?;
    let cause = FailCause::Reported {
        error: p.error,
        retryable: p.retryable,
    };
    let task = task_fail_attempt(ctx, row, cause).await?;
    task_then(ctx, p.agent_id, task, p.next).await
}

/// A WebSocket agent lets go of deliveries: offers (still `claimed`) go back to pending with no
/// attempt counted; accepted (`running`) tasks count a failed attempt when `charge`. A task no
/// longer on that delivery (finished, released, delivered again) is skipped.
pub(crate) async fn tasks_abandon(
    ctx: &mut WriteCtx,
    agent: Uuid,
    held: Vec<Held>,
    reason: &str,
    charge: bool,
) -> Result<usize> {
    let mut n = 0;
    for h in held {
        let Ok(row) = task_fetch(ctx, h.task_id).await else {
            continue;
        };
        if !row.is_held_on(agent, h.lease_id)? {
            continue;
        }
        match row.status()? {
            TaskStatus::Claimed => {
                task_release(ctx, row, reason).await?;
            }
            TaskStatus::Running if !charge => {
                task_release(ctx, row, reason).await?;
            }
            TaskStatus::Running => {
                task_fail_attempt(ctx, row, FailCause::Disconnected).await?;
            }
            _ => continue,
        }
        n += 1;
    }
    Ok(n)
}

/// The agent declines an offered (claimed, not started) task.
pub(crate) async fn task_decline(
    ctx: &mut WriteCtx,
    agent: Uuid,
    held: Held,
    reason: &str,
) -> Result<Task> {
    let (row, _) = task_for_agent(
        ctx,
        held.task_id,
        agent,
        TaskAction::Release,
        Some(held.lease_id),
    )
    .await?;
    task_release(ctx, row, reason).await
}

/// What the expiry sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExpirySweep {
    /// Past their running deadline: a failed attempt each.
    pub timed_out: usize,
    /// Offers and claims not started within their lease: released.
    pub leases_expired: usize,
    /// Started with `heartbeat_secs` and silent past it: a failed attempt each.
    pub heartbeats_lost: usize,
}

/// Deliveries past their lease end. A lease never outlasts its deadline, so one indexed range
/// finds them all: past the deadline, a failed attempt (timed out); an unstarted claim or offer
/// past its lease, back to pending; a started task past its heartbeat lease, a failed attempt.
pub(crate) async fn tasks_expire(ctx: &mut WriteCtx) -> Result<ExpirySweep> {
    let mut sweep = ExpirySweep::default();
    let lapsed: Vec<TaskRow> = ctx
        .db
        .all(
            &format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE status IN {ACTIVE_TASKS} AND lease_expires_at < $1 \
                 ORDER BY lease_expires_at LIMIT 10000{}",
                sql::for_update_skip_locked(ctx.backend)
            ),
            args![ctx.now],
        )
        .await?;
    for row in lapsed {
        if row.deadline.is_some_and(|d| d < ctx.now) {
            task_fail_attempt(ctx, row, FailCause::TimedOut).await?;
            sweep.timed_out += 1;
        } else if row.status()? == TaskStatus::Running && row.heartbeat_secs.is_none() {
            // Started without heartbeats: its lease is the deadline, which has not passed; the
            // row still records the claim's lease (see `effective_lease_expiry`). Catch it up.
            ctx.db
                .execute(
                    "UPDATE tasks SET lease_expires_at = deadline WHERE id = $1",
                    args![&row.id],
                )
                .await?;
        } else if row.status()? == TaskStatus::Claimed {
            let reason = match row.via.as_deref() {
                Some("offer") => "its offer's lease expired before it was accepted",
                _ => "its claim lease expired before the task was started",
            };
            task_release(ctx, row, reason).await?;
            sweep.leases_expired += 1;
        } else {
            task_fail_attempt(ctx, row, FailCause::HeartbeatLost).await?;
            sweep.heartbeats_lost += 1;
        }
    }
    Ok(sweep)
}

/// Renews the heartbeat leases of the agent's running tasks (those started with
/// `heartbeat_secs`), never past their deadline.
pub(crate) async fn tasks_heartbeat(ctx: &mut WriteCtx, agent: Uuid) -> Result<()> {
    ctx.db
        .execute(&heartbeat_sql(), args![agent, ctx.now])
        .await?;
    Ok(())
}

/// `status IN ACTIVE_TASKS` repeats the condition of the partial index `tasks_agent`
/// word for word: SQLite uses a partial index only when the query states its condition, and
/// `status = 'running'` alone made every heartbeat scan the whole table.
pub(crate) fn heartbeat_sql() -> String {
    format!(
        "UPDATE tasks SET lease_expires_at = CASE WHEN deadline < $2 + heartbeat_secs * 1000 \
         THEN deadline ELSE $2 + heartbeat_secs * 1000 END \
         WHERE agent_id = $1 AND status IN {ACTIVE_TASKS} AND status = 'running' \
         AND heartbeat_secs IS NOT NULL"
    )
}

/// Which tasks of a job to list.
pub struct TaskListParams {
    /// One job's tasks in index order; without it, every job's, newest first.
    pub job_id: Option<Uuid>,
    pub status: Option<TaskStatus>,
    pub agent_id: Option<Uuid>,
    pub limit: u32,
    pub offset: u64,
}

impl Store {
    pub async fn task_get(&self, id: Uuid) -> Result<Task> {
        let row: Option<TaskRow> = self
            .read_opt(
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"),
                args![id.to_string()],
            )
            .await?;
        let mut task = row
            .ok_or_else(|| StoreError::not_found("task", id))?
            .into_task()?;
        self.mark_waiting(std::slice::from_mut(&mut task)).await?;
        Ok(task)
    }

    /// Sets `waiting_for` on pending tasks that require capabilities no online agent has.
    pub(crate) async fn mark_waiting(&self, tasks: &mut [Task]) -> Result<()> {
        if !tasks
            .iter()
            .any(|t| t.status == TaskStatus::Pending && !t.requires.is_empty())
        {
            return Ok(());
        }
        let online = self.online_capabilities().await?;
        for t in tasks.iter_mut().filter(|t| t.status == TaskStatus::Pending) {
            t.waiting_for = agora_shared::waiting_for(&t.requires, &online);
        }
        Ok(())
    }

    /// In index order.
    pub async fn task_list(&self, p: TaskListParams) -> Result<agora_shared::Page<Task>> {
        if let Some(job) = p.job_id {
            self.job_get(job).await?;
        }
        let status = p.status.map(|s| s.as_str());
        let job = p.job_id.map(|j| j.to_string());
        let agent = p.agent_id.map(|a| a.to_string());
        const FILTER: &str = "($1 IS NULL OR job_id = $1) AND ($2 IS NULL OR status = $2) \
            AND ($3 IS NULL OR agent_id = $3)";
        let order = if p.job_id.is_some() {
            "idx"
        } else {
            "created_at DESC, id"
        };
        let (total,): (i64,) = self
            .read_one(
                &format!("SELECT COUNT(*) FROM tasks WHERE {FILTER}"),
                args![job.clone(), status, agent.clone()],
            )
            .await?;
        let rows: Vec<TaskRow> = self
            .read_all(
                &format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE {FILTER} ORDER BY {order} LIMIT $4 OFFSET $5"
                ),
                args![
                    job,
                    status,
                    agent,
                    i64::from(p.limit),
                    i64::try_from(p.offset).unwrap_or(i64::MAX)
                ],
            )
            .await?;
        let mut page = super::rows::page(rows, TaskRow::into_task, total, p.limit, p.offset)?;
        self.name_agents(&mut page.items).await?;
        self.mark_waiting(&mut page.items).await?;
        Ok(page)
    }

    /// Sets `agent_name` on the tasks that have an agent: one query for the whole page.
    async fn name_agents(&self, tasks: &mut [Task]) -> Result<()> {
        let ids: std::collections::BTreeSet<Uuid> =
            tasks.iter().filter_map(|t| t.agent_id).collect();
        if ids.is_empty() {
            return Ok(());
        }
        let args: Vec<DbValue> = ids.iter().map(|id| (*id).into()).collect();
        let rows: Vec<(String, String)> = self
            .read_all(
                &format!(
                    "SELECT id, name FROM agents WHERE id IN ({})",
                    sql::placeholders(ids.len(), 1)
                ),
                &args,
            )
            .await?;
        let names: std::collections::HashMap<String, String> = rows.into_iter().collect();
        for t in tasks {
            t.agent_name = t.agent_id.and_then(|a| names.get(&a.to_string()).cloned());
        }
        Ok(())
    }
}

impl Store {
    /// The agents that hold a claimed or running task (a draining server waits for its own).
    pub async fn agents_holding_tasks(&self) -> Result<std::collections::HashSet<Uuid>> {
        let rows: Vec<(Option<String>,)> = self
            .read_all(
                &format!("SELECT DISTINCT agent_id FROM tasks WHERE status IN {ACTIVE_TASKS}"),
                &[],
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(a,)| a.and_then(|a| a.parse().ok()))
            .collect())
    }

    /// Running tasks held by an agent, with their deliveries (a reconnecting WebSocket takes
    /// them over).
    pub async fn tasks_running_for_agent(&self, agent: Uuid) -> Result<Vec<Held>> {
        let rows: Vec<TaskRow> = self
            .read_all(
                // The IN term names the partial index `tasks_agent` (see heartbeat_sql).
                &format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE agent_id = $1 \
                     AND status IN {ACTIVE_TASKS} AND status = 'running'"
                ),
                args![agent.to_string()],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Held {
                    task_id: uuid(&row.id)?,
                    lease_id: row.delivery()?,
                })
            })
            .collect()
    }

    /// Why `held` is no longer the agent's delivery of the task, or `None` while it still is.
    pub async fn task_taken_back(&self, agent: Uuid, held: Held) -> Result<Option<String>> {
        let row: Option<TaskRow> = self
            .read_opt(
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"),
                args![held.task_id],
            )
            .await?;
        let Some(row) = row else {
            return Ok(Some("the task no longer exists".into()));
        };
        if row.is_held_on(agent, held.lease_id)? {
            return Ok(None);
        }
        Ok(Some(
            row.error
                .unwrap_or_else(|| "the task was taken back".into()),
        ))
    }

    /// When the next task waiting out its retry backoff becomes claimable, as a timer deadline
    /// (the dispatcher and long-polls sleep until then instead of polling); `None` when no task
    /// waits, or when it cannot be read (the callers' safety re-check covers that).
    pub async fn task_available_deadline(&self) -> Option<tokio::time::Instant> {
        match self.task_next_available_at().await {
            Ok(Some(at)) => {
                let wait = u64::try_from(at - self.clock().now_ms()).unwrap_or(0);
                Some(tokio::time::Instant::now() + std::time::Duration::from_millis(wait))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "could not read when backed-off work is available");
                None
            }
        }
    }

    /// When the next task waiting out its retry backoff becomes claimable (ms), if any.
    async fn task_next_available_at(&self) -> Result<Option<i64>> {
        let (at,): (Option<i64>,) = self
            .read_one(
                "SELECT MIN(available_at) FROM tasks WHERE status = 'pending' AND available_at > $1",
                args![self.clock().now_ms()],
            )
            .await?;
        Ok(at)
    }
}

impl Store {
    /// The finished tasks of a job without their specs and results: `(id, index, type,
    /// status)`, for the git writer to read in full only what its repository lacks.
    pub async fn tasks_finished_marks(
        &self,
        job_id: Uuid,
    ) -> Result<Vec<(Uuid, u32, TaskType, TaskStatus)>> {
        let rows: Vec<(String, i64, String, String)> = self
            .read_all(
                &format!(
                    "SELECT id, idx, task_type, status FROM tasks WHERE job_id = $1 AND status IN {FINISHED_TASKS}"
                ),
                args![job_id],
            )
            .await?;
        rows.into_iter()
            .map(|(id, idx, task_type, status)| {
                Ok((
                    uuid(&id)?,
                    u32_of(idx),
                    parse("task type", &task_type)?,
                    parse("task status", &status)?,
                ))
            })
            .collect()
    }

    /// An agent's name, registered or not (for commit authors).
    pub async fn agent_name(&self, id: Uuid) -> Result<Option<String>> {
        let row: Option<(String,)> = self
            .read_opt("SELECT name FROM agents WHERE id = $1", args![id])
            .await?;
        Ok(row.map(|(n,)| n))
    }

    /// Ids of every job, oldest first (start-up sync of the git history).
    pub async fn job_ids(&self) -> Result<Vec<Uuid>> {
        let rows: Vec<(String,)> = self
            .read_all("SELECT id FROM jobs ORDER BY created_at, id", &[])
            .await?;
        rows.iter().map(|(id,)| uuid(id)).collect()
    }
}

impl Store {
    /// These tasks of a job, if terminal (the git writer's incremental read; on SQLite it
    /// reads on a connection of its own, [`super::OwnReader`]).
    pub async fn tasks_finished_by_id(&self, job_id: Uuid, ids: &[Uuid]) -> Result<Vec<Task>> {
        let mut conn = self.reader().acquire().await?;
        finished_by_id(&mut *conn, job_id, ids).await
    }
}

/// [`Store::tasks_finished_by_id`] on the connection `db`, in the order they finished.
pub(crate) async fn finished_by_id<E: Exec + ?Sized>(
    db: &mut E,
    job_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<Task>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let mut params = vec![DbValue::from(job_id)];
        params.extend(chunk.iter().map(|id| DbValue::from(*id)));
        let rows: Vec<TaskRow> = db.all(&finished_by_id_sql(chunk.len()), &params).await?;
        for r in rows {
            out.push(r.into_task()?);
        }
    }
    out.sort_by_key(|t| (t.finished_at, t.index));
    Ok(out)
}

/// Tasks `$2..` of job `$1`, if terminal. Each is found by its id: the job check is an
/// expression (`job_id || ''`), which SQLite cannot look up in the `(job_id, idx)` index, so it
/// never walks every task of the job (which it chose for `job_id = $1`, reading a whole job of
/// 20,000 tasks on each of the git writer's flushes).
fn finished_by_id_sql(n: usize) -> String {
    format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE id IN ({}) AND (job_id || '') = $1 \
         AND status IN {FINISHED_TASKS}",
        sql::placeholders(n, 2)
    )
}

#[cfg(test)]
mod tests {
    use crate::store::db::Value;
    use crate::store::Store;

    /// SQLite's plan for `sql` on a fresh database: one line per step.
    async fn query_plan(sql: &str, args: &[Value]) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(None, &dir.path().join("t.db"))
            .await
            .unwrap();
        let plan: Vec<(i64, i64, i64, String)> = store
            .read_all(&format!("EXPLAIN QUERY PLAN {sql}"), args)
            .await
            .unwrap();
        plan.into_iter().map(|r| r.3).collect()
    }

    /// The git writer's read of the tasks a flush names looks each up by its id.
    #[tokio::test]
    async fn finished_tasks_are_read_by_id_not_by_job() {
        let sql = super::finished_by_id_sql(2);
        let plan = query_plan(&sql, crate::args!["job", "a", "b"]).await;
        assert!(
            plan.iter()
                .any(|p| p.contains("sqlite_autoindex_tasks_1 (id=?)")),
            "{plan:?}"
        );
    }

    /// The statements an agent's every heartbeat and reconnect run find its tasks through the
    /// index, not by scanning every task ever created.
    #[tokio::test]
    async fn per_agent_statements_use_the_agent_index() {
        let running = format!(
            "SELECT id FROM tasks WHERE agent_id = $1 \
             AND status IN {} AND status = 'running'",
            crate::store::sql::ACTIVE_TASKS
        );
        for (sql, args) in [
            (super::heartbeat_sql(), crate::args!["agent", 0i64]),
            (running, crate::args!["agent"]),
        ] {
            let plan = query_plan(&sql, args).await;
            assert!(
                plan.iter().any(|p| p.contains("USING INDEX tasks_agent")),
                "{sql}: {plan:?}"
            );
        }
    }

    /// The claim walks the index of ready tasks in queue order (no sort, no scan of the tasks
    /// waiting for dependencies), and counts a key's holders through the index of held keys.
    /// The same for the claim that starts its task.
    #[tokio::test]
    async fn the_claim_is_one_walk_of_the_ready_index() {
        for started in [false, true] {
            let claim = crate::store::sql::task_claim(crate::store::Backend::Sqlite, started, true);
            let args = crate::args!["agent", 0i64, "lease", 1000i64, "claim", None::<String>];
            let plan = query_plan(claim, args).await;
            assert!(
                plan.iter().any(|p| p.contains("USING INDEX tasks_claim")),
                "{plan:?}"
            );
            assert!(
                plan.iter()
                    .any(|p| p.contains("USING INDEX tasks_key_held")),
                "{plan:?}"
            );
            assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{plan:?}");
        }
    }

    /// The claim for many agents at once walks the same index in queue order and finds the
    /// rows it chose by their rowid (no second search through the ids' index); the set
    /// completion and start find each task by its id.
    #[tokio::test]
    async fn the_set_statements_walk_the_ready_index_and_find_tasks_by_id() {
        use crate::store::{sql, Backend};
        const BY_ID: &str = "SEARCH tasks USING INDEX sqlite_autoindex_tasks_1 (id=?)";
        const BY_ROWID: &str = "SEARCH tasks USING INTEGER PRIMARY KEY (rowid=?)";
        for started in [false, true] {
            let claim = sql::task_claim_many(Backend::Sqlite, 2);
            let status = if started { "running" } else { "claimed" };
            let args = crate::args![
                0i64, "a1", "l1", status, 1000i64, "offer", "a2", "l2", status, 1000i64, "offer"
            ];
            let plan = query_plan(claim, args).await;
            assert!(
                plan.iter().any(|p| p == "SCAN t USING INDEX tasks_claim"),
                "{plan:?}"
            );
            assert!(plan.iter().any(|p| p == BY_ROWID), "{plan:?}");
            assert!(!plan.iter().any(|p| p == BY_ID), "{plan:?}");
        }
        let complete = sql::task_complete_many(Backend::Sqlite, 1);
        let args = crate::args![
            0i64,
            "t1",
            "a1",
            "{}",
            "l1",
            "t2",
            "a2",
            "{}",
            None::<String>
        ];
        let plan = query_plan(complete, args).await;
        assert!(plan.iter().any(|p| p == BY_ID), "{plan:?}");
        let start = sql::task_start_many(Backend::Sqlite, 1);
        let args = crate::args![0i64, "t1", "a1", "l1", "t2", "a2", None::<String>];
        let plan = query_plan(start, args).await;
        assert!(plan.iter().any(|p| p == BY_ID), "{plan:?}");
    }
}
