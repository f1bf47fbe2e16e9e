//! `/mcp`: the MCP endpoint ([`crate::mcp`] over rmcp's streamable HTTP transport: POST and
//! GET on one path, `MCP-Session-Id`, SSE answers). Before any MCP processing, every request
//! must carry an agent's token (`Authorization: Bearer`; 401 otherwise) and any browser
//! `Origin` must be the server's own or in `ALLOWED_ORIGINS` (403), on reads too: a page must
//! not open an agent's MCP stream.

use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use super::auth::AgentAuth;
use crate::error::ApiError;
use crate::mcp::AgoraMcp;
use crate::state::AppState;

pub fn router(state: &AppState) -> Router<AppState> {
    let stop = CancellationToken::new();
    end_sessions_on_shutdown(state, stop.clone());
    // Host names are checked by `browser::guard` for the whole server (loopback servers answer
    // loopback names and ALLOWED_HOSTS only), Origins below: rmcp's own lists stay open.
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .disable_allowed_origins()
        .with_max_request_body_bytes(state.config.body_limit())
        .with_cancellation_token(stop);
    let mcp_state = state.clone();
    let service = StreamableHttpService::new(
        move || Ok(AgoraMcp::new(mcp_state.clone())),
        LocalSessionManager::default().into(),
        config,
    );
    Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_agent,
        ))
}

/// The agent's token (401 before any MCP processing) and a browser's Origin (403), checked
/// on every request; the agent goes to the tools in the request's extensions.
async fn require_agent(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    super::browser::check_origin(&state, req.headers())?;
    let (mut parts, body) = req.into_parts();
    let agent =
        <AgentAuth as FromRequestParts<AppState>>::from_request_parts(&mut parts, &state).await?;
    parts.extensions.insert(agent);
    Ok(next.run(Request::from_parts(parts, body)).await)
}

/// Open MCP streams end when the server stops, so the graceful shutdown does not wait on them.
fn end_sessions_on_shutdown(state: &AppState, stop: CancellationToken) {
    let mut shutdown = state.shutdown.clone();
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        crate::serve::stopped(&mut shutdown).await;
        stop.cancel();
    });
}
