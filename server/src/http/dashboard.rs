//! The dashboard at `/`: the static files of its Trunk build (`FRONTEND_DIR`), with
//! `index.html` for every other path so the app's own routes (`/jobs/…`) load on refresh.
//! Without a build, `/` says how to make one.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use crate::state::AppState;

const NOT_BUILT: &str = r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Agora</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto">
<h1>Agora is running</h1>
<p>The dashboard has not been built, so there is nothing to show here yet. Build it with</p>
<pre>scripts/build-dashboard.sh</pre>
<p>(or start the server with <code>scripts/run.sh</code>, which builds it first), then reload.
The server looks for it in <code>FRONTEND_DIR</code> (default <code>dist</code>).</p>
<p>The API is at <a href="/api/health">/api/health</a>, its description at
<a href="/api/openapi.json">/api/openapi.json</a>.</p>
</body></html>"#;

pub async fn serve(State(state): State<AppState>, req: Request) -> Response {
    let dir = &state.config.frontend_dir;
    let index = dir.join("index.html");
    if !index.is_file() {
        return (
            StatusCode::OK,
            [(header::CACHE_CONTROL, "no-store")],
            Html(NOT_BUILT),
        )
            .into_response();
    }
    match ServeDir::new(dir)
        .fallback(ServeFile::new(index))
        .oneshot(req)
        .await
    {
        Ok(res) => res.into_response(),
        Err(never) => match never {},
    }
}
