//! `/api/agents`: register, heartbeat, unregister, list, can-approve, roles.

use agora_shared::{
    Agent, AgentListQuery, CanApprove, Envelope, ErrorEnvelope, Page, RegisterAgent, Registered,
    SetRoles,
};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use uuid::Uuid;

use super::auth::{AdminAuth, AgentAuth, RegistrationAuth};
use super::extract::{created, ok, AppJson, AppPath, AppQuery};
use super::limits::ClientIp;
use crate::error::Result;
use crate::state::AppState;
use crate::store::AgentRegisterParams;
use crate::tokens::{hash_token, new_token};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/agents/register", post(register_agent))
        .route("/agents", get(list_agents))
        .route("/agents/{id}", get(get_agent).delete(unregister_agent))
        .route("/agents/{id}/heartbeat", post(heartbeat_agent))
        .route("/agents/{id}/can-approve", get(can_approve))
        .route("/agents/{id}/roles", put(set_agent_roles))
}

/// Register an agent. The token in the answer is shown once.
#[utoipa::path(post, path = "/api/agents/register", tag = "agents", request_body = RegisterAgent,
    security((), ("registration_token" = [])),
    responses((status = 201, body = Envelope<Registered>), (status = 400, body = ErrorEnvelope),
              (status = 401, body = ErrorEnvelope), (status = 413, body = ErrorEnvelope), (status = 429, body = ErrorEnvelope)))]
pub async fn register_agent(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    _auth: RegistrationAuth,
    AppJson(body): AppJson<RegisterAgent>,
) -> Result<(StatusCode, Json<Envelope<Registered>>)> {
    state.limits.registration.check(client)?;
    body.validate()?;
    let token = new_token();
    let agent = state
        .store
        .agent_register(AgentRegisterParams {
            id: Uuid::new_v4(),
            name: body.name.trim().to_string(),
            capabilities: body.capabilities.unwrap_or_default(),
            token_hash: hash_token(&token),
        })
        .await?;
    Ok(created(Registered {
        agent_id: agent.id,
        token,
        agent,
    }))
}

/// Registered agents, a page at a time: online first, then the most recently seen.
#[utoipa::path(get, path = "/api/agents", tag = "agents", params(AgentListQuery),
    responses((status = 200, body = Envelope<Page<Agent>>), (status = 400, body = ErrorEnvelope)))]
pub async fn list_agents(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<AgentListQuery>,
) -> Result<Json<Envelope<Page<Agent>>>> {
    Ok(ok(state
        .store
        .agent_list(q.status, q.limit()?, q.offset()?)
        .await?))
}

/// One agent.
#[utoipa::path(get, path = "/api/agents/{id}", tag = "agents", params(("id" = Uuid, Path)),
    responses((status = 200, body = Envelope<Agent>), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub async fn get_agent(
    State(state): State<AppState>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<Envelope<Agent>>> {
    Ok(ok(state.store.agent_get(id).await?))
}

/// Tell the server the agent is alive (any authenticated call does too).
#[utoipa::path(post, path = "/api/agents/{id}/heartbeat", tag = "agents", params(("id" = Uuid, Path)),
    security(("agent_token" = [])),
    responses((status = 200, body = Envelope<Agent>), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
              (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub async fn heartbeat_agent(
    State(state): State<AppState>,
    auth: AgentAuth,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<Envelope<Agent>>> {
    auth.require(id)?;
    Ok(ok(state.store.agent_heartbeat(id).await?))
}

/// Unregister: the token stops working and the agent's tasks go back to pending.
#[utoipa::path(delete, path = "/api/agents/{id}", tag = "agents", params(("id" = Uuid, Path)),
    security(("agent_token" = [])),
    responses((status = 200, body = Envelope<Agent>), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
              (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub async fn unregister_agent(
    State(state): State<AppState>,
    auth: AgentAuth,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<Envelope<Agent>>> {
    auth.require(id)?;
    let agent = state.store.agent_unregister(id).await?;
    state.tokens.forget(id);
    Ok(ok(agent))
}

/// Whether the agent's approval cooldown has passed.
#[utoipa::path(get, path = "/api/agents/{id}/can-approve", tag = "agents", params(("id" = Uuid, Path)),
    responses((status = 200, body = Envelope<CanApprove>), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub async fn can_approve(
    State(state): State<AppState>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<Envelope<CanApprove>>> {
    let next = state
        .store
        .agent_next_approval_at(id, state.config.approval_cooldown_secs)
        .await?;
    Ok(ok(CanApprove {
        can_approve: next.is_none(),
        next_allowed_at: next,
    }))
}

/// Operator: set the agent's roles (the whole set; `[]` removes them). With `APPROVERS=role`
/// only agents holding `approver` may vote.
#[utoipa::path(put, path = "/api/agents/{id}/roles", tag = "agents", params(("id" = Uuid, Path)), request_body = SetRoles,
    security(("admin_token" = [])),
    responses((status = 200, body = Envelope<Agent>), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope), (status = 429, body = ErrorEnvelope)))]
pub async fn set_agent_roles(
    State(state): State<AppState>,
    _admin: AdminAuth,
    AppPath(id): AppPath<Uuid>,
    AppJson(body): AppJson<SetRoles>,
) -> Result<Json<Envelope<Agent>>> {
    Ok(ok(state.store.agent_set_roles(id, body.roles).await?))
}
