//! The dashboard at `/`, with `index.html` for every other path so the app's own routes
//! (`/jobs/…`) load on refresh. By default it is the build embedded in the binary
//! (`frontend/dist`, made by `scripts/build-dashboard.sh` and committed); `FRONTEND_DIR` serves
//! another build from disk instead (Trunk's `dist`, say). A directory without a build gets a
//! page that says how to make one.

use std::path::Path;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use rust_embed::Embed;
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use crate::state::AppState;

/// The committed build. Its asset names carry their content's hash, so browsers may keep them
/// for good; `index.html` is revalidated on every load.
#[derive(Embed)]
#[folder = "../frontend/dist"]
struct Built;

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

const NOT_BUILT: &str = r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Agora</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto">
<h1>Agora is running</h1>
<p>FRONTEND_DIR names a directory without a dashboard build (no <code>index.html</code>).
Build one with</p>
<pre>scripts/build-dashboard.sh</pre>
<p>(it writes <code>frontend/dist</code>), or start the server without <code>FRONTEND_DIR</code>
to serve the dashboard built into it.</p>
<p>The API is at <a href="/api/health">/api/health</a>, its description at
<a href="/api/openapi.json">/api/openapi.json</a>.</p>
</body></html>"#;

pub async fn serve(State(state): State<AppState>, req: Request) -> Response {
    match &state.config.frontend_dir {
        Some(dir) => from_dir(dir, req).await,
        None => embedded(req.uri().path(), req.headers()),
    }
}

/// A file of the embedded build; gzipped when the browser takes it and the build has a `.gz`.
fn embedded(path: &str, headers: &HeaderMap) -> Response {
    let asked = path.trim_start_matches('/');
    let name = if !asked.is_empty() && !asked.ends_with(".gz") && Built::get(asked).is_some() {
        asked
    } else {
        "index.html"
    };
    let Some(file) = Built::get(name) else {
        // Only a binary built without frontend/dist: rust-embed fails the build then, so this
        // is a guard, not a state anyone should see.
        return (StatusCode::NOT_FOUND, "the dashboard is not in this build").into_response();
    };
    let cache = if name == "index.html" {
        "no-cache"
    } else {
        IMMUTABLE
    };
    let mut res = match gzipped(name, headers) {
        Some(gz) => {
            let mut res = gz.data.into_owned().into_response();
            res.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            res
        }
        None => file.data.into_owned().into_response(),
    };
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    res
}

fn gzipped(name: &str, headers: &HeaderMap) -> Option<rust_embed::EmbeddedFile> {
    let accepts = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|enc| enc.split(';').next().map(str::trim) == Some("gzip"));
    accepts.then(|| Built::get(&format!("{name}.gz"))).flatten()
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

async fn from_dir(dir: &Path, req: Request) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_build_has_its_page_and_the_files_the_page_names() {
        let index = Built::get("index.html").expect("frontend/dist/index.html is embedded");
        let page = String::from_utf8_lossy(&index.data);
        let assets: Vec<String> = Built::iter()
            .filter(|n| n.ends_with(".js") || n.ends_with(".wasm") || n.ends_with(".css"))
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            assets.len(),
            3,
            "one script, one wasm, one stylesheet: {assets:?}"
        );
        for asset in assets {
            assert!(
                page.contains(&format!("/{asset}")),
                "index.html names {asset}"
            );
        }
    }

    #[test]
    fn gzip_is_chosen_only_when_the_browser_takes_it() {
        let mut h = HeaderMap::new();
        let wasm = Built::iter()
            .find(|n| n.ends_with(".wasm"))
            .expect("a wasm file");
        assert!(gzipped(&wasm, &h).is_none());
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip;q=0.8"),
        );
        assert!(gzipped(&wasm, &h).is_some(), "the build has {wasm}.gz");
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzipx"));
        assert!(gzipped(&wasm, &h).is_none());
    }
}
