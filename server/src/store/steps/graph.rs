//! Task graph steps: what a completed task unblocks, what a failed one fails, what a claimed
//! task gets from its dependencies (`inputs`), and the lock that makes keys exact on PostgreSQL.

use std::collections::{HashMap, VecDeque};

use agora_shared::{EventData, TaskFailed, TaskStatus, TaskType};
use serde_json::{Map, Value};

use super::jobs::job_task_changed;
use super::tasks::event_for;
use crate::args;
use crate::store::db::{Exec, ExecExt, Value as DbValue};
use crate::store::error::Result;
use crate::store::events::event_insert;
use crate::store::rows::{json, task_label_at, JobRow, TaskRow};
use crate::store::sql::{placeholders, TASK_COLUMNS};
use crate::store::WriteCtx;

/// The error of a task failed because a task it depends on failed for good.
pub(crate) fn dependency_failed(label: &str) -> String {
    format!("dependency failed: {label}")
}

/// `done` completed: each of its dependents has one unmet dependency fewer, and those with none
/// left join the claim index. Wakes the claimers when any did. Nothing to do in a `job` without
/// edges (read in this transaction, after its row was locked: no edge can appear meanwhile).
pub(crate) async fn deps_completed(ctx: &mut WriteCtx, job: &JobRow, done: &TaskRow) -> Result<()> {
    if job.has_deps == 0 {
        return Ok(());
    }
    let unblocked = ctx
        .db
        .execute(
            "UPDATE tasks SET unmet = unmet - 1 WHERE job_id = $1 AND status = 'pending' AND unmet > 0 \
             AND idx IN (SELECT task_idx FROM task_deps WHERE job_id = $1 AND dep_idx = $2)",
            args![&done.job_id, done.idx],
        )
        .await?;
    if unblocked > 0 {
        ctx.work_added();
    }
    Ok(())
}

/// `failed` failed for good: every task that depends on it, directly or through others, fails
/// with "dependency failed: <name>" naming the task it waited for, each with its event and its
/// job's bookkeeping (the last one settles the job).
pub(crate) async fn deps_fail(ctx: &mut WriteCtx, failed: &TaskRow) -> Result<()> {
    let mut queue = VecDeque::from([(failed.idx, failed.label())]);
    while let Some((idx, label)) = queue.pop_front() {
        let error = dependency_failed(&label);
        let dependents: Vec<TaskRow> = ctx
            .db
            .all(
                &format!(
                    "UPDATE tasks SET status = 'failed', error = $3, finished_at = $4, updated_at = $4 \
                     WHERE job_id = $1 AND status = 'pending' \
                     AND idx IN (SELECT task_idx FROM task_deps WHERE job_id = $1 AND dep_idx = $2) \
                     RETURNING {TASK_COLUMNS}"
                ),
                args![&failed.job_id, idx, &error, ctx.now],
            )
            .await?;
        for row in dependents {
            let data = EventData::TaskFailed(TaskFailed {
                index: row.index(),
                task_type: Some(row.task_type()?),
                status: TaskStatus::Failed,
                attempts: row.attempts(),
                error: error.clone(),
                retry: false,
                available_at: None,
                cancelled: false,
                dead_letter: false,
                deliveries: None,
                last_error: None,
                lease_id: None,
            });
            event_insert(ctx, event_for(&row, data)?).await?;
            job_task_changed(
                ctx,
                &row.job_id,
                TaskType::Work,
                Some(TaskStatus::Pending),
                TaskStatus::Failed,
                Some(&error),
            )
            .await?;
            queue.push_back((row.idx, row.label()));
        }
    }
    Ok(())
}

/// What a claimed task gets from its dependencies: their results by name, in `depends_on`
/// order, while they fit in `MAX_SPEC_BYTES` together; the names of those left out. The sizes
/// are read first, so that a claim never reads results it will not send.
pub(crate) async fn claim_inputs(
    ctx: &mut WriteCtx,
    row: &TaskRow,
) -> Result<(Map<String, Value>, Vec<String>)> {
    let deps = row.depends_on()?;
    let mut inputs = Map::new();
    let mut omitted = Vec::new();
    if deps.is_empty() {
        return Ok((inputs, omitted));
    }
    let sizes: Vec<(i64, Option<String>, Option<i64>)> = ctx
        .db
        .all(
            &format!(
                "SELECT idx, name, LENGTH(result) FROM tasks WHERE job_id = $1 AND idx IN ({})",
                placeholders(deps.len(), 2)
            ),
            &dep_params(&row.job_id, &deps),
        )
        .await?;
    let sizes: HashMap<i64, (Option<String>, i64)> = sizes
        .into_iter()
        .map(|(i, n, len)| (i, (n, len.unwrap_or(0))))
        .collect();
    // In depends_on order, each while the total fits (LENGTH counts characters: a first cut,
    // checked in bytes below).
    let mut budget = ctx.rules.max_inputs_bytes;
    let mut wanted = Vec::new();
    for d in &deps {
        let Some((name, len)) = sizes.get(&i64::from(*d)) else {
            continue;
        };
        let name = task_label_at(name.as_deref(), i64::from(*d));
        match usize::try_from(*len) {
            Ok(len) if len <= budget => {
                budget -= len;
                wanted.push((*d, name));
            }
            _ => omitted.push(name),
        }
    }
    if wanted.is_empty() {
        return Ok((inputs, omitted));
    }
    let idx: Vec<u32> = wanted.iter().map(|(d, _)| *d).collect();
    let results: Vec<(i64, Option<String>)> = ctx
        .db
        .all(
            &format!(
                "SELECT idx, result FROM tasks WHERE job_id = $1 AND idx IN ({})",
                placeholders(idx.len(), 2)
            ),
            &dep_params(&row.job_id, &idx),
        )
        .await?;
    let mut results: HashMap<i64, Option<String>> = results.into_iter().collect();
    let mut budget = ctx.rules.max_inputs_bytes;
    for (d, name) in wanted {
        let result = results
            .remove(&i64::from(d))
            .flatten()
            .unwrap_or_else(|| "null".into());
        if result.len() > budget {
            omitted.push(name);
            continue;
        }
        budget -= result.len();
        inputs.insert(name, json(&result)?);
    }
    Ok((inputs, omitted))
}

/// A job id and task indexes as statement parameters.
fn dep_params(job_id: &str, idx: &[u32]) -> Vec<DbValue> {
    let mut params = vec![DbValue::from(job_id)];
    params.extend(idx.iter().map(|d| DbValue::from(i64::from(*d))));
    params
}

/// The claims lock: on PostgreSQL every batch takes this advisory lock (an arbitrary constant)
/// before anything else (`batch::run_batch`). Claims, starts and completions take it shared
/// while no pending task has an exclusive key, and their claims then pass over keyed tasks;
/// every other batch takes it exclusively, so a keyed claim's statement sees every earlier
/// claim committed and counts a key's holders exactly (two concurrent claims could otherwise
/// both see a key free). Taken first, it can never close a cycle with row locks. SQLite's one
/// writer needs none.
pub(crate) const CLAIM_LOCK: i64 = 0x4147_4f52_434c_4d4b;
