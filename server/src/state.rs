//! The one context object every handler gets.

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::hub::Hub;
use crate::store::Store;
use crate::tokens::TokenCache;

#[derive(Clone)]
pub struct AppState {
    /// All reads and writes.
    pub store: Store,
    /// Limits and defaults the handlers apply.
    pub config: Arc<Config>,
    /// Connected WebSocket agents and the dispatcher that offers them work.
    pub hub: Hub,
    /// Per-job git history; `None` when GIT_ENABLED=false.
    pub git: Option<crate::git::GitHistory>,
    /// Token hash → agent id, so authenticating a hot agent costs no query.
    pub tokens: Arc<TokenCache>,
    /// The live events joined for SSE readers.
    pub sse: crate::segments::Segments,
    /// Per-client rate limits.
    pub limits: Arc<crate::http::limits::Limits>,
    /// Flips to `true` when a stop signal arrives: no more offers or claims, readiness fails,
    /// running WebSocket tasks may finish (SHUTDOWN_GRACE_SECS).
    pub draining: watch::Receiver<bool>,
    /// Flips to `true` when the server stops: sockets, long-polls and streams end.
    pub shutdown: watch::Receiver<bool>,
    /// Knows whether a vital part died (readiness fails, the server stops).
    pub supervisor: crate::supervise::Supervisor,
}
