//! `GET /api/agents/:id/ws`: the agent's WebSocket (token as Bearer header or `?token=`).

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use uuid::Uuid;

use super::auth::AgentAuth;
use super::extract::AppPath;
use crate::error::{ApiError, Result};
use crate::hub::socket::{self, SocketCtx};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/agents/{id}/ws", get(agent_ws))
}

/// Upgrade to the agent protocol (see `agora_shared::ws`).
#[utoipa::path(get, path = "/api/agents/{id}/ws", tag = "push", params(("id" = Uuid, Path)),
    security(("agent_token" = [])),
    responses((status = 101, description = "switching to the WebSocket protocol"),
              (status = 400, body = agora_shared::ErrorEnvelope), (status = 401, body = agora_shared::ErrorEnvelope),
              (status = 403, body = agora_shared::ErrorEnvelope)))]
pub async fn agent_ws(
    State(state): State<AppState>,
    auth: AgentAuth,
    AppPath(id): AppPath<Uuid>,
    ws: std::result::Result<
        WebSocketUpgrade,
        axum::extract::ws::rejection::WebSocketUpgradeRejection,
    >,
) -> Result<Response> {
    auth.require(id)?;
    let ws = ws.map_err(|e| {
        ApiError::validation(
            "upgrade",
            format!("this endpoint speaks WebSocket only: {}", e.body_text()),
        )
    })?;
    let ctx = SocketCtx {
        store: state.store.clone(),
        hub: state.hub.clone(),
        config: state.config.clone(),
        agent_id: id,
        draining: state.draining.clone(),
        shutdown: state.shutdown.clone(),
    };
    // From the upgrade until the socket has released its tasks, shutdown waits for it.
    let running = state.hub.socket_token();
    let max = state.config.body_limit();
    // Small buffers: an idle agent should cost a few kilobytes, not the 128 KiB defaults; the
    // read buffer grows as a large frame needs it.
    Ok(ws
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(max.saturating_mul(2))
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            let _running = running;
            let (sink, stream) = socket.split();
            socket::run(ctx, sink, stream).await;
        }))
}
