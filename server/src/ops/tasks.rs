//! Tasks: claim (with its long-poll), start, progress, complete, fail.

use std::time::Duration;

use agora_shared::{
    ClaimTask, ClaimedTask, CompleteTask, FailTask, FinishedWithNext, ProgressTask, StartTask, Task,
};
use uuid::Uuid;

use super::AgentAuth;
use crate::error::{ApiError, Result};
use crate::state::AppState;
use crate::store::{
    NextTask, TaskClaimParams, TaskCompleteParams, TaskFailParams, TaskProgressParams,
    TaskStartParams,
};

/// How often a long-poll re-checks even without a wake-up: a safety net, not the hot path.
const LONG_POLL_RECHECK: Duration = Duration::from_secs(5);

/// Claim the next pending task for `body.agent_id` (the caller), waiting up to `wait_secs` for
/// one; `None` when there is none. `via` names the transport in `agora_claims_total`.
pub async fn claim(
    state: &AppState,
    caller: AgentAuth,
    body: ClaimTask,
    via: &'static str,
) -> Result<Option<ClaimedTask>> {
    body.validate()?;
    caller.require(body.agent_id)?;
    let wait = Duration::from_secs(u64::from(body.wait_secs.unwrap_or(0)));
    let deadline = tokio::time::Instant::now() + wait;
    let mut draining = state.draining.clone();
    if *draining.borrow() {
        return Err(ApiError::Unavailable(
            "the server is draining: claim from another replica, or retry when it is back".into(),
        ));
    }
    loop {
        // Register for the wake-up before looking, so a task that lands in between is not missed.
        let notified = state.store.work_available().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let claimed = state
            .store
            .task_claim(TaskClaimParams {
                agent_id: body.agent_id,
                request_id: body.request_id.clone(),
            })
            .await?;
        if let Some(claimed) = claimed {
            crate::telemetry::claimed(via, 1);
            return Ok(Some(claimed));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline || *draining.borrow() {
            return Ok(None);
        }
        // Wake for new work, or when a task waiting out its retry backoff becomes available.
        let mut recheck = deadline.min(now + LONG_POLL_RECHECK);
        if let Some(at) = state.store.task_available_deadline().await {
            recheck = recheck.min(at);
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(recheck) => {}
            _ = draining.changed() => {}
        }
    }
}

/// The assigned agent starts its task (`claimed → running`).
pub async fn start(
    state: &AppState,
    caller: AgentAuth,
    task_id: Uuid,
    body: StartTask,
) -> Result<Task> {
    body.validate()?;
    let params = TaskStartParams {
        agent_id: caller.0,
        task_id,
        lease_id: body.lease_id,
        heartbeat_secs: body.heartbeat_secs,
    };
    Ok(state.store.task_start(params).await?)
}

/// Progress (0–100), optionally pushing the deadline out.
pub async fn progress(
    state: &AppState,
    caller: AgentAuth,
    task_id: Uuid,
    body: ProgressTask,
) -> Result<Task> {
    body.validate()?;
    let params = TaskProgressParams {
        agent_id: caller.0,
        task_id,
        progress: body.progress,
        message: body.message,
        extend_secs: body.extend_secs,
        lease_id: body.lease_id,
    };
    Ok(state.store.task_progress(params).await?)
}

/// Complete with a result (a plan task's is `{"task_specs": [...]}`, checked by the store);
/// with `next`, the agent's next task is claimed in the same commit.
pub async fn complete(
    state: &AppState,
    caller: AgentAuth,
    task_id: Uuid,
    body: CompleteTask,
    next: bool,
) -> Result<FinishedWithNext> {
    agora_shared::validate::json_size("result", &body.result, state.config.max_spec_bytes)?;
    let params = TaskCompleteParams {
        agent_id: caller.0,
        task_id,
        result: body.result,
        lease_id: body.lease_id,
        next: next_claim(state, next),
    };
    let done = state.store.task_complete(params).await?;
    count_next(&done);
    Ok(done)
}

/// A failed attempt: retried while attempts ≤ max_retries, unless `retryable: false`; with
/// `next`, the agent's next task is claimed in the same commit.
pub async fn fail(
    state: &AppState,
    caller: AgentAuth,
    task_id: Uuid,
    body: FailTask,
    next: bool,
) -> Result<FinishedWithNext> {
    body.validate()?;
    let params = TaskFailParams {
        agent_id: caller.0,
        task_id,
        error: body.error,
        retryable: body.retryable.unwrap_or(true),
        lease_id: body.lease_id,
        next: next_claim(state, next),
    };
    let done = state.store.task_fail(params).await?;
    count_next(&done);
    Ok(done)
}

/// A draining server claims nothing: the report is taken, `next` is `null`.
fn next_claim(state: &AppState, next: bool) -> Option<NextTask> {
    (next && !*state.draining.borrow()).then_some(NextTask::Claim)
}

fn count_next(done: &FinishedWithNext) {
    if done.next.is_some() {
        crate::telemetry::claimed("rest", 1);
    }
}
