//! Plan steps: the plan task under review, the work tasks a plan becomes, and the plan task
//! that follows a rejected plan.

use agora_shared::{
    parse_plan, task_label, voter_label, PlannedTask, RejectionReason, ReplanSpec, TaskType,
};
use serde_json::Value;

use super::tasks::{tasks_insert, Control, NewTask};
use crate::args;
use crate::store::db::ExecExt;
use crate::store::error::{Result, StoreError};
use crate::store::rows::{json, u32_of, JobRow, TaskRow};
use crate::store::sql::TASK_COLUMNS;
use crate::store::{QueueRules, WriteCtx};

/// The job's latest plan task: the one under review when the job waits for plan approvals.
pub(crate) async fn plan_latest(ctx: &mut WriteCtx, job_id: &str) -> Result<TaskRow> {
    ctx.db
        .opt(
            &format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE job_id = $1 AND task_type = 'plan' \
                 ORDER BY idx DESC LIMIT 1"
            ),
            args![job_id],
        )
        .await?
        .ok_or_else(|| StoreError::Internal(anyhow::anyhow!("job {job_id} has no plan task")))
}

/// A task `offset` places after the plan task `plan` (0: right after it), with the plan task's
/// retries and timeout.
fn placed_after(plan: &TaskRow, offset: u32, task_type: TaskType, spec: String) -> NewTask {
    NewTask {
        task_type,
        index: plan.index().saturating_add(1).saturating_add(offset),
        spec,
        max_retries: u32::try_from(plan.max_retries).unwrap_or(0),
        timeout_secs: u64::try_from(plan.timeout_secs).unwrap_or(1),
        control: Control::default(),
    }
}

/// The work tasks of a plan: its entries after the plan task's index, with the plan task's
/// retries and timeout unless an entry sets its own, dependencies as the job's task indexes,
/// and each key's limit from `rules`.
pub(crate) fn plan_work_tasks(
    plan: &TaskRow,
    entries: Vec<PlannedTask>,
    rules: &QueueRules,
) -> Vec<NewTask> {
    let at = |pos: usize| u32::try_from(pos).unwrap_or(u32::MAX);
    let first = plan.index().saturating_add(1);
    entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let mut t = placed_after(plan, at(i), TaskType::Work, e.spec.to_string());
            if let Some(r) = e.max_retries {
                t.max_retries = r;
            }
            if let Some(s) = e.timeout_secs {
                t.timeout_secs = s;
            }
            t.control = Control {
                name: Some(task_label(e.name.as_deref(), i)),
                depends_on: e
                    .depends_on
                    .iter()
                    .map(|d| first.saturating_add(at(*d)))
                    .collect(),
                key_limit: e.key.as_deref().map_or(1, |k| rules.key_limit(k)),
                requires: e.requires,
                key: e.key,
            };
            t
        })
        .collect()
}

/// Creates the work tasks of the approved plan `plan`.
pub(crate) async fn plan_release(
    ctx: &mut WriteCtx,
    job: &JobRow,
    plan: &TaskRow,
) -> Result<JobRow> {
    let result = plan
        .result
        .as_deref()
        .map(json)
        .transpose()?
        .unwrap_or(Value::Null);
    // Validated when the plan landed; a stored plan that no longer parses is corrupt.
    let entries = parse_plan(&result)
        .map_err(|e| StoreError::Internal(anyhow::anyhow!("stored plan of job {}: {e}", job.id)))?;
    let tasks = plan_work_tasks(plan, entries, &ctx.rules);
    tasks_insert(ctx, job, tasks).await
}

/// After plan `round` was rejected: a new plan task (after `plan`) whose spec carries the job's
/// spec and every rejected plan with its reasons.
pub(crate) async fn plan_again(
    ctx: &mut WriteCtx,
    job: &JobRow,
    job_spec: &str,
    plan: &TaskRow,
    round: u32,
) -> Result<JobRow> {
    let plans: Vec<(i64, Option<String>, Option<String>)> = ctx
        .db
        .all(
            "SELECT t.idx, t.result, g.name FROM tasks t LEFT JOIN agents g ON g.id = t.agent_id \
             WHERE t.job_id = $1 AND t.task_type = 'plan' AND t.status = 'completed' ORDER BY t.idx",
            args![&job.id],
        )
        .await?;
    // Plan tasks take indexes 0, 1, … in order: round r is index r - 1.
    let plans = plans
        .into_iter()
        .map(|(idx, result, planner)| {
            let plan = result
                .as_deref()
                .map(json)
                .transpose()?
                .unwrap_or(Value::Null);
            Ok((u32_of(idx).saturating_add(1), planner, plan))
        })
        .collect::<Result<Vec<_>>>()?;
    let rejections: Vec<(i64, String, String, Option<String>)> = ctx
        .db
        .all(
            "SELECT round, voter, name, comment FROM votes \
             WHERE job_id = $1 AND round > 0 AND verdict = 'reject' ORDER BY round, created_at",
            args![&job.id],
        )
        .await?;
    let rejections = rejections
        .into_iter()
        .map(|(round, voter, name, comment)| {
            let by = voter_label(&voter, &name);
            let reason = comment.unwrap_or_default();
            (u32_of(round), RejectionReason { by, reason })
        })
        .collect();
    let spec = ReplanSpec::build(json(job_spec)?, round.saturating_add(1), plans, rejections);
    let spec = serde_json::to_string(&spec).map_err(anyhow::Error::from)?;
    tasks_insert(ctx, job, vec![placed_after(plan, 0, TaskType::Plan, spec)]).await
}
