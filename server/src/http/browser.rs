//! Browser safety. Agora's callers authenticate with bearer tokens, not cookies, but a web page
//! in an operator's browser can still reach a server on the operator's network, and the
//! server's open calls (submit, cancel without ADMIN_TOKEN, register without
//! REGISTRATION_TOKEN) need no token at all. So:
//!
//! - a state-changing request (POST, PUT, PATCH, DELETE) whose `Origin` is not the server's own
//!   nor in `ALLOWED_ORIGINS`, or that the browser marks `Sec-Fetch-Site: cross-site`, gets 403
//!   `CROSS_ORIGIN` before any handler runs (nothing is written);
//! - a server bound to loopback answers only to loopback host names and `ALLOWED_HOSTS`: a page
//!   that rebinds its own DNS name to 127.0.0.1 (DNS rebinding) is refused whatever it asks;
//! - CORS headers go only to `ALLOWED_ORIGINS`.
//!
//! curl, the SDK, the CLI and agents send no `Origin` and are not affected; the dashboard is
//! served from the server's own origin.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::ApiError;
use crate::state::AppState;

/// Refuses cross-site writes and, on a loopback server, foreign `Host` names.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match check(&state, req.method(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn check(state: &AppState, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    let config = &state.config;
    let host = host(headers);
    if config.binds_loopback() && !host.is_empty() && !host_allowed(host, &config.allowed_hosts) {
        return Err(ApiError::CrossOrigin(format!(
            "this server listens on loopback and does not answer to the host name {:?}; add it to ALLOWED_HOSTS to allow it",
            host_name(host)
        )));
    }
    let writes = matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if writes {
        check_origin(state, headers)?;
    }
    Ok(())
}

/// A browser's request must come from the server's own origin or one in `ALLOWED_ORIGINS`
/// (403 `CROSS_ORIGIN` otherwise); requests without `Origin` (curl, agents) pass unless the
/// browser marks them cross-site. Every write is checked, and every `/mcp` request.
pub fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let host = host(headers);
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let allowed = |o: &str| same_origin(o, host) || listed(o, &state.config.allowed_origins);
    match origin {
        Some(o) if !allowed(o) => Err(ApiError::CrossOrigin(format!(
            "a request from the browser origin {o:?} is refused; add it to ALLOWED_ORIGINS to allow it"
        ))),
        Some(_) => Ok(()),
        None => {
            let cross_site = headers
                .get("sec-fetch-site")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
            if cross_site {
                Err(ApiError::CrossOrigin(
                    "a cross-site request from a browser is refused".into(),
                ))
            } else {
                Ok(())
            }
        }
    }
}

/// The request's `Host` header ("" without one).
fn host(headers: &HeaderMap) -> &str {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
}

/// The host name of a `Host` header, without its port (IPv6 literals keep their brackets).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// Loopback names, or one of `allowed`.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = host_name(host).trim_end_matches('.').to_ascii_lowercase();
    let loopback = name == "localhost"
        || name.ends_with(".localhost")
        || name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback
        || allowed
            .iter()
            .any(|a| a.trim().eq_ignore_ascii_case(&name) || a.trim().eq_ignore_ascii_case(host))
}

/// `Origin` names the server itself: its authority is the request's `Host`.
fn same_origin(origin: &str, host: &str) -> bool {
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    !host.is_empty() && authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

fn listed(origin: &str, allowed: &[String]) -> bool {
    allowed
        .iter()
        .any(|a| a.trim().trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// CORS for `ALLOWED_ORIGINS` only (no CORS headers at all without it).
pub fn cors(allowed: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = allowed
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim().trim_end_matches('/')).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::HeaderName::from_static("last-event-id"),
            ]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_without_ports() {
        assert_eq!(host_name("127.0.0.1:3000"), "127.0.0.1");
        assert_eq!(host_name("localhost"), "localhost");
        assert_eq!(host_name("[::1]:3000"), "[::1]");
        assert_eq!(host_name("evil.example:80"), "evil.example");
    }

    #[test]
    fn loopback_hosts_and_the_allowed_ones_pass() {
        let none: Vec<String> = vec![];
        for ok in [
            "127.0.0.1:3000",
            "localhost:3000",
            "[::1]:3000",
            "app.localhost",
            "127.0.0.2",
        ] {
            assert!(host_allowed(ok, &none), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:3000",
            "10.0.0.1:3000",
            "localhost.evil.example",
        ] {
            assert!(!host_allowed(bad, &none), "{bad}");
        }
        let allowed = vec!["agora.internal".to_string()];
        assert!(host_allowed("agora.internal:3000", &allowed));
        assert!(host_allowed("AGORA.internal", &allowed));
    }

    #[test]
    fn same_origin_is_scheme_and_the_request_host() {
        assert!(same_origin("http://127.0.0.1:3000", "127.0.0.1:3000"));
        assert!(same_origin("https://agora.example", "agora.example"));
        assert!(!same_origin("http://evil.example", "127.0.0.1:3000"));
        assert!(!same_origin("null", "127.0.0.1:3000"));
        assert!(!same_origin("http://127.0.0.1:3000", ""));
        let allowed = vec!["https://ops.example/".to_string()];
        assert!(listed("https://ops.example", &allowed));
        assert!(!listed("https://ops.example.evil", &allowed));
    }
}
