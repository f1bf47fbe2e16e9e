//! Task steps: insert, fetch for an agent's report, end a delivery (retry, release or fail for
//! good), and the event and job bookkeeping of each.

use agora_shared::{
    after_failed_attempt, after_release, check_lease, retry_backoff_ms, DeliveryOutcome, EventData,
    EventKind, Task, TaskAction, TaskCompleted, TaskFailed, TaskReleased, TaskStatus, TaskType,
    TasksCreated, DELIVERY_LIMIT_ERROR,
};
use uuid::Uuid;

use rand::Rng;

use super::graph::deps_fail;
use super::jobs::{job_fetch, job_task_changed};
use crate::args;
use crate::store::db::{Exec, ExecExt, Value as DbValue};
use crate::store::error::{Result, StoreError};
use crate::store::events::{event_insert, EventDraft};
use crate::store::rows::{uuid, JobRow, TaskRow};
use crate::store::sql::{self, TASK_COLUMNS};
use crate::store::WriteCtx;

/// A task to create.
pub struct NewTask {
    pub task_type: TaskType,
    pub index: u32,
    pub spec: String,
    pub max_retries: u32,
    pub timeout_secs: u64,
    /// The plan's control fields (none for a plan task).
    pub control: Control,
}

/// A work task's place in its plan's graph.
#[derive(Default)]
pub struct Control {
    pub name: Option<String>,
    /// Job task indexes it waits for, all created in the same insert (or earlier).
    pub depends_on: Vec<u32>,
    pub requires: Vec<String>,
    pub key: Option<String>,
    pub key_limit: u32,
}

/// Columns of one task row in [`tasks_insert`].
const INSERT_COLUMNS: usize = 17;

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
    /// The agent asked for heartbeats at start and sent none within its lease.
    HeartbeatLost,
}

/// Rows per INSERT statement (17 parameters each; well under every backend's limit).
pub(crate) const INSERT_CHUNK: usize = 200;

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
             created_at, updated_at, job_priority, job_created_at, name, depends_on, unmet, requires, \
             task_key, key_limit) VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * INSERT_COLUMNS;
            if i > 0 {
                q.push_str(", ");
            }
            let marks: Vec<String> = (1..=INSERT_COLUMNS)
                .map(|c| format!("${}", b + c))
                .collect();
            // status is the sixth column, a constant.
            q.push_str(&format!(
                "({}, 'pending', {})",
                marks[..5].join(", "),
                marks[5..].join(", ")
            ));
        }
        let mut params: Vec<DbValue> = Vec::with_capacity(chunk.len() * INSERT_COLUMNS);
        for t in chunk {
            let c = &t.control;
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
                DbValue::from(c.name.clone()),
                DbValue::from(json_list(&c.depends_on)),
                DbValue::from(i64::try_from(c.depends_on.len()).unwrap_or(i64::MAX)),
                DbValue::from(json_list(&c.requires)),
                DbValue::from(c.key.clone()),
                DbValue::from(i64::from(c.key_limit.max(1))),
            ]);
        }
        ctx.db.execute(&q, &params).await?;
    }
    deps_insert(ctx, &job.id, &tasks).await?;
    if count > 0 {
        let row: JobRow = ctx.db.one(&format!(
            "UPDATE jobs SET tasks_total = tasks_total + $2, updated_at = $3 WHERE id = $1 RETURNING {}",
            sql::JOB_STATE_COLUMNS
        ), args![&job.id, i64::try_from(count).unwrap_or(i64::MAX), ctx.now])
        .await?;
        let task_type = tasks.first().map(|t| t.task_type).unwrap_or(TaskType::Work);
        let data = EventData::TasksCreated(TasksCreated {
            count: u32::try_from(count).unwrap_or(u32::MAX),
            task_type,
        });
        event_insert(ctx, EventDraft::new(data).job(uuid(&job.id)?)).await?;
        ctx.work_added();
        job_row = Some(row);
    }
    match job_row {
        Some(r) => Ok(r),
        None => job_fetch(ctx, uuid(&job.id)?).await,
    }
}

/// A list as stored: JSON, or NULL when empty.
fn json_list<T: serde::Serialize>(items: &[T]) -> Option<String> {
    if items.is_empty() {
        return None;
    }
    serde_json::to_string(items).ok()
}

/// The dependency edges of new tasks (see `task_deps` in the migrations).
async fn deps_insert(ctx: &mut WriteCtx, job_id: &str, tasks: &[NewTask]) -> Result<()> {
    let edges: Vec<(u32, u32)> = tasks
        .iter()
        .flat_map(|t| t.control.depends_on.iter().map(move |d| (*d, t.index)))
        .collect();
    for chunk in edges.chunks(INSERT_CHUNK) {
        let marks: Vec<String> = (0..chunk.len())
            .map(|i| format!("($1, ${}, ${})", 2 * i + 2, 2 * i + 3))
            .collect();
        let mut params = vec![DbValue::from(job_id)];
        for (dep, task) in chunk {
            params.push(DbValue::from(i64::from(*dep)));
            params.push(DbValue::from(i64::from(*task)));
        }
        ctx.db
            .execute(
                &format!(
                    "INSERT INTO task_deps (job_id, dep_idx, task_idx) VALUES {}",
                    marks.join(", ")
                ),
                &params,
            )
            .await?;
    }
    if !edges.is_empty() {
        ctx.db
            .execute(
                "UPDATE jobs SET has_deps = 1 WHERE id = $1 AND has_deps = 0",
                args![job_id],
            )
            .await?;
    }
    Ok(())
}

pub(crate) async fn task_fetch(ctx: &mut WriteCtx, id: Uuid) -> Result<TaskRow> {
    ctx.db
        .opt(
            &format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1{}",
                sql::for_update(ctx.backend)
            ),
            args![id.to_string()],
        )
        .await?
        .ok_or_else(|| StoreError::not_found("task", id))
}

/// The task, checked for a report of `agent` on delivery `lease` (or its current one) that
/// does `action`: 404, then 409 `LEASE_LOST`, then 403, then 409.
pub(crate) async fn task_for_agent(
    ctx: &mut WriteCtx,
    id: Uuid,
    agent: Uuid,
    action: TaskAction,
    lease: Option<Uuid>,
) -> Result<(TaskRow, TaskStatus)> {
    let row = task_fetch(ctx, id).await?;
    check_lease(id, row.lease()?, lease)?;
    let status = row.status()?;
    if let Some(owner) = row.agent_id.as_deref() {
        if owner != agent.to_string() {
            return Err(StoreError::Forbidden(format!(
                "task {id} is assigned to another agent"
            )));
        }
    }
    let next = status.apply(action)?;
    if row.agent_id.is_none() {
        return Err(StoreError::InvalidState(format!(
            "task {id} is '{status}' and not assigned to you"
        )));
    }
    Ok((row, next))
}

pub(crate) fn completed_event(row: &TaskRow) -> Result<EventDraft> {
    let data = EventData::TaskCompleted(TaskCompleted {
        index: row.index(),
        task_type: row.task_type()?,
        status: TaskStatus::Completed,
    });
    event_for(row, data)
}

/// The event of `row`, naming its job, itself and its agent.
pub(crate) fn event_for(row: &TaskRow, data: EventData) -> Result<EventDraft> {
    let agent = row.agent_id.as_deref().map(uuid).transpose()?;
    Ok(EventDraft::new(data)
        .job(uuid(&row.job_id)?)
        .task(uuid(&row.id)?)
        .agent(agent))
}

/// Counts a failed attempt: back to pending after its backoff while retries (and deliveries)
/// remain, else failed for good.
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
        FailCause::HeartbeatLost => (
            format!(
                "no progress or heartbeat within its heartbeat_secs ({} s)",
                row.heartbeat_secs.unwrap_or_default()
            ),
            true,
        ),
    };
    let max_retries = u32::try_from(row.max_retries).unwrap_or(0);
    let outcome = after_failed_attempt(
        row.attempts(),
        max_retries,
        retryable,
        row.deliveries(),
        ctx.rules.max_deliveries,
    );
    let available_at = (outcome.status == TaskStatus::Pending).then(|| {
        let jitter = rand::thread_rng().gen::<f64>();
        ctx.now + retry_backoff_ms(outcome.attempts, ctx.rules.retry_backoff_ms, jitter)
    });
    task_end_delivery(
        ctx,
        row,
        outcome,
        error,
        available_at,
        EventKind::TaskFailed,
    )
    .await
}

/// Writes where a delivery that ended without a result leaves its task: pending again (out of
/// its lease, claimable from `available_at`), or failed for good (with `error`, or with
/// [`DELIVERY_LIMIT_ERROR`] when the delivery limit alone ended it), and its event (`kind` when
/// the task is pending again; always `task.failed` when it failed for good).
pub(crate) async fn task_end_delivery(
    ctx: &mut WriteCtx,
    row: TaskRow,
    outcome: DeliveryOutcome,
    error: String,
    available_at: Option<i64>,
    kind: EventKind,
) -> Result<Task> {
    let retry = outcome.status == TaskStatus::Pending;
    let stored_error = if outcome.dead_letter {
        DELIVERY_LIMIT_ERROR.to_string()
    } else if kind == EventKind::TaskReleased && retry {
        // A release is no failure: the task keeps the error of its last failed attempt.
        row.error.clone().unwrap_or_default()
    } else {
        error.clone()
    };
    let updated: TaskRow = ctx
        .db
        .one(
            &format!(
                "UPDATE tasks SET status = $2, attempts = $3, error = $4, updated_at = $5, \
                 agent_id = CASE WHEN $6 = 1 THEN NULL ELSE agent_id END, \
                 deadline = CASE WHEN $6 = 1 THEN NULL ELSE deadline END, \
                 claimed_at = CASE WHEN $6 = 1 AND $8 = 1 THEN NULL ELSE claimed_at END, \
                 started_at = CASE WHEN $6 = 1 AND $8 = 1 THEN NULL ELSE started_at END, \
                 lease_id = CASE WHEN $6 = 1 THEN NULL ELSE lease_id END, \
                 finished_at = CASE WHEN $6 = 1 THEN NULL ELSE $5 END, \
                 available_at = COALESCE($7, available_at), \
                 lease_expires_at = NULL, claim_request_id = NULL, heartbeat_secs = NULL \
                 WHERE id = $1 RETURNING {TASK_COLUMNS}"
            ),
            args![
                &row.id,
                outcome.status.as_str(),
                i64::from(outcome.attempts),
                (!stored_error.is_empty()).then_some(stored_error.clone()),
                ctx.now,
                i64::from(retry),
                available_at,
                i64::from(kind == EventKind::TaskReleased)
            ],
        )
        .await?;
    // The event names the delivery that lost the task, though the row no longer does.
    let (index, task_type, lease_id) = (row.index(), row.task_type()?, row.lease()?);
    let data = if retry && kind == EventKind::TaskReleased {
        EventData::TaskReleased(TaskReleased {
            index,
            task_type,
            status: outcome.status,
            attempts: outcome.attempts,
            reason: error,
            lease_id,
        })
    } else {
        EventData::TaskFailed(TaskFailed {
            index,
            task_type: Some(task_type),
            status: outcome.status,
            attempts: outcome.attempts,
            error: if retry {
                error.clone()
            } else {
                stored_error.clone()
            },
            retry,
            available_at: available_at.filter(|_| retry).map(crate::store::rows::ts),
            cancelled: false,
            dead_letter: outcome.dead_letter,
            deliveries: outcome.dead_letter.then_some(row.deliveries()),
            last_error: outcome.dead_letter.then_some(error),
            lease_id,
        })
    };
    let failed_error = (!retry).then_some(stored_error);
    task_left_agent(ctx, &row, &updated, data, failed_error.as_deref()).await?;
    updated.into_task()
}

/// Ends a claimed or running task's delivery with no attempt counted: back to pending, or
/// failed for good when it has been delivered `MAX_DELIVERIES` times.
pub(crate) async fn task_release(ctx: &mut WriteCtx, row: TaskRow, reason: &str) -> Result<Task> {
    let from = row.status()?;
    if !from.is_active() {
        return Err(StoreError::InvalidState(format!(
            "task {} is '{from}', not held by an agent",
            row.id
        )));
    }
    let outcome = after_release(row.attempts(), row.deliveries(), ctx.rules.max_deliveries);
    task_end_delivery(
        ctx,
        row,
        outcome,
        reason.to_string(),
        None,
        EventKind::TaskReleased,
    )
    .await
}

/// The bookkeeping after a task left its agent (`before` → `after`): the event, which names the
/// agent and the delivery that lost the task though the row no longer does; the job's counters
/// and transitions; and a wake-up when the task is pending again.
pub(crate) async fn task_left_agent(
    ctx: &mut WriteCtx,
    before: &TaskRow,
    after: &TaskRow,
    data: EventData,
    error: Option<&str>,
) -> Result<()> {
    let mut draft = event_for(after, data)?;
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
    // Pending again, or its key freed for the next holder.
    if to == TaskStatus::Pending || before.task_key.is_some() {
        ctx.work_added();
    }
    if to == TaskStatus::Failed {
        deps_fail(ctx, after).await?;
    }
    Ok(())
}
