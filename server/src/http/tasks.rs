//! `/api/tasks`: list, claim (with long-poll), get, start, progress, complete, fail.

use agora_shared::{
    ClaimTask, ClaimedTask, CompleteTask, Envelope, ErrorEnvelope, FailTask, FinishedWithNext,
    NextQuery, Page, ProgressTask, StartTask, Task, TaskListQuery,
};
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use uuid::Uuid;

use super::auth::AgentAuth;
use super::extract::{ok, AppJson, AppPath, AppQuery, OptionalJson};
use crate::error::Result;
use crate::ops;
use crate::state::AppState;
use crate::store::TaskListParams;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tasks", get(list_tasks))
        .route("/tasks/claim", post(claim_task))
        .route("/tasks/{id}", get(get_task))
        .route("/tasks/{id}/start", post(start_task))
        .route("/tasks/{id}/progress", post(progress_task))
        .route("/tasks/{id}/complete", post(complete_task))
        .route("/tasks/{id}/fail", post(fail_task))
}

/// Claim the next pending task: a new delivery, with its own `lease_id`, that must be started
/// (or reported on) before `task.lease_expires_at` (CLAIM_LEASE_SECS) or it goes back to
/// pending. `data` is `null` when there is none; with `wait_secs` the call waits up to that long
/// for one and answers the moment one is available. With `request_id`, a retry of a claim whose
/// answer was lost gets the same task and lease back, with no second delivery.
#[utoipa::path(post, path = "/api/tasks/claim", tag = "tasks", request_body = ClaimTask,
    security(("agent_token" = [])),
    responses((status = 200, body = Envelope<ClaimedTask>), (status = 400, body = ErrorEnvelope),
              (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub async fn claim_task(
    State(state): State<AppState>,
    auth: AgentAuth,
    AppJson(body): AppJson<ClaimTask>,
) -> Result<Json<Envelope<ClaimedTask>>> {
    Ok(match ops::tasks::claim(&state, auth, body, "rest").await? {
        Some(claimed) => ok(claimed),
        None => Json(Envelope::empty()),
    })
}

/// Tasks of every job, newest first: `status=running` shows what the fleet is doing,
/// `agent_id` what one agent holds.
#[utoipa::path(get, path = "/api/tasks", tag = "tasks", params(TaskListQuery),
    responses((status = 200, body = Envelope<Page<Task>>), (status = 400, body = ErrorEnvelope)))]
pub async fn list_tasks(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<TaskListQuery>,
) -> Result<Json<Envelope<Page<Task>>>> {
    let params = TaskListParams {
        job_id: None,
        status: q.status,
        agent_id: q.agent_id,
        limit: q.limit()?,
        offset: q.offset()?,
    };
    Ok(ok(state.store.task_list(params).await?))
}

/// One task.
#[utoipa::path(get, path = "/api/tasks/{id}", tag = "tasks", params(("id" = Uuid, Path)),
    responses((status = 200, body = Envelope<Task>), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub async fn get_task(
    State(state): State<AppState>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<Envelope<Task>>> {
    Ok(ok(state.store.task_get(id).await?))
}

/// The assigned agent starts the task (`claimed → running`); the claim lease ends and the running
/// lease begins: the task's deadline, or `heartbeat_secs` renewed by each progress or heartbeat.
/// The body may be left out.
#[utoipa::path(post, path = "/api/tasks/{id}/start", tag = "tasks", params(("id" = Uuid, Path)), request_body = StartTask,
    security(("agent_token" = [])),
    responses((status = 200, body = Envelope<Task>), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
              (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
pub async fn start_task(
    State(state): State<AppState>,
    auth: AgentAuth,
    AppPath(id): AppPath<Uuid>,
    OptionalJson(body): OptionalJson<StartTask>,
) -> Result<Json<Envelope<Task>>> {
    Ok(ok(ops::tasks::start(&state, auth, id, body).await?))
}

/// Report progress (0–100) and optionally push the deadline out by `extend_secs`.
#[utoipa::path(post, path = "/api/tasks/{id}/progress", tag = "tasks", params(("id" = Uuid, Path)), request_body = ProgressTask,
    security(("agent_token" = [])),
    responses((status = 200, body = Envelope<Task>), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
              (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
pub async fn progress_task(
    State(state): State<AppState>,
    auth: AgentAuth,
    AppPath(id): AppPath<Uuid>,
    AppJson(body): AppJson<ProgressTask>,
) -> Result<Json<Envelope<Task>>> {
    Ok(ok(ops::tasks::progress(&state, auth, id, body).await?))
}

/// Complete the task with its result. A plan task's result must be `{"task_specs": [...]}`
/// (422 otherwise, and the task stays running). With `?next=true` the answer is `{task, next}`:
/// the agent's next task claimed in the same commit (`null` when none is pending).
#[utoipa::path(post, path = "/api/tasks/{id}/complete", tag = "tasks", params(("id" = Uuid, Path), NextQuery), request_body = CompleteTask,
    security(("agent_token" = [])),
    responses((status = 200, body = Envelope<Finished>), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
              (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope),
              (status = 413, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
pub async fn complete_task(
    State(state): State<AppState>,
    auth: AgentAuth,
    AppPath(id): AppPath<Uuid>,
    AppQuery(q): AppQuery<NextQuery>,
    OptionalJson(body): OptionalJson<CompleteTask>,
) -> Result<Json<Envelope<Finished>>> {
    let done = ops::tasks::complete(&state, auth, id, body, q.next).await?;
    Ok(ok(Finished::answer(done, q)))
}

/// Report a failed attempt. It is retried while attempts ≤ max_retries, unless
/// `retryable: false`. With `?next=true` the answer is `{task, next}`, as for complete.
#[utoipa::path(post, path = "/api/tasks/{id}/fail", tag = "tasks", params(("id" = Uuid, Path), NextQuery), request_body = FailTask,
    security(("agent_token" = [])),
    responses((status = 200, body = Envelope<Finished>), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
              (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
pub async fn fail_task(
    State(state): State<AppState>,
    auth: AgentAuth,
    AppPath(id): AppPath<Uuid>,
    AppQuery(q): AppQuery<NextQuery>,
    AppJson(body): AppJson<FailTask>,
) -> Result<Json<Envelope<Finished>>> {
    let done = ops::tasks::fail(&state, auth, id, body, q.next).await?;
    Ok(ok(Finished::answer(done, q)))
}

/// What complete and fail answer: the task, or with `?next=true` the task and the agent's next
/// claim (`{task, next}`).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Finished {
    Task(Box<Task>),
    WithNext(Box<FinishedWithNext>),
}

impl Finished {
    fn answer(done: FinishedWithNext, q: NextQuery) -> Finished {
        match q.next {
            true => Finished::WithNext(Box::new(done)),
            false => Finished::Task(Box::new(done.task)),
        }
    }
}
