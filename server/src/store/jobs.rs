//! Jobs: submission, cancel, the counters kept beside each job, and the transitions
//! that task changes cause.

use agora_shared::{
    approval_deadline, cooldown_ends, EventData, Job, JobChanged, JobEvent, JobStatus, Page,
    TaskFailed, TaskStatus,
};
use serde_json::Value;
use uuid::Uuid;

use super::db::{Exec, ExecExt};
use super::error::{Result, StoreError};
use super::events::{event_insert, EventDraft};
use super::rows::{ts, JobRow, TaskRow};
use super::sql::{
    for_update, ACTIVE_TASKS, CLAIMABLE_JOBS, JOBS_WITH_SPECS, JOB_COLUMNS, JOB_STATE_COLUMNS,
    OPEN_TASKS, TASK_COLUMNS,
};
use super::steps::agents::agent_touch;
use super::steps::jobs::{job_fetch, job_settle, job_transition};
use super::{Store, WriteCtx};
use crate::args;

pub struct JobInsertParams {
    pub id: Uuid,
    pub title: String,
    pub job_spec: Value,
    pub priority: i32,
    pub approvals_required: u32,
    pub submitted_by: Option<Uuid>,
    /// Seconds the job may wait for approvals (0: no limit).
    pub approval_ttl_secs: u64,
    pub plan_approvals_required: u32,
    /// The submit's idempotency key and a hash of its body.
    pub idempotency: Option<(String, String)>,
}

/// A submitted job, and whether this submit created it (not an idempotent replay).
pub struct Submitted {
    pub job: Job,
    pub created: bool,
}

pub struct JobListParams {
    pub status: Option<JobStatus>,
    /// Only jobs whose title contains this, ignoring case.
    pub search: Option<String>,
    pub limit: u32,
    pub offset: u64,
}

/// Jobs matching the list's filters; `$1` is the status, `$2` the LIKE pattern.
const JOB_FILTER: &str =
    "($1 IS NULL OR status = $1) AND ($2 IS NULL OR LOWER(title) LIKE $2 ESCAPE '\\')";

/// `%text%` for LIKE, with LIKE's own wildcards taken literally.
fn like_pattern(text: &str) -> String {
    let mut out = String::from("%");
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Recomputes the counters of the jobs matched by the WHERE clause appended to it.
fn job_recount() -> String {
    format!(
        "UPDATE jobs SET \
         tasks_total = (SELECT COUNT(*) FROM tasks t WHERE t.job_id = jobs.id), \
         tasks_completed = (SELECT COUNT(*) FROM tasks t WHERE t.job_id = jobs.id AND t.status = 'completed'), \
         tasks_failed = (SELECT COUNT(*) FROM tasks t WHERE t.job_id = jobs.id AND t.status = 'failed'), \
         tasks_running = (SELECT COUNT(*) FROM tasks t WHERE t.job_id = jobs.id AND t.status IN {ACTIVE_TASKS})"
    )
}

/// A submit: the job its idempotency key already created (within `IDEMPOTENCY_TTL_SECS`), or a
/// new one. The key is claimed before the job is written: a concurrent submit with the same key
/// waits for this one (SQLite's one writer; PostgreSQL's unique index) and then finds it.
pub(crate) async fn job_submit(ctx: &mut WriteCtx, p: JobInsertParams) -> Result<Submitted> {
    if let Some((key, hash)) = &p.idempotency {
        if let Some(job) = idempotent_replay(ctx, key, hash, &p.id).await? {
            return Ok(Submitted {
                job,
                created: false,
            });
        }
    }
    Ok(Submitted {
        job: job_insert(ctx, p).await?,
        created: true,
    })
}

/// The job `key` names if it is still live: the same body answers it, another is refused.
/// Otherwise the key is (re)taken for `new_job`.
async fn idempotent_replay(
    ctx: &mut WriteCtx,
    key: &str,
    hash: &str,
    new_job: &Uuid,
) -> Result<Option<Job>> {
    let taken = ctx
        .db
        .execute(
            "INSERT INTO job_idempotency (idem_key, job_id, body_hash, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (idem_key) DO NOTHING",
            args![key, *new_job, hash, ctx.now],
        )
        .await?;
    if taken == 1 {
        return Ok(None);
    }
    let (job_id, body_hash, created_at): (String, String, i64) = ctx
        .db
        .one(
            &format!(
                "SELECT job_id, body_hash, created_at FROM job_idempotency WHERE idem_key = $1{}",
                for_update(ctx.backend)
            ),
            args![key],
        )
        .await?;
    if created_at + ctx.rules.idempotency_ttl_ms <= ctx.now {
        ctx.db
            .execute(
                "UPDATE job_idempotency SET job_id = $2, body_hash = $3, created_at = $4 WHERE idem_key = $1",
                args![key, *new_job, hash, ctx.now],
            )
            .await?;
        return Ok(None);
    }
    if body_hash != hash {
        return Err(StoreError::IdempotencyConflict(format!(
            "idempotency_key '{key}' was used for job {job_id} with a different body; \
             use a new key for a different job"
        )));
    }
    Ok(Some(
        job_fetch(ctx, super::rows::uuid(&job_id)?)
            .await?
            .into_job()?,
    ))
}

/// Idempotency keys past their time (the scheduler's sweep).
pub(crate) async fn idempotency_expire(ctx: &mut WriteCtx) -> Result<u64> {
    Ok(ctx
        .db
        .execute(
            "DELETE FROM job_idempotency WHERE created_at <= $1",
            args![ctx.now - ctx.rules.idempotency_ttl_ms],
        )
        .await?)
}

pub(crate) async fn job_insert(ctx: &mut WriteCtx, p: JobInsertParams) -> Result<Job> {
    if let Some(agent) = p.submitted_by {
        agent_touch(ctx, agent).await?;
    }
    let expires = approval_deadline(ctx.now, Some(p.approval_ttl_secs), 0);
    let mut row: JobRow = ctx
        .db
        .one(
            &format!(
                "INSERT INTO jobs (id, title, status, submitted_by, approvals_required, priority, \
         created_at, updated_at, approval_expires_at, plan_approvals_required) \
         VALUES ($1, $2, 'committed', $3, $4, $5, $6, $6, $7, $8) RETURNING {JOB_STATE_COLUMNS}"
            ),
            args![
                p.id.to_string(),
                &p.title,
                p.submitted_by.map(|u| u.to_string()),
                i64::from(p.approvals_required),
                i64::from(p.priority),
                ctx.now,
                expires,
                i64::from(p.plan_approvals_required)
            ],
        )
        .await?;
    let spec = p.job_spec.to_string();
    ctx.db
        .execute(
            "INSERT INTO job_specs (job_id, job_spec) VALUES ($1, $2)",
            args![p.id.to_string(), &spec],
        )
        .await?;
    row.job_spec = Some(spec);
    let data = EventData::job(JobChanged {
        from: None,
        status: JobStatus::Committed,
        title: p.title.clone(),
        error: None,
    });
    event_insert(ctx, EventDraft::new(data).job(p.id).agent(p.submitted_by)).await?;
    row.into_job()
}

pub(crate) async fn job_cancel(
    ctx: &mut WriteCtx,
    id: Uuid,
    reason: Option<String>,
) -> Result<Job> {
    // Lock the job's open tasks before the job row: every operation takes a task before its
    // job, so this order cannot close a cycle with them.
    ctx.db
        .fetch(
            &format!(
                "SELECT id FROM tasks WHERE job_id = $1 AND status IN {OPEN_TASKS}{}",
                for_update(ctx.backend)
            ),
            args![id],
        )
        .await?;
    let job = job_fetch(ctx, id).await?;
    let status = job.status()?;
    if status.is_terminal() {
        return Err(StoreError::InvalidState(format!(
            "job {id} is already '{status}'"
        )));
    }
    let why = match reason {
        Some(r) if !r.trim().is_empty() => format!("cancelled by an operator: {r}"),
        _ => "cancelled by an operator".to_string(),
    };
    // Agents holding a task are told through its event; pending tasks are only counted.
    let active: Vec<TaskRow> = ctx.db.all(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE job_id = $1 AND status IN {ACTIVE_TASKS} ORDER BY idx"), args![&job.id])
    .await?;
    let closed = ctx
        .db
        .execute(
            &format!(
                "UPDATE tasks SET status = 'failed', error = $2, finished_at = $3, updated_at = $3, \
                 lease_expires_at = NULL, claim_request_id = NULL \
                 WHERE job_id = $1 AND status IN {OPEN_TASKS}"
            ),
            args![&job.id, &why, ctx.now],
        )
        .await?;
    for task in active {
        let data = EventData::TaskFailed(TaskFailed {
            index: task.index(),
            task_type: Some(task.task_type()?),
            status: TaskStatus::Failed,
            attempts: task.attempts(),
            error: why.clone(),
            retry: false,
            available_at: None,
            cancelled: true,
            dead_letter: false,
            deliveries: None,
            last_error: None,
            lease_id: task.lease()?,
        });
        let agent = task
            .agent_id
            .as_deref()
            .map(super::rows::uuid)
            .transpose()?;
        let draft = EventDraft::new(data)
            .job(id)
            .task(super::rows::uuid(&task.id)?)
            .agent(agent);
        event_insert(ctx, draft).await?;
    }
    let spec = job.job_spec.clone();
    let job: JobRow = ctx
        .db
        .one(
            &format!(
                "{} WHERE id = $1 RETURNING {JOB_STATE_COLUMNS}",
                job_recount()
            ),
            args![&job.id],
        )
        .await?;
    let mut job = job_transition(
        ctx,
        &job,
        JobEvent::Cancelled,
        Some(format!("{why} ({closed} open tasks closed)")),
    )
    .await?;
    job.job_spec = spec;
    job.into_job()
}

/// Repairs counters of unfinished jobs from their tasks and settles executing jobs whose tasks
/// are all terminal. Idempotent: replicas may run it at once.
pub(crate) async fn jobs_sync(ctx: &mut WriteCtx) -> Result<usize> {
    // Lock the unfinished jobs first (passing over any an agent's call holds), then count in a
    // later statement: on PostgreSQL each statement reads a fresh snapshot, so the counts
    // include every committed task change, and a change still in flight applies its own delta
    // after this commits. Counting inside one UPDATE would write counts from the snapshot taken
    // before it waited for a row, losing what committed meanwhile.
    let jobs: Vec<(String,)> = ctx
        .db
        .all(
            &format!(
                "SELECT id FROM jobs WHERE status IN {CLAIMABLE_JOBS} ORDER BY id{}",
                super::sql::for_update_skip_locked(ctx.backend)
            ),
            &[],
        )
        .await?;
    let mut settled = 0;
    for (id,) in jobs {
        let job: JobRow = ctx
            .db
            .one(
                &format!(
                    "{} WHERE id = $1 RETURNING {JOB_STATE_COLUMNS}",
                    job_recount()
                ),
                args![&id],
            )
            .await?;
        let before = job.status.clone();
        let after = job_settle(ctx, job).await?;
        if after.status != before {
            settled += 1;
        }
    }
    Ok(settled)
}

impl Store {
    pub async fn job_get(&self, id: Uuid) -> Result<Job> {
        let row: Option<JobRow> = self
            .read_opt(
                &format!("SELECT {JOB_COLUMNS} FROM {JOBS_WITH_SPECS} WHERE id = $1"),
                args![id.to_string()],
            )
            .await?;
        row.ok_or_else(|| StoreError::not_found("job", id))?
            .into_job()
    }

    /// Newest first.
    pub async fn job_list(&self, p: JobListParams) -> Result<Page<Job>> {
        let status = p.status.map(|s| s.as_str());
        let pattern = p.search.as_deref().map(like_pattern);
        let (total,): (i64,) = self
            .read_one(
                &format!("SELECT COUNT(*) FROM jobs WHERE {JOB_FILTER}"),
                args![status, pattern.clone()],
            )
            .await?;
        let rows: Vec<JobRow> = self
            .read_all(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM {JOBS_WITH_SPECS} WHERE {JOB_FILTER} \
             ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
                ),
                args![
                    status,
                    pattern,
                    i64::from(p.limit),
                    i64::try_from(p.offset).unwrap_or(i64::MAX)
                ],
            )
            .await?;
        super::rows::page(rows, JobRow::into_job, total, p.limit, p.offset)
    }

    /// When the agent may approve again (`None`: now).
    pub async fn agent_next_approval_at(
        &self,
        agent_id: Uuid,
        cooldown_secs: u64,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        let agent = self.agent_get(agent_id).await?;
        let now = self.clock().now_ms();
        Ok(agent
            .last_approved_at
            .map(|last| cooldown_ends(last.timestamp_millis(), cooldown_secs))
            .filter(|next| *next > now)
            .map(ts))
    }
}
