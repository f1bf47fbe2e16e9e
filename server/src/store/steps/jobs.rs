//! Job steps: fetch, move through the lifecycle, and count a task's change of state.

use agora_shared::{EventData, JobChanged, JobEvent, JobStatus, TaskStatus, TaskType};
use uuid::Uuid;

use crate::args;
use crate::store::db::ExecExt;
use crate::store::error::{Result, StoreError};
use crate::store::events::{event_insert, EventDraft};
use crate::store::rows::JobRow;
use crate::store::sql::{for_update, JOBS_WITH_SPECS, JOB_COLUMNS, JOB_STATE_COLUMNS};
use crate::store::WriteCtx;

pub(crate) async fn job_fetch(ctx: &mut WriteCtx, id: Uuid) -> Result<JobRow> {
    ctx.db
        .opt(
            &format!(
                "SELECT {JOB_COLUMNS} FROM {JOBS_WITH_SPECS} WHERE id = $1{}",
                for_update(ctx.backend)
            ),
            args![id.to_string()],
        )
        .await?
        .ok_or_else(|| StoreError::not_found("job", id))
}

/// Moves a job along its lifecycle (checked by `JobStatus::transition`) and writes the event.
/// The move is made only from the status `job` has: a PostgreSQL batch beside another
/// (`batch::run_batch`) decides on a copy of the row read unlocked, which the other may have
/// moved on since (both batches' first claims of a ready job, say). Then nothing is written and
/// the row comes back as it now is.
pub(crate) async fn job_transition(
    ctx: &mut WriteCtx,
    job: &JobRow,
    event: JobEvent,
    error: Option<String>,
) -> Result<JobRow> {
    let from = job.status()?;
    let to = from.transition(event)?;
    let finished = to.is_terminal().then_some(ctx.now);
    let row: Option<JobRow> = ctx.db.opt(&format!(
        "UPDATE jobs SET status = $2, updated_at = $3, finished_at = $4, error = COALESCE($5, error) \
         WHERE id = $1 AND status = $6 RETURNING {JOB_STATE_COLUMNS}"
    ), args![&job.id, to.as_str(), ctx.now, finished, error.clone(), from.as_str()])
    .await?;
    let id = crate::store::rows::uuid(&job.id)?;
    let Some(row) = row else {
        return job_fetch(ctx, id).await;
    };
    ctx.db.keep(&row);
    let data = EventData::job(JobChanged {
        from: Some(from),
        status: to,
        title: row.title.clone(),
        error,
    });
    event_insert(ctx, EventDraft::new(data).job(id)).await?;
    Ok(row)
}

/// Which counter a task state belongs to.
pub(crate) fn bucket(s: TaskStatus) -> [i64; 3] {
    match s {
        TaskStatus::Completed => [1, 0, 0],
        TaskStatus::Failed => [0, 1, 0],
        TaskStatus::Claimed | TaskStatus::Running => [0, 0, 1],
        TaskStatus::Pending => [0, 0, 0],
    }
}

/// Applies a task's move `from → to` to its job's counters (`from: None` is a new task) and
/// then the job transitions it causes: the first claim of the plan or of a work task, a plan
/// that failed for good, or the last work task settling.
pub(crate) async fn job_task_changed(
    ctx: &mut WriteCtx,
    job_id: &str,
    task_type: TaskType,
    from: Option<TaskStatus>,
    to: TaskStatus,
    error: Option<&str>,
) -> Result<JobRow> {
    let [c0, f0, r0] = from.map(bucket).unwrap_or([0, 0, 0]);
    let [c1, f1, r1] = bucket(to);
    let deltas = [i64::from(from.is_none()), c1 - c0, f1 - f0, r1 - r0];
    // The first change of the job in this transaction updates its row; later ones, its copy
    // (see `store::counters`).
    let job = match ctx.db.apply(job_id, deltas, ctx.now) {
        Some(job) => job,
        // A shared batch reads the row without locking it and adds its changes at the commit.
        None if ctx.shared => {
            let job: JobRow = ctx
                .db
                .one(
                    &format!("SELECT {JOB_STATE_COLUMNS} FROM jobs WHERE id = $1"),
                    args![job_id],
                )
                .await?;
            ctx.db.keep_read(job);
            ctx.db
                .apply(job_id, deltas, ctx.now)
                .ok_or_else(|| StoreError::not_found("job", job_id))?
        }
        None => {
            let [added, completed, failed, running] = deltas;
            let job: JobRow = ctx
                .db
                .one(
                    &format!(
        "UPDATE jobs SET tasks_total = tasks_total + $2, tasks_completed = tasks_completed + $3, \
         tasks_failed = tasks_failed + $4, tasks_running = tasks_running + $5, updated_at = $6 \
         WHERE id = $1 RETURNING {JOB_STATE_COLUMNS}"
    ),
                    args![job_id, added, completed, failed, running, ctx.now],
                )
                .await?;
            ctx.db.keep(&job);
            job
        }
    };
    let status = job.status()?;
    match (task_type, to) {
        (TaskType::Plan, TaskStatus::Claimed) if status == JobStatus::Accepted => {
            job_transition(ctx, &job, JobEvent::PlanClaimed, None).await
        }
        (TaskType::Work, TaskStatus::Claimed) if status == JobStatus::Ready => {
            job_transition(ctx, &job, JobEvent::WorkClaimed, None).await
        }
        (TaskType::Plan, TaskStatus::Failed) if !status.is_terminal() => {
            let why = format!(
                "the plan task failed: {}",
                error.unwrap_or("no reason given")
            );
            job_transition(ctx, &job, JobEvent::PlanFailed, Some(why)).await
        }
        (TaskType::Work, TaskStatus::Completed | TaskStatus::Failed) => job_settle(ctx, job).await,
        _ => Ok(job),
    }
}

/// Settles each job, read locked as it now is (`job_settle`): the jobs whose last tasks a
/// PostgreSQL batch may have finished beside another's (`batch::run_batch`).
pub(crate) async fn jobs_settle(ctx: &mut WriteCtx, jobs: Vec<Uuid>) -> Result<()> {
    for id in jobs {
        let job = job_fetch(ctx, id).await?;
        job_settle(ctx, job).await?;
    }
    Ok(())
}

/// An executing job whose tasks are all terminal completes, or fails if one failed for good.
pub(crate) async fn job_settle(ctx: &mut WriteCtx, job: JobRow) -> Result<JobRow> {
    if job.status()? != JobStatus::Executing
        || job.tasks_completed + job.tasks_failed < job.tasks_total
    {
        return Ok(job);
    }
    let any_failed = job.tasks_failed > 0;
    let error =
        any_failed.then(|| format!("{} of {} tasks failed", job.tasks_failed, job.tasks_total));
    job_transition(ctx, &job, JobEvent::WorkSettled { any_failed }, error).await
}
