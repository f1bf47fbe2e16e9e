//! Tasks: insertion (the plan task, then the plan's work tasks), the claim, the assigned
//! agent's start/progress/complete/fail, and the recoveries (release, failed attempt).

use agora_shared::{
    after_failure, parse_plan, ClaimedTask, EventKind, JobEvent, JobStatus, Task, TaskAction,
    TaskStatus, TaskType,
};
use serde_json::{json, Value};
use uuid::Uuid;

use super::agents::agent_seen;
use super::db::{ExecExt, Value as DbValue};
use super::events::{event_insert, EventDraft};
use super::jobs::{job_fetch, job_task_changed, job_transition};
use super::rows::{uuid, JobRow, TaskRow};
use super::sql::{self, TASK_COLUMNS};
use super::{Store, WriteCtx};
use crate::args;
use crate::error::{ApiError, Result};

/// A task to create.
pub struct NewTask {
    pub task_type: TaskType,
    pub index: u32,
    pub spec: String,
    pub max_retries: u32,
    pub timeout_secs: u64,
}

pub struct TaskClaimParams {
    pub agent_id: Uuid,
}

pub struct TaskProgressParams {
    pub agent_id: Uuid,
    pub task_id: Uuid,
    pub progress: u32,
    pub message: Option<String>,
    pub extend_secs: Option<u64>,
}

pub struct TaskFailParams {
    pub agent_id: Uuid,
    pub task_id: Uuid,
    pub error: String,
    pub retryable: bool,
}

/// Why an attempt failed.
pub enum FailCause {
    /// The agent reported it.
    Reported { error: String, retryable: bool },
    /// The deadline passed.
    TimedOut,
    /// The agent went stale.
    AgentLost,
    /// The agent's WebSocket closed or stopped answering while it ran the task.
    Disconnected,
}

/// Rows per INSERT statement (12 parameters each; well under every backend's limit).
const INSERT_CHUNK: usize = 200;

/// Inserts tasks of a job as pending and counts them; wakes claimers after the commit.
pub(crate) async fn tasks_insert(
    ctx: &mut WriteCtx,
    job: &JobRow,
    tasks: Vec<NewTask>,
) -> Result<JobRow> {
    let count = tasks.len();
    let mut job_row = None;
    for chunk in tasks.chunks(INSERT_CHUNK) {
        let mut q = String::from(
            "INSERT INTO tasks (id, job_id, idx, task_type, task_spec, status, max_retries, timeout_secs, \
             created_at, updated_at, job_priority, job_created_at) VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * 11;
            if i > 0 {
                q.push_str(", ");
            }
            q.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, 'pending', ${}, ${}, ${}, ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7,
                b + 8,
                b + 9,
                b + 10,
                b + 11
            ));
        }
        let mut params: Vec<DbValue> = Vec::with_capacity(chunk.len() * 11);
        for t in chunk {
            params.extend([
                DbValue::from(Uuid::new_v4()),
                DbValue::from(&job.id),
                DbValue::from(i64::from(t.index)),
                DbValue::from(t.task_type.as_str()),
                DbValue::from(&t.spec),
                DbValue::from(i64::from(t.max_retries)),
                DbValue::from(i64::try_from(t.timeout_secs).unwrap_or(i64::MAX)),
                DbValue::from(ctx.now),
                DbValue::from(ctx.now),
                DbValue::from(job.priority),
                DbValue::from(job.created_at),
            ]);
        }
        ctx.db.execute(&q, &params).await?;
    }
    if count > 0 {
        let row: JobRow = ctx.db.one(&format!(
            "UPDATE jobs SET tasks_total = tasks_total + $2, updated_at = $3 WHERE id = $1 RETURNING {}",
            sql::JOB_COLUMNS
        ), args![&job.id, i64::try_from(count).unwrap_or(i64::MAX), ctx.now])
        .await?;
        let task_type = tasks.first().map(|t| t.task_type).unwrap_or(TaskType::Work);
        let data = json!({ "count": count, "type": task_type });
        event_insert(
            ctx,
            EventDraft::new(EventKind::TasksCreated, data).job(uuid(&job.id)?),
        )
        .await?;
        ctx.work_added();
        job_row = Some(row);
    }
    match job_row {
        Some(r) => Ok(r),
        None => job_fetch(ctx, uuid(&job.id)?).await,
    }
}

async fn task_fetch(ctx: &mut WriteCtx, id: Uuid) -> Result<TaskRow> {
    ctx.db
        .opt(
            &format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1{}",
                sql::for_update(ctx.backend)
            ),
            args![id.to_string()],
        )
        .await?
        .ok_or_else(|| ApiError::not_found("task", id))
}

/// The task, checked to belong to `agent` and to allow `action`: 404, then 403, then 409.
async fn task_for_agent(
    ctx: &mut WriteCtx,
    id: Uuid,
    agent: Uuid,
    action: TaskAction,
) -> Result<(TaskRow, TaskStatus)> {
    let row = task_fetch(ctx, id).await?;
    let status = row.status()?;
    if let Some(owner) = row.agent_id.as_deref() {
        if owner != agent.to_string() {
            return Err(ApiError::Forbidden(format!(
                "task {id} is assigned to another agent"
            )));
        }
    }
    let next = status.apply(action)?;
    if row.agent_id.is_none() {
        return Err(ApiError::InvalidState(format!(
            "task {id} is '{status}' and not assigned to you"
        )));
    }
    Ok((row, next))
}

fn event_for(row: &TaskRow, kind: EventKind, mut data: Value) -> Result<EventDraft> {
    data["index"] = json!(row.idx);
    data["type"] = json!(row.task_type);
    let agent = row.agent_id.as_deref().map(uuid).transpose()?;
    Ok(EventDraft::new(kind, data)
        .job(uuid(&row.job_id)?)
        .task(uuid(&row.id)?)
        .agent(agent))
}

pub(crate) async fn task_claim(
    ctx: &mut WriteCtx,
    p: TaskClaimParams,
) -> Result<Option<ClaimedTask>> {
    agent_seen(ctx, p.agent_id).await?;
    task_claim_next(ctx, p.agent_id).await
}

/// Claims for several agents in one transaction (the dispatcher's batch), in order, until
/// nothing is pending. Each entry gets at most one task.
pub(crate) async fn task_claim_many(
    ctx: &mut WriteCtx,
    agents: Vec<Uuid>,
) -> Result<Vec<(Uuid, ClaimedTask)>> {
    let mut out = Vec::with_capacity(agents.len());
    for agent in agents {
        match task_claim_next(ctx, agent).await? {
            Some(c) => out.push((agent, c)),
            None => break,
        }
    }
    Ok(out)
}

/// The claim itself: the same statement for REST, long-poll and WebSocket dispatch.
async fn task_claim_next(ctx: &mut WriteCtx, agent_id: Uuid) -> Result<Option<ClaimedTask>> {
    let p = TaskClaimParams { agent_id };
    let claim = sql::task_claim(ctx.backend);
    let row: Option<TaskRow> = ctx
        .db
        .opt(&claim, args![p.agent_id.to_string(), ctx.now])
        .await?;
    let Some(row) = row else { return Ok(None) };
    let job = job_task_changed(
        ctx,
        &row.job_id,
        row.task_type()?,
        Some(TaskStatus::Pending),
        TaskStatus::Claimed,
        None,
    )
    .await?;
    let data = json!({ "status": TaskStatus::Claimed, "attempts": row.attempts, "deadline": row.deadline.map(super::rows::ts) });
    event_insert(ctx, event_for(&row, EventKind::TaskClaimed, data)?).await?;
    Ok(Some(ClaimedTask {
        task: row.into_task()?,
        job: job.into_job()?,
    }))
}

pub(crate) async fn task_start(ctx: &mut WriteCtx, agent: Uuid, id: Uuid) -> Result<Task> {
    // One statement on the hot path: the conditions are the checks. When it matches nothing,
    // the slow path says why (404, 403 or 409).
    let started: Option<TaskRow> = ctx
        .db
        .opt(
            &format!(
                "UPDATE tasks SET status = 'running', started_at = $3, updated_at = $3 \
                 WHERE id = $1 AND agent_id = $2 AND status = 'claimed' RETURNING {TASK_COLUMNS}"
            ),
            args![id, agent, ctx.now],
        )
        .await?;
    let Some(row) = started else {
        task_for_agent(ctx, id, agent, TaskAction::Start).await?;
        return Err(ApiError::InvalidState(format!(
            "task {id} changed while starting; retry"
        )));
    };
    let next = TaskStatus::Running;
    agent_seen(ctx, agent).await?;
    event_insert(
        ctx,
        event_for(&row, EventKind::TaskStarted, json!({ "status": next }))?,
    )
    .await?;
    row.into_task()
}

pub(crate) async fn task_progress(ctx: &mut WriteCtx, p: TaskProgressParams) -> Result<Task> {
    let (row, next) = task_for_agent(ctx, p.task_id, p.agent_id, TaskAction::Progress).await?;
    let deadline = match p.extend_secs {
        Some(extend) if i64::try_from(extend).unwrap_or(i64::MAX) > row.timeout_secs => {
            return Err(ApiError::validation(
                "extend_secs",
                format!(
                    "may be at most the task's timeout_secs ({}), got {extend}",
                    row.timeout_secs
                ),
            ));
        }
        Some(extend) => ctx.now + i64::try_from(extend).unwrap_or(0) * 1000,
        None => row.deadline.unwrap_or(ctx.now),
    };
    agent_seen(ctx, p.agent_id).await?;
    let row: TaskRow = ctx.db.one(&format!(
        "UPDATE tasks SET status = $2, progress = $3, progress_message = $4, deadline = $5, \
         started_at = COALESCE(started_at, $6), updated_at = $6 WHERE id = $1 RETURNING {TASK_COLUMNS}"
    ), args![&row.id, next.as_str(), i64::from(p.progress), p.message.clone(), deadline, ctx.now])
    .await?;
    let data = json!({ "status": next, "progress": p.progress, "message": p.message });
    event_insert(ctx, event_for(&row, EventKind::TaskProgress, data)?).await?;
    row.into_task()
}

pub(crate) async fn task_complete(
    ctx: &mut WriteCtx,
    agent: Uuid,
    id: Uuid,
    result: Value,
) -> Result<Task> {
    // The hot path, a work task: one statement whose conditions are the checks.
    let done: Option<TaskRow> = ctx
        .db
        .opt(
            &format!(
                "UPDATE tasks SET status = 'completed', result = $3, progress = 100, finished_at = $4, updated_at = $4 \
                 WHERE id = $1 AND agent_id = $2 AND status IN ('claimed', 'running') AND task_type = 'work' \
                 RETURNING {TASK_COLUMNS}"
            ),
            args![id, agent, result.to_string(), ctx.now],
        )
        .await?;
    if let Some(row) = done {
        agent_seen(ctx, agent).await?;
        let next = TaskStatus::Completed;
        event_insert(
            ctx,
            event_for(&row, EventKind::TaskCompleted, json!({ "status": next }))?,
        )
        .await?;
        // Claimed and running count alike, so either is the right "from".
        job_task_changed(
            ctx,
            &row.job_id,
            TaskType::Work,
            Some(TaskStatus::Running),
            next,
            None,
        )
        .await?;
        return row.into_task();
    }
    // A plan task (its result must be validated before anything is written), or a refusal.
    let (row, next) = task_for_agent(ctx, id, agent, TaskAction::Complete).await?;
    let task_type = row.task_type()?;
    // Validate the plan before writing anything: a bad plan leaves the task running.
    let specs = match task_type {
        TaskType::Plan => Some(parse_plan(&result)?.to_vec()),
        TaskType::Work => None,
    };
    agent_seen(ctx, agent).await?;
    let from = row.status()?;
    let row: TaskRow = ctx.db.one(&format!(
        "UPDATE tasks SET status = $2, result = $3, progress = 100, finished_at = $4, updated_at = $4 \
         WHERE id = $1 RETURNING {TASK_COLUMNS}"
    ), args![&row.id, next.as_str(), result.to_string(), ctx.now])
    .await?;
    event_insert(
        ctx,
        event_for(&row, EventKind::TaskCompleted, json!({ "status": next }))?,
    )
    .await?;
    let job = job_task_changed(ctx, &row.job_id, task_type, Some(from), next, None).await?;
    if let Some(specs) = specs {
        plan_land(ctx, job, &row, specs).await?;
    }
    row.into_task()
}

/// Creates the plan's work tasks (1..=n) and moves the job to `ready`, or completes it when
/// the plan is empty.
async fn plan_land(
    ctx: &mut WriteCtx,
    job: JobRow,
    plan: &TaskRow,
    specs: Vec<Value>,
) -> Result<()> {
    if job.status()? != JobStatus::Planning {
        return Ok(());
    }
    let work_tasks = specs.len();
    let tasks = specs
        .into_iter()
        .enumerate()
        .map(|(i, spec)| NewTask {
            task_type: TaskType::Work,
            index: u32::try_from(i + 1).unwrap_or(u32::MAX),
            spec: spec.to_string(),
            max_retries: u32::try_from(plan.max_retries).unwrap_or(0),
            timeout_secs: u64::try_from(plan.timeout_secs).unwrap_or(1),
        })
        .collect();
    let job = job_transition(ctx, &job, JobEvent::PlanCompleted { work_tasks }, None).await?;
    tasks_insert(ctx, &job, tasks).await?;
    Ok(())
}

pub(crate) async fn task_fail(ctx: &mut WriteCtx, p: TaskFailParams) -> Result<Task> {
    let (row, _) = task_for_agent(ctx, p.task_id, p.agent_id, TaskAction::Fail).await?;
    agent_seen(ctx, p.agent_id).await?;
    let cause = FailCause::Reported {
        error: p.error,
        retryable: p.retryable,
    };
    task_fail_attempt(ctx, row, cause).await
}

/// Counts a failed attempt: back to pending while retries remain, else failed for good.
pub(crate) async fn task_fail_attempt(
    ctx: &mut WriteCtx,
    row: TaskRow,
    cause: FailCause,
) -> Result<Task> {
    let from = row.status()?;
    from.apply(TaskAction::Fail)?;
    let (error, retryable) = match cause {
        FailCause::Reported { error, retryable } => (error, retryable),
        FailCause::TimedOut => (format!("timed out after {} s", row.timeout_secs), true),
        FailCause::AgentLost => ("its agent stopped answering".to_string(), true),
        FailCause::Disconnected => (
            "its agent's WebSocket closed while it ran the task".to_string(),
            true,
        ),
    };
    let attempts = u32::try_from(row.attempts).unwrap_or(u32::MAX);
    let max_retries = u32::try_from(row.max_retries).unwrap_or(0);
    let outcome = after_failure(attempts, max_retries, retryable);
    let retry = outcome.status == TaskStatus::Pending;
    let updated: TaskRow = ctx
        .db
        .one(
            &format!(
                "UPDATE tasks SET status = $2, attempts = $3, error = $4, updated_at = $5, \
         agent_id = CASE WHEN $6 = 1 THEN NULL ELSE agent_id END, \
         deadline = CASE WHEN $6 = 1 THEN NULL ELSE deadline END, \
         finished_at = CASE WHEN $6 = 1 THEN NULL ELSE $5 END \
         WHERE id = $1 RETURNING {TASK_COLUMNS}"
            ),
            args![
                &row.id,
                outcome.status.as_str(),
                i64::from(outcome.attempts),
                &error,
                ctx.now,
                i64::from(retry)
            ],
        )
        .await?;
    let data = json!({ "status": outcome.status, "attempts": outcome.attempts, "error": error, "retry": retry });
    task_left_agent(
        ctx,
        &row,
        &updated,
        EventKind::TaskFailed,
        data,
        Some(&error),
    )
    .await?;
    updated.into_task()
}

/// A WebSocket agent lets go of tasks: offers (still `claimed`) go back to pending with no
/// attempt counted; accepted (`running`) tasks count a failed attempt. Tasks no longer held by
/// the agent are skipped.
pub(crate) async fn tasks_abandon(
    ctx: &mut WriteCtx,
    agent: Uuid,
    ids: Vec<Uuid>,
    reason: &str,
    charge: bool,
) -> Result<usize> {
    let mut n = 0;
    for id in ids {
        let Ok(row) = task_fetch(ctx, id).await else {
            continue;
        };
        if row.agent_id.as_deref() != Some(agent.to_string().as_str()) {
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
    id: Uuid,
    reason: &str,
) -> Result<Task> {
    let (row, _) = task_for_agent(ctx, id, agent, TaskAction::Release).await?;
    task_release(ctx, row, reason).await
}

/// Gives a claimed or running task back to pending with no attempt counted.
pub(crate) async fn task_release(ctx: &mut WriteCtx, row: TaskRow, reason: &str) -> Result<Task> {
    let from = row.status()?;
    if !from.is_active() {
        return Err(ApiError::InvalidState(format!(
            "task {} is '{from}', not held by an agent",
            row.id
        )));
    }
    let updated: TaskRow = ctx
        .db
        .one(
            &format!(
        "UPDATE tasks SET status = 'pending', agent_id = NULL, deadline = NULL, claimed_at = NULL, \
         started_at = NULL, updated_at = $2 WHERE id = $1 RETURNING {TASK_COLUMNS}"
    ),
            args![&row.id, ctx.now],
        )
        .await?;
    let data = json!({ "status": TaskStatus::Pending, "reason": reason });
    task_left_agent(ctx, &row, &updated, EventKind::TaskReleased, data, None).await?;
    updated.into_task()
}

/// The bookkeeping after a task left its agent (`before` → `after`): the event, which names the
/// agent that lost the task though the row no longer does; the job's counters and transitions;
/// and a wake-up when the task is pending again.
async fn task_left_agent(
    ctx: &mut WriteCtx,
    before: &TaskRow,
    after: &TaskRow,
    kind: EventKind,
    data: Value,
    error: Option<&str>,
) -> Result<()> {
    let mut draft = event_for(after, kind, data)?;
    draft.agent_id = before.agent_id.as_deref().map(uuid).transpose()?;
    event_insert(ctx, draft).await?;
    let to = after.status()?;
    job_task_changed(
        ctx,
        &before.job_id,
        before.task_type()?,
        Some(before.status()?),
        to,
        error,
    )
    .await?;
    if to == TaskStatus::Pending {
        ctx.work_added();
    }
    Ok(())
}

/// Claimed or running tasks past their deadline count a failed attempt.
pub(crate) async fn tasks_expire(ctx: &mut WriteCtx) -> Result<usize> {
    let expired: Vec<TaskRow> = ctx
        .db
        .all(
            &format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE status IN ('claimed', 'running') AND deadline < $1 \
         ORDER BY deadline LIMIT 10000{}",
        sql::for_update_skip_locked(ctx.backend)
    ),
            args![ctx.now],
        )
        .await?;
    let n = expired.len();
    for row in expired {
        task_fail_attempt(ctx, row, FailCause::TimedOut).await?;
    }
    Ok(n)
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
        row.ok_or_else(|| ApiError::not_found("task", id))?
            .into_task()
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
        Ok(agora_shared::Page {
            items: rows
                .into_iter()
                .map(TaskRow::into_task)
                .collect::<Result<_>>()?,
            total: u64::try_from(total).unwrap_or_default(),
            limit: p.limit,
            offset: p.offset,
        })
    }
}

impl Store {
    /// The agents that hold a claimed or running task (a draining server waits for its own).
    pub async fn agents_holding_tasks(&self) -> Result<std::collections::HashSet<Uuid>> {
        let rows: Vec<(Option<String>,)> = self
            .read_all(
                "SELECT DISTINCT agent_id FROM tasks WHERE status IN ('claimed', 'running')",
                &[],
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(a,)| a.and_then(|a| a.parse().ok()))
            .collect())
    }

    /// Running tasks held by an agent (a reconnecting WebSocket takes them over).
    pub async fn task_ids_running_for_agent(&self, agent: Uuid) -> Result<Vec<Uuid>> {
        let rows: Vec<(String,)> = self
            .read_all(
                "SELECT id FROM tasks WHERE agent_id = $1 AND status = 'running'",
                args![agent.to_string()],
            )
            .await?;
        rows.iter().map(|(id,)| uuid(id)).collect()
    }
}

impl Store {
    /// Every terminal task of a job, oldest first (the git history's full comparison).
    pub async fn tasks_finished(&self, job_id: Uuid) -> Result<Vec<Task>> {
        let rows: Vec<TaskRow> = self
            .read_all(
                &format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE job_id = $1 AND status IN ('completed', 'failed') \
                     ORDER BY finished_at, idx"
                ),
                args![job_id],
            )
            .await?;
        rows.into_iter().map(TaskRow::into_task).collect()
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
    /// These tasks of a job, if terminal (the git writer's incremental read).
    pub async fn tasks_finished_by_id(&self, job_id: Uuid, ids: &[Uuid]) -> Result<Vec<Task>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let mut params = vec![DbValue::from(job_id)];
            params.extend(chunk.iter().map(|id| DbValue::from(*id)));
            let rows: Vec<TaskRow> = self
                .read_all(
                    &format!(
                        "SELECT {TASK_COLUMNS} FROM tasks WHERE job_id = $1 AND status IN ('completed', 'failed') \
                         AND id IN ({}) ORDER BY finished_at, idx",
                        marks.join(", ")
                    ),
                    &params,
                )
                .await?;
            for r in rows {
                out.push(r.into_task()?);
            }
        }
        out.sort_by_key(|t| (t.finished_at, t.index));
        Ok(out)
    }
}
