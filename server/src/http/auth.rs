//! Who is calling: `Authorization: Bearer …` (or `?token=` for WebSockets) checked for agent,
//! operator and registration calls.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use std::net::IpAddr;
use uuid::Uuid;

use super::limits::client_ip;
use crate::error::ApiError;
use crate::state::AppState;
use crate::tokens::{hash_token, secret_eq};

/// The bearer token of a request, from the header or (for WebSockets) `?token=`.
pub fn bearer(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string());
    }
    parts.uri.query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| v.to_string())
    })
}

/// The authenticated agent of a request (its rules are transport-neutral, in `ops`).
pub use crate::ops::AgentAuth;

impl FromRequestParts<AppState> for AgentAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized(AGENT_TOKEN_NEEDED))?;
        agent_of_token(state, &token).await
    }
}

const AGENT_TOKEN_NEEDED: &str =
    "this call needs the agent's token as 'Authorization: Bearer <token>'";

/// The agent a token belongs to, or 401.
async fn agent_of_token(state: &AppState, token: &str) -> Result<AgentAuth, ApiError> {
    let hash = hash_token(token);
    if let Some(id) = state.tokens.get(&hash) {
        return Ok(AgentAuth(id));
    }
    match state.store.agent_id_by_token_hash(&hash).await? {
        Some(id) => {
            state.tokens.put(hash, id);
            Ok(AgentAuth(id))
        }
        None => Err(ApiError::Unauthorized("unknown or revoked agent token")),
    }
}

/// Who calls, for the calls an agent or an operator may make (votes): the operator's
/// `ADMIN_TOKEN`, an agent's token, or no token at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Operator,
    Agent(Uuid),
    Anonymous,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(token) = bearer(parts) else {
            return Ok(Caller::Anonymous);
        };
        if let Some(admin) = state.config.admin_token.as_deref() {
            if secret_eq(&token, admin) {
                return Ok(Caller::Operator);
            }
        }
        Ok(Caller::Agent(agent_of_token(state, &token).await?.0))
    }
}

impl Caller {
    /// Whether this caller may cast `voter`'s vote: an agent only with its own token; a person
    /// only through an operator (anyone while `ADMIN_TOKEN` is unset, as for every operator
    /// call).
    pub fn may_cast(
        self,
        voter: &agora_shared::Voter,
        admin_token_set: bool,
    ) -> Result<(), ApiError> {
        match (voter, self) {
            (agora_shared::Voter::Agent(id), Caller::Agent(me)) => AgentAuth(me).require(*id),
            (agora_shared::Voter::Agent(_), Caller::Operator) => Err(ApiError::Forbidden(
                "an operator votes as a person ('person'), not as an agent".to_string(),
            )),
            (agora_shared::Voter::Agent(_), Caller::Anonymous) => {
                Err(ApiError::Unauthorized(AGENT_TOKEN_NEEDED))
            }
            (agora_shared::Voter::Person(_), Caller::Operator) => Ok(()),
            (agora_shared::Voter::Person(_), _) if !admin_token_set => Ok(()),
            (agora_shared::Voter::Person(_), _) => Err(ApiError::Unauthorized(
                "voting as a person needs the operator's 'Authorization: Bearer <ADMIN_TOKEN>'",
            )),
        }
    }
}

/// An operator call: needs `ADMIN_TOKEN` when it is set. While it is unset anyone may make
/// one (on loopback, or with ALLOW_OPEN), and each counts against the anonymous write limit.
#[derive(Debug, Clone, Copy)]
pub struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        check_secret(
            parts,
            state.config.admin_token.as_deref(),
            "this operator call needs 'Authorization: Bearer <ADMIN_TOKEN>'",
        )?;
        open_operator_call(state, client_ip(parts))?;
        Ok(AdminAuth)
    }
}

/// While `ADMIN_TOKEN` is unset, an operator's call (a cancel, roles, a person's vote) is
/// anyone's: it counts against the anonymous write limit.
pub fn open_operator_call(state: &AppState, client: Option<IpAddr>) -> Result<(), ApiError> {
    if state.config.admin_token.is_none() {
        state.limits.anonymous_write.check(client)?;
    }
    Ok(())
}

/// Registration: needs `REGISTRATION_TOKEN` when it is set, open otherwise (and limited per
/// client by the handler).
#[derive(Debug, Clone, Copy)]
pub struct RegistrationAuth;

impl FromRequestParts<AppState> for RegistrationAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        check_secret(
            parts,
            state.config.registration_token.as_deref(),
            "registration needs 'Authorization: Bearer <REGISTRATION_TOKEN>'",
        )?;
        Ok(RegistrationAuth)
    }
}

fn check_secret(
    parts: &Parts,
    expected: Option<&str>,
    message: &'static str,
) -> Result<(), ApiError> {
    match expected {
        None => Ok(()),
        Some(secret) => match bearer(parts) {
            Some(given) if secret_eq(&given, secret) => Ok(()),
            _ => Err(ApiError::Unauthorized(message)),
        },
    }
}

/// `Option<AgentAuth>`: `None` without a token, 401 with a wrong one.
impl axum::extract::OptionalFromRequestParts<AppState> for AgentAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        if bearer(parts).is_none() {
            return Ok(None);
        }
        <AgentAuth as FromRequestParts<AppState>>::from_request_parts(parts, state)
            .await
            .map(Some)
    }
}
