//! Bearer tokens: agents get a random token at registration and the store keeps only its
//! SHA-256; a cache maps hot tokens to their agents, and forgets an agent when it unregisters.
//! The HTTP extractors that check them are in `http::auth`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

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
    pub(crate) fn get(&self, hash: &str) -> Option<Uuid> {
        let m = self.map.read().ok()?;
        let (id, at) = m.get(hash)?;
        (at.elapsed() < TOKEN_TTL).then_some(*id)
    }

    pub(crate) fn put(&self, hash: String, id: Uuid) {
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
    mut events: tokio::sync::broadcast::Receiver<crate::frames::Live>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let received = tokio::select! {
            r = events.recv() => r,
            _ = shutdown.changed() => return,
        };
        match received {
            Ok(e) if e.kind() == agora_shared::EventKind::AgentUnregistered => {
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
