//! Bearer tokens: agents get a random token at registration and the store keeps only its
//! SHA-256. Extractors check `Authorization: Bearer …` for agent and operator calls.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// A new agent token: 32 random bytes, hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares secrets without leaking where they differ (through their hashes, so lengths too).
pub fn secret_eq(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// How long a cached token stands before the database is asked again: the bound on how long
/// a token revoked on another replica may still work if its `agent.unregistered` event is late.
const TOKEN_TTL: Duration = Duration::from_secs(5);

/// Token hash → agent id of registered agents seen recently (each entry for [`TOKEN_TTL`]).
/// Unregistering evicts the agent's entry on every replica, through the event feed
/// ([`evict_unregistered`]).
#[derive(Default)]
pub struct TokenCache {
    map: RwLock<HashMap<String, (Uuid, Instant)>>,
}

impl TokenCache {
    fn get(&self, hash: &str) -> Option<Uuid> {
        let m = self.map.read().ok()?;
        let (id, at) = m.get(hash)?;
        (at.elapsed() < TOKEN_TTL).then_some(*id)
    }

    fn put(&self, hash: String, id: Uuid) {
        if let Ok(mut m) = self.map.write() {
            // A cheap bound: a cache this large is mostly expired entries.
            if m.len() > 200_000 {
                m.retain(|_, (_, at)| at.elapsed() < TOKEN_TTL);
            }
            m.insert(hash, (id, Instant::now()));
        }
    }

    fn clear(&self) {
        if let Ok(mut m) = self.map.write() {
            m.clear();
        }
    }

    /// Forget an unregistered agent's token.
    pub fn forget(&self, id: Uuid) {
        if let Ok(mut m) = self.map.write() {
            m.retain(|_, (v, _)| *v != id);
        }
    }
}

/// Evicts the token of every agent unregistered anywhere (each replica reads the same event
/// feed), so a revoked token stops working everywhere at once; a missed stretch of the feed
/// empties the cache.
pub async fn evict_unregistered(
    cache: Arc<TokenCache>,
    mut events: tokio::sync::broadcast::Receiver<Arc<agora_shared::Event>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let received = tokio::select! {
            r = events.recv() => r,
            _ = shutdown.changed() => return,
        };
        match received {
            Ok(e) if e.kind == agora_shared::EventKind::AgentUnregistered => {
                if let Some(agent) = e.agent_id {
                    cache.forget(agent);
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => cache.clear(),
            Err(RecvError::Closed) => return,
        }
    }
}

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

/// The authenticated agent of a request.
#[derive(Debug, Clone, Copy)]
pub struct AgentAuth(pub Uuid);

impl AgentAuth {
    /// 403 unless the agent acts for itself.
    pub fn require(self, agent_id: Uuid) -> Result<(), ApiError> {
        if self.0 == agent_id {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this token belongs to agent {}, not to agent {agent_id}",
                self.0
            )))
        }
    }
}

impl FromRequestParts<AppState> for AgentAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized(
            "this call needs the agent's token as 'Authorization: Bearer <token>'",
        ))?;
        let hash = hash_token(&token);
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
}

/// Declares an extractor that requires a configured shared secret as the bearer token (and
/// lets everyone through when the secret is not set).
macro_rules! secret_extractor {
    ($(#[$doc:meta])* $name:ident, $field:ident, $message:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name;

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
                check_secret(parts, state.config.$field.as_deref(), $message)?;
                Ok($name)
            }
        }
    };
}

secret_extractor!(
    /// An operator call: needs `ADMIN_TOKEN` when it is set, open otherwise.
    AdminAuth,
    admin_token,
    "this operator call needs 'Authorization: Bearer <ADMIN_TOKEN>'"
);

secret_extractor!(
    /// Registration: needs `REGISTRATION_TOKEN` when it is set, open otherwise.
    RegistrationAuth,
    registration_token,
    "registration needs 'Authorization: Bearer <REGISTRATION_TOKEN>'"
);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashes_stable() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), a);
        assert!(secret_eq("x", "x"));
        assert!(!secret_eq("x", "y"));
    }
}
