//! `/api/jobs`: submit, list, get, tasks, events, cancel (votes are in `votes.rs`).

use agora_shared::{
    CancelJob, Envelope, ErrorEnvelope, Event, EventListQuery, Job, JobListQuery, Page, SubmitJob,
    Task, TaskListQuery,
};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use uuid::Uuid;

use super::auth::{AdminAuth, AgentAuth};
use super::extract::{created, ok, AppJson, AppPath, AppQuery, OptionalJson};
use super::limits::ClientIp;
use crate::error::Result;
use crate::ops;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/jobs", post(submit_job).get(list_jobs))
        .route("/jobs/{id}", get(get_job))
        .route("/jobs/{id}/tasks", get(list_job_tasks))
        .route("/jobs/{id}/events", get(list_job_events))
        .route("/jobs/{id}/cancel", post(cancel_job))
}

/// Submit a job; it waits in `committed` for approvals. With `submitted_by`, the call needs that
/// agent's token. With `idempotency_key`, the same body again answers the job the key created
/// (200 instead of 201); another body with the key is 409 `IDEMPOTENCY_CONFLICT`.
#[utoipa::path(post, path = "/api/jobs", tag = "jobs", request_body = SubmitJob,
    security((), ("agent_token" = [])),
    responses((status = 201, body = Envelope<Job>), (status = 200, description = "the job this idempotency_key created", body = Envelope<Job>),
              (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
              (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope),
              (status = 413, body = ErrorEnvelope), (status = 429, body = ErrorEnvelope)))]
pub async fn submit_job(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    auth: Option<AgentAuth>,
    AppJson(body): AppJson<SubmitJob>,
) -> Result<(StatusCode, Json<Envelope<Job>>)> {
    if auth.is_none() {
        state.limits.anonymous_write.check(client)?;
    }
    let submitted = ops::jobs::submit(&state, auth, body).await?;
    Ok(if submitted.created {
        created(submitted.job)
    } else {
        (StatusCode::OK, Json(Envelope::ok(submitted.job)))
    })
}

/// Jobs, newest first, optionally of one status.
#[utoipa::path(get, path = "/api/jobs", tag = "jobs", params(JobListQuery),
    responses((status = 200, body = Envelope<Page<Job>>), (status = 400, body = ErrorEnvelope)))]
pub async fn list_jobs(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<JobListQuery>,
) -> Result<Json<Envelope<Page<Job>>>> {
    Ok(ok(ops::jobs::list(&state, &q).await?))
}

/// One job with its counters.
#[utoipa::path(get, path = "/api/jobs/{id}", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = Envelope<Job>), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub async fn get_job(
    State(state): State<AppState>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<Envelope<Job>>> {
    Ok(ok(state.store.job_get(id).await?))
}

/// A job's tasks in index order: its plan task (0; after a rejected plan, 1, 2, … too) and
/// then the work tasks.
#[utoipa::path(get, path = "/api/jobs/{id}/tasks", tag = "jobs", params(("id" = Uuid, Path), TaskListQuery),
    responses((status = 200, body = Envelope<Page<Task>>), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub async fn list_job_tasks(
    State(state): State<AppState>,
    AppPath(id): AppPath<Uuid>,
    AppQuery(q): AppQuery<TaskListQuery>,
) -> Result<Json<Envelope<Page<Task>>>> {
    Ok(ok(ops::jobs::tasks(&state, id, &q).await?))
}

/// The job's events after an id, oldest first (or newest first with `order=desc`).
#[utoipa::path(get, path = "/api/jobs/{id}/events", tag = "jobs", params(("id" = Uuid, Path), EventListQuery),
    responses((status = 200, body = Envelope<Vec<Event>>), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub async fn list_job_events(
    State(state): State<AppState>,
    AppPath(id): AppPath<Uuid>,
    AppQuery(q): AppQuery<EventListQuery>,
) -> Result<Json<Envelope<Vec<Event>>>> {
    Ok(ok(ops::jobs::events(&state, id, &q).await?))
}

/// Operator: fail the job and its open tasks (needs ADMIN_TOKEN when set).
#[utoipa::path(post, path = "/api/jobs/{id}/cancel", tag = "jobs", params(("id" = Uuid, Path)), request_body(content = Option<CancelJob>),
    security(("admin_token" = [])),
    responses((status = 200, body = Envelope<Job>), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope), (status = 429, body = ErrorEnvelope)))]
pub async fn cancel_job(
    State(state): State<AppState>,
    _admin: AdminAuth,
    AppPath(id): AppPath<Uuid>,
    OptionalJson(body): OptionalJson<CancelJob>,
) -> Result<Json<Envelope<Job>>> {
    agora_shared::validate::optional_text(
        "reason",
        body.reason.as_deref(),
        agora_shared::MAX_COMMENT,
    )?;
    Ok(ok(state.store.job_cancel(id, body.reason).await?))
}
