//! The HTTP surface: `app(state)` builds the whole router, one module per resource.

pub mod agents;
pub mod auth;
pub mod browser;
pub mod dashboard;
pub mod extract;
pub mod git;
pub mod jobs;
pub mod limits;
pub mod mcp;
pub mod metrics;
pub mod openapi;
pub mod sse;
pub mod system;
pub mod tasks;
pub mod votes;
pub mod ws;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::state::AppState;

/// The whole application, ready to serve (or to call with `oneshot` in tests).
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .merge(agents::router())
        .merge(jobs::router())
        .merge(votes::router())
        .merge(tasks::router())
        .merge(system::router())
        .merge(sse::router())
        .merge(ws::router())
        .merge(git::router())
        .merge(openapi::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(axum::middleware::from_fn(metrics::track_http));
    let cors = browser::cors(&state.config.allowed_origins);
    let router = Router::new()
        .route("/metrics", axum::routing::get(metrics::render))
        .nest("/api", api)
        .merge(mcp::router(&state))
        .fallback(dashboard::serve)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            browser::guard,
        ))
        .layer(DefaultBodyLimit::max(state.config.body_limit()))
        .layer(RequestBodyTimeoutLayer::new(state.config.body_timeout()))
        .layer(TraceLayer::new_for_http())
        .with_state(state);
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
