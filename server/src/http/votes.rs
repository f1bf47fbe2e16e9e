//! The approval gate over HTTP: approve or reject a job, approve or reject its plan, and the
//! list of every vote. Agents vote with their own token; an operator votes as a named person.

use agora_shared::{
    Approval, ApproveJob, Approved, Envelope, ErrorEnvelope, RejectJob, Stage, VoteBody, Voter,
};
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use uuid::Uuid;

use super::auth::{open_operator_call, Caller};
use super::extract::{ok, AppJson, AppPath};
use super::limits::ClientIp;
use crate::error::Result;
use crate::ops;
use crate::ops::votes::Ballot;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/jobs/{id}/approvals", get(list_job_approvals))
        .route("/jobs/{id}/approve", post(approve_job))
        .route("/jobs/{id}/reject", post(reject_job))
        .route("/jobs/{id}/plan/approve", post(approve_plan))
        .route("/jobs/{id}/plan/reject", post(reject_plan))
}

async fn cast(
    state: &AppState,
    client: Option<std::net::IpAddr>,
    caller: Caller,
    job_id: Uuid,
    ballot: Ballot,
) -> Result<Json<Envelope<Approved>>> {
    caller.may_cast(&ballot.voter, state.config.admin_token.is_some())?;
    if matches!(ballot.voter, Voter::Person(_)) {
        open_operator_call(state, client)?;
    }
    Ok(ok(ops::votes::cast(state, job_id, ballot).await?))
}

/// Every vote on the job and its plans, in order: approvals with their comments, rejections
/// with their reasons, by agents and by people.
#[utoipa::path(get, path = "/api/jobs/{id}/approvals", tag = "approvals", params(("id" = Uuid, Path)),
    responses((status = 200, body = Envelope<Vec<Approval>>), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub async fn list_job_approvals(
    State(state): State<AppState>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<Envelope<Vec<Approval>>>> {
    Ok(ok(state.store.approval_list(id).await?))
}

/// Approve a job in `committed` or `approving`: as `agent_id` (its token; not the submitter;
/// with `APPROVERS=role`, an `approver`), or as `person` (ADMIN_TOKEN). The quorum accepts the
/// job and creates its plan task.
#[utoipa::path(post, path = "/api/jobs/{id}/approve", tag = "approvals", params(("id" = Uuid, Path)), request_body = ApproveJob,
    security(("agent_token" = []), ("admin_token" = [])),
    responses((status = 200, body = Envelope<Approved>), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
              (status = 403, body = ErrorEnvelope, description = "FORBIDDEN, NOT_AN_APPROVER or SELF_APPROVAL"),
              (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope), (status = 429, body = ErrorEnvelope)))]
pub async fn approve_job(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
    AppJson(body): AppJson<ApproveJob>,
) -> Result<Json<Envelope<Approved>>> {
    let ballot = Ballot::new(VoteBody::Approve(body), Stage::Job)?;
    cast(&state, client, caller, id, ballot).await
}

/// Reject a job in `committed` or `approving`, with a reason: it fails at once with `rejected
/// by <name>: <reason>`. The same voters as an approval; an agent's rejection takes the same
/// cooldown.
#[utoipa::path(post, path = "/api/jobs/{id}/reject", tag = "approvals", params(("id" = Uuid, Path)), request_body = RejectJob,
    security(("agent_token" = []), ("admin_token" = [])),
    responses((status = 200, body = Envelope<Approved>), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
              (status = 403, body = ErrorEnvelope, description = "FORBIDDEN, NOT_AN_APPROVER or SELF_APPROVAL"),
              (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope), (status = 429, body = ErrorEnvelope)))]
pub async fn reject_job(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
    AppJson(body): AppJson<RejectJob>,
) -> Result<Json<Envelope<Approved>>> {
    let ballot = Ballot::new(VoteBody::Reject(body), Stage::Job)?;
    cast(&state, client, caller, id, ballot).await
}

/// Approve the plan of a `ready` job that waits for plan review (`plan_approvals_required`);
/// never by the plan's author. The quorum creates the plan's work tasks.
#[utoipa::path(post, path = "/api/jobs/{id}/plan/approve", tag = "approvals", params(("id" = Uuid, Path)), request_body = ApproveJob,
    security(("agent_token" = []), ("admin_token" = [])),
    responses((status = 200, body = Envelope<Approved>), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
              (status = 403, body = ErrorEnvelope, description = "FORBIDDEN, NOT_AN_APPROVER or SELF_APPROVAL"),
              (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope), (status = 429, body = ErrorEnvelope)))]
pub async fn approve_plan(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
    AppJson(body): AppJson<ApproveJob>,
) -> Result<Json<Envelope<Approved>>> {
    let ballot = Ballot::new(VoteBody::Approve(body), Stage::Plan)?;
    cast(&state, client, caller, id, ballot).await
}

/// Reject the plan under review, with a reason: the job goes back to `accepted` with a new plan
/// task whose spec carries the job's spec, the rejected plans and their reasons; past
/// `MAX_REPLANS` rejected plans the job fails.
#[utoipa::path(post, path = "/api/jobs/{id}/plan/reject", tag = "approvals", params(("id" = Uuid, Path)), request_body = RejectJob,
    security(("agent_token" = []), ("admin_token" = [])),
    responses((status = 200, body = Envelope<Approved>), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
              (status = 403, body = ErrorEnvelope, description = "FORBIDDEN, NOT_AN_APPROVER or SELF_APPROVAL"),
              (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope), (status = 429, body = ErrorEnvelope)))]
pub async fn reject_plan(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
    AppJson(body): AppJson<RejectJob>,
) -> Result<Json<Envelope<Approved>>> {
    let ballot = Ballot::new(VoteBody::Reject(body), Stage::Plan)?;
    cast(&state, client, caller, id, ballot).await
}
