//! Jobs: submit, list, and a job's tasks and events.

use agora_shared::{
    Event, EventListQuery, Job, JobListQuery, Page, SortOrder, SubmitJob, Task, TaskListQuery,
};
use uuid::Uuid;

use super::AgentAuth;
use crate::error::{ApiError, Result};
use crate::state::AppState;
use crate::store::{EventListParams, JobInsertParams, JobListParams, Submitted, TaskListParams};

/// Submit a job; it waits in `committed` for approvals. `submitted_by` must be the caller. With
/// an `idempotency_key`, a repeat of the same body answers the job the key created.
pub async fn submit(
    state: &AppState,
    caller: Option<AgentAuth>,
    body: SubmitJob,
) -> Result<Submitted> {
    body.validate(state.config.approvals_required)?;
    agora_shared::validate::json_size("job_spec", &body.job_spec, state.config.max_spec_bytes)?;
    if let Some(agent) = body.submitted_by {
        caller
            .ok_or(ApiError::Unauthorized(
                "submitted_by needs that agent's token as 'Authorization: Bearer <token>'",
            ))?
            .require(agent)?;
    }
    let config = &state.config;
    let idempotency = match &body.idempotency_key {
        Some(key) => Some((key.clone(), crate::json::digest(&body)?)),
        None => None,
    };
    let submitted = state
        .store
        .job_submit(JobInsertParams {
            id: Uuid::new_v4(),
            title: body.title.trim().to_string(),
            job_spec: body.job_spec,
            priority: body.priority.unwrap_or(0),
            approvals_required: body.approvals_required.unwrap_or(config.approvals_required),
            submitted_by: body.submitted_by,
            approval_ttl_secs: body.approval_ttl_secs.unwrap_or(config.approval_ttl_secs),
            plan_approvals_required: body
                .plan_approvals_required
                .unwrap_or(config.plan_approvals_required),
            idempotency,
        })
        .await?;
    Ok(submitted)
}

/// Jobs, newest first, optionally of one status or matching a search.
pub async fn list(state: &AppState, q: &JobListQuery) -> Result<Page<Job>> {
    let params = JobListParams {
        status: q.status,
        search: q.search()?,
        limit: q.limit()?,
        offset: q.offset()?,
    };
    Ok(state.store.job_list(params).await?)
}

/// A job's tasks in index order.
pub async fn tasks(state: &AppState, job_id: Uuid, q: &TaskListQuery) -> Result<Page<Task>> {
    let params = TaskListParams {
        job_id: Some(job_id),
        status: q.status,
        agent_id: q.agent_id,
        limit: q.limit()?,
        offset: q.offset()?,
    };
    Ok(state.store.task_list(params).await?)
}

/// A job's events after an id, oldest first (or newest first).
pub async fn events(state: &AppState, job_id: Uuid, q: &EventListQuery) -> Result<Vec<Event>> {
    state.store.job_get(job_id).await?;
    let params = EventListParams {
        job_id: Some(job_id),
        after: q.after.unwrap_or(0),
        limit: q.limit()?,
        newest_first: q.order == Some(SortOrder::Desc),
    };
    Ok(state.store.event_list(params).await?)
}
