//! Safe by default, replayed as an attacker would try it: a server beyond loopback without
//! tokens does not start (unless told to be open, which it then says); a web page's cross-site
//! write is refused before anything is written; DNS rebinding of a loopback server is refused;
//! CORS answers only the origins allowed.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HOST, ORIGIN};
use serde_json::{json, Value};

use crate::helpers::*;

/// `agora serve` with `args` (on a fresh SQLite folder), its output captured.
fn serve(args: &[&str], port: u16, data: &std::path::Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(agora_bin());
    cmd.arg("serve")
        .args(args)
        .args(["--port", &port.to_string()])
        .arg("--db-path")
        .arg(data.join("agora.db"))
        .env_remove("DATABASE_URL")
        .env_remove("HOST")
        .env_remove("REGISTRATION_TOKEN")
        .env_remove("ADMIN_TOKEN")
        .env_remove("ALLOW_OPEN")
        .env("GIT_ENABLED", "false")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    cmd
}

async fn health(port: u16) -> Option<Value> {
    let url = format!("http://127.0.0.1:{port}/api/health");
    let r = reqwest::get(&url).await.ok()?;
    r.json::<Value>().await.ok().map(|v| v["data"].clone())
}

#[tokio::test]
async fn beyond_loopback_the_server_needs_its_tokens_or_an_explicit_allow_open() {
    let data = tempfile::tempdir().expect("data dir");
    // No tokens: refused at once, with one line that says what to set.
    let port = free_port();
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        serve(&["--host", "0.0.0.0"], port, data.path()).output(),
    )
    .await
    .expect("it exits by itself")
    .expect("run agora");
    assert!(!out.status.success(), "it started open to the network");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("refusing to listen"))
        .unwrap_or_else(|| panic!("no refusal line in: {stderr}"));
    assert!(
        line.contains("REGISTRATION_TOKEN and ADMIN_TOKEN") && line.contains("--allow-open"),
        "{line}"
    );
    // One token only: the line names the other.
    let out = serve(&["--host", "0.0.0.0"], port, data.path())
        .env("ADMIN_TOKEN", "a-secret")
        .output()
        .await
        .expect("run agora");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("with REGISTRATION_TOKEN unset"), "{stderr}");

    // --allow-open: it starts, warns, and says so in its health.
    let mut open = serve(&["--host", "0.0.0.0", "--allow-open"], port, data.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start agora");
    let h = eventually(20, || health(port)).await;
    assert_eq!(h["open_access"], true, "{h}");
    open.start_kill().expect("stop");
    let out = open.wait_with_output().await.expect("wait");
    // Log lines go to standard output.
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("ALLOW_OPEN"), "no warning in the log: {log}");

    // Both tokens: it starts and is not open.
    let port = free_port();
    let mut guarded = serve(&["--host", "0.0.0.0"], port, data.path())
        .env("REGISTRATION_TOKEN", "r-secret")
        .env("ADMIN_TOKEN", "a-secret")
        .spawn()
        .expect("start agora");
    let h = eventually(20, || health(port)).await;
    assert_eq!(h["open_access"], false, "{h}");
    guarded.start_kill().expect("stop");
    // It holds the data folder's SQLite lock until it has exited.
    guarded.wait().await.expect("wait");

    // The default binds loopback only, and is not open.
    let port = free_port();
    let mut default = serve(&[], port, data.path()).spawn().expect("start agora");
    let h = eventually(20, || health(port)).await;
    assert_eq!(h["open_access"], false, "{h}");
    default.start_kill().expect("stop");
}

async fn job_count(app: &TestApp) -> u64 {
    let one = agora_shared::JobListQuery {
        limit: Some(1),
        ..Default::default()
    };
    app.client().jobs(&one).await.expect("jobs").total
}

/// A web page's form or fetch posts `text/plain` to the API (no CORS preflight): refused with
/// 403 CROSS_ORIGIN before the handler runs, whatever the call. curl, agents and the server's
/// own dashboard are unaffected.
#[tokio::test]
async fn cross_site_writes_are_refused_and_write_nothing() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.allowed_origins = vec!["https://ops.example".into()];
    })
    .await;
    let job = app.submit("target", json!({})).await;
    let before = job_count(&app).await;
    let url = |path: &str| format!("{}{path}", app.base);
    let submit = json!({ "title": "from a web page", "job_spec": {} }).to_string();
    for (origin, fetch_site) in [
        (Some("http://evil.example"), None),
        (Some("null"), None),
        (None, Some("cross-site")),
    ] {
        for (path, body) in [
            ("/jobs".to_string(), submit.clone()),
            (format!("/jobs/{job}/cancel"), "{}".to_string()),
            (
                "/agents/register".to_string(),
                json!({"name": "x"}).to_string(),
            ),
        ] {
            let mut req = app
                .http
                .post(url(&path))
                .header(CONTENT_TYPE, "text/plain")
                .body(body);
            if let Some(o) = origin {
                req = req.header(ORIGIN, o);
            }
            if let Some(s) = fetch_site {
                req = req.header("sec-fetch-site", s);
            }
            let r = req.send().await.expect("send");
            assert_eq!(
                r.status().as_u16(),
                403,
                "{path} from {origin:?}/{fetch_site:?}"
            );
            let v: Value = r.json().await.expect("json");
            assert_eq!(v["error"]["code"], "CROSS_ORIGIN", "{v}");
        }
    }
    assert_eq!(job_count(&app).await, before, "a refused write wrote a job");
    assert_eq!(
        app.job(job).await["status"],
        "committed",
        "the job was cancelled"
    );
    let agents = app.get("/agents").await.ok();
    assert_eq!(agents["total"], 0, "{agents}");

    // The server's own origin (the dashboard), an allowed origin, and no origin (curl) pass.
    let own = format!(
        "http://{}",
        app.base
            .trim_start_matches("http://")
            .trim_end_matches("/api")
    );
    for origin in [Some(own.as_str()), Some("https://ops.example"), None] {
        let mut req = app
            .http
            .post(url("/jobs"))
            .header(CONTENT_TYPE, "application/json")
            .body(submit.clone());
        if let Some(o) = origin {
            req = req.header(ORIGIN, o);
        }
        let r = req.send().await.expect("send");
        assert_eq!(r.status().as_u16(), 201, "{origin:?}");
        if origin == Some("https://ops.example") {
            assert_eq!(
                r.headers()
                    .get("access-control-allow-origin")
                    .and_then(|v| v.to_str().ok()),
                Some("https://ops.example"),
                "CORS for the allowed origin"
            );
        }
    }
    assert_eq!(job_count(&app).await, before + 3);
    // Reads from a foreign page get no CORS header (the browser keeps the answer from it).
    let r = app
        .http
        .get(url("/jobs"))
        .header(ORIGIN, "http://evil.example")
        .send()
        .await
        .expect("send");
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // A preflight from the allowed origin is answered.
    let r = app
        .http
        .request(reqwest::Method::OPTIONS, url("/jobs"))
        .header(ORIGIN, "https://ops.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,authorization",
        )
        .send()
        .await
        .expect("send");
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(
        r.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://ops.example")
    );
}

/// DNS rebinding: a page on `evil.example` rebinds its name to 127.0.0.1 and reads the API of a
/// loopback server through it. The server answers only to loopback names and ALLOWED_HOSTS.
#[tokio::test]
async fn a_loopback_server_refuses_foreign_host_names() {
    let app = spawn_app_with(|c| c.allowed_hosts = vec!["agora.internal".into()]).await;
    let port = app
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .unwrap_or("");
    for (host, status) in [
        (format!("evil.example:{port}"), 403),
        ("evil.example".to_string(), 403),
        (format!("localhost:{port}"), 200),
        (format!("127.0.0.1:{port}"), 200),
        (format!("agora.internal:{port}"), 200),
    ] {
        for path in ["/jobs", "/agents", "/health"] {
            let r = app
                .http
                .get(format!("{}{path}", app.base))
                .header(HOST, &host)
                .send()
                .await
                .expect("send");
            assert_eq!(r.status().as_u16(), status, "{host} {path}");
            if status == 403 {
                let v: Value = r.json().await.expect("json");
                assert_eq!(v["error"]["code"], "CROSS_ORIGIN", "{v}");
            }
        }
    }
}

/// Series in a Prometheus text answer (its sample lines).
fn series(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

/// 3,000 requests with made-up HTTP methods leave `/metrics` with under 100 more series (they
/// are labelled `OTHER`), and every state's gauge is there, zero included.
#[tokio::test]
async fn made_up_methods_cannot_grow_the_metrics() {
    let data = tempfile::tempdir().expect("data dir");
    let server = RealServer::start(free_port(), data.path(), &[]).await;
    let http = reqwest::Client::new();
    let metrics = || async {
        http.get(server.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    };
    // Warm up: one request of each kind the flood makes, so only new labels would count.
    let m = reqwest::Method::from_bytes(b"WARMUP").expect("method");
    http.request(m, server.url("/api/jobs"))
        .send()
        .await
        .expect("send");
    let before = metrics().await;
    for i in 0..3000 {
        let m = reqwest::Method::from_bytes(format!("X{i:05}").as_bytes()).expect("method");
        let r = http
            .request(m, server.url("/api/jobs"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 405);
    }
    let after = metrics().await;
    let grown = series(&after).saturating_sub(series(&before));
    println!(
        "/metrics: {} series before, {} after the flood",
        series(&before),
        series(&after)
    );
    assert!(grown < 100, "{grown} more series");
    assert!(
        after.contains("method=\"OTHER\""),
        "made-up methods are labelled OTHER"
    );
    // Every state has its gauge, zero included.
    for s in agora_shared::TaskStatus::ALL {
        let line = format!("agora_tasks{{state=\"{}\"}} 0", s.as_str());
        assert!(after.contains(&line), "missing {line}");
    }
    for s in agora_shared::JobStatus::ALL {
        let line = format!("agora_jobs{{state=\"{}\"}} 0", s.as_str());
        assert!(after.contains(&line), "missing {line}");
    }
}

/// Two servers on one SQLite file would each publish only their own events: the second one
/// refuses to start, saying why; once the first has stopped, the file is free again.
#[tokio::test]
async fn a_second_server_on_the_same_sqlite_file_is_refused() {
    let data = tempfile::tempdir().expect("data dir");
    let mut first = RealServer::start(free_port(), data.path(), &[]).await;
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        serve(&[], free_port(), data.path()).output(),
    )
    .await
    .expect("the second server exits by itself")
    .expect("run agora");
    assert!(
        !out.status.success(),
        "a second server started on the same file"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another agora server is using"), "{stderr}");
    // The first one is unharmed, and after it stops the file is free.
    assert!(health(first.port).await.is_some());
    first.terminate().await;
    let again = RealServer::start(free_port(), data.path(), &[]).await;
    assert!(health(again.port).await.is_some());
}

/// SIGTERM ends the process within SHUTDOWN_GRACE_SECS plus the 5 s stop deadline even when
/// clients hold their connections open: a body that never finishes and an SSE reader that never
/// reads.
#[tokio::test]
async fn sigterm_exits_within_the_deadline_whatever_the_clients_do() {
    use tokio::io::AsyncWriteExt;
    let data = tempfile::tempdir().expect("data dir");
    let mut server = RealServer::start(
        free_port(),
        data.path(),
        &[
            ("SHUTDOWN_GRACE_SECS", "1"),
            ("ANON_WRITE_RATE_PER_MIN", "0"),
        ],
    )
    .await;
    let addr = format!("127.0.0.1:{}", server.port);
    // A write whose body never comes: its handler waits for it.
    let mut slow_body = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    slow_body
        .write_all(
            format!(
                "POST /api/jobs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                 Content-Length: 100000\r\n\r\n{{\"title\":"
            )
            .as_bytes(),
        )
        .await
        .expect("send");
    // An SSE reader that never reads, with the whole table to replay.
    let client = agora_client::Client::new(&server.url(""));
    for i in 0..200 {
        client
            .submit(&job_body(
                &format!("job {i} {}", "x".repeat(150)),
                json!({}),
            ))
            .await
            .expect("submit");
    }
    let mut reader = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    reader
        .write_all(
            format!("GET /api/events?last_event_id=0 HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes(),
        )
        .await
        .expect("send");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = std::time::Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(30), server.terminate())
        .await
        .expect("the server did not exit within 30 s of SIGTERM");
    let took = asked.elapsed();
    println!("exited {took:?} after SIGTERM with two stuck clients");
    assert!(
        took < Duration::from_secs(1 + 5 + 2),
        "took {took:?}: more than the grace plus the stop deadline"
    );
    assert!(status.success() || status.code().is_some(), "{status:?}");
    drop((slow_body, reader));
}

/// The resident memory of a process, in MB.
fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Reads until the server closes the connection (or `limit` passes): what it said, if anything.
async fn read_until_closed(conn: &mut tokio::net::TcpStream, limit: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let read = tokio::time::timeout(limit, conn.read_to_end(&mut got)).await;
    match read {
        Ok(_) => Some(String::from_utf8_lossy(&got).into_owned()),
        Err(_) => None,
    }
}

/// 200 connections that never finish their headers and 100 that never finish their bodies:
/// each is closed at its timeout (the slow bodies with 408 naming the wait), the server's
/// memory stays within 50 MB of where it was, and it serves everyone else throughout.
#[tokio::test]
async fn slow_headers_and_slow_bodies_are_cut_off_at_their_timeouts() {
    use tokio::io::AsyncWriteExt;
    let data = tempfile::tempdir().expect("data dir");
    let server = RealServer::start(
        free_port(),
        data.path(),
        &[("HEADER_TIMEOUT_SECS", "2"), ("BODY_TIMEOUT_SECS", "2")],
    )
    .await;
    let pid = server.child.as_ref().and_then(|c| c.id()).expect("pid");
    let addr = format!("127.0.0.1:{}", server.port);
    let before = rss_mb(pid);
    let opened = std::time::Instant::now();
    let mut slow_headers = Vec::new();
    for _ in 0..200 {
        let mut c = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        c.write_all(format!("POST /api/jobs HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").as_bytes())
            .await
            .expect("send");
        slow_headers.push(c);
    }
    let mut slow_bodies = Vec::new();
    for _ in 0..100 {
        let mut c = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        c.write_all(
            format!(
                "POST /api/jobs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                 Content-Length: 1000000\r\n\r\n{{\"title\": \"{}",
                "x".repeat(60_000)
            )
            .as_bytes(),
        )
        .await
        .expect("send");
        slow_bodies.push(c);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = rss_mb(pid);
    // Everyone else is served meanwhile.
    let health = reqwest::get(server.url("/api/health"))
        .await
        .expect("health");
    assert_eq!(health.status().as_u16(), 200);

    for c in &mut slow_headers {
        let said = read_until_closed(c, Duration::from_secs(10))
            .await
            .expect("a slow-header connection still open 10 s after its 2 s timeout");
        assert!(!said.contains("201"), "{said}");
    }
    for c in &mut slow_bodies {
        let said = read_until_closed(c, Duration::from_secs(10))
            .await
            .expect("a slow-body connection still open 10 s after its 2 s timeout");
        assert!(said.starts_with("HTTP/1.1 408"), "{said}");
        assert!(said.contains("REQUEST_TIMEOUT"), "{said}");
    }
    let closed_after = opened.elapsed();
    let after = rss_mb(pid);
    println!(
        "RSS {before:.1} MB before, {during:.1} MB with 300 slow clients, {after:.1} MB after; all closed within {closed_after:?}"
    );
    assert!(closed_after < Duration::from_secs(9), "{closed_after:?}");
    assert!(during - before < 50.0, "RSS grew {:.1} MB", during - before);
    assert!(after - before < 50.0, "RSS grew {:.1} MB", after - before);
    let health = reqwest::get(server.url("/api/health"))
        .await
        .expect("health");
    assert_eq!(health.status().as_u16(), 200);
}

/// Specs and results over MAX_SPEC_BYTES get 413 naming the field and write nothing; eight
/// concurrent 4 MiB submits are refused while they stream in, and the server's memory stays
/// small; a decline reason too long to keep is refused before the offer is touched.
#[tokio::test]
async fn oversized_specs_results_and_reasons_are_refused_cheaply() {
    let data = tempfile::tempdir().expect("data dir");
    let server = RealServer::start(
        free_port(),
        data.path(),
        &[("APPROVALS_REQUIRED", "1"), ("MAX_SPEC_BYTES", "1048576")],
    )
    .await;
    let pid = server.child.as_ref().and_then(|c| c.id()).expect("pid");
    let http = reqwest::Client::new();
    let big = "x".repeat(1_500_000);
    let r = http
        .post(server.url("/api/jobs"))
        .json(&json!({ "title": "big", "job_spec": { "blob": big } }))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 413);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "PAYLOAD_TOO_LARGE");
    assert_eq!(v["error"]["field"], "job_spec", "{v}");
    let jobs: Value = http
        .get(server.url("/api/jobs"))
        .send()
        .await
        .expect("jobs")
        .json()
        .await
        .expect("json");
    assert_eq!(jobs["data"]["total"], 0, "nothing written");

    // A result over the limit: 413 naming it, and the task is still the agent's.
    let mut agent = agora_client::Client::new(&server.url(""));
    agent.register("a", None).await.expect("register");
    let job = agent
        .submit(&job_body("j", json!({})))
        .await
        .expect("submit");
    agent.approve(job.id, None).await.expect("approve");
    let plan = agent.claim(None).await.expect("claim").expect("plan task");
    let err = agent
        .complete(plan.task.id, json!({ "task_specs": [big] }))
        .await
        .expect_err("refused");
    assert_eq!(
        err.code(),
        Some(agora_shared::ErrorCode::PayloadTooLarge),
        "{err}"
    );
    let t: Value = http
        .get(server.url(&format!("/api/tasks/{}", plan.task.id)))
        .send()
        .await
        .expect("task")
        .json()
        .await
        .expect("json");
    assert_eq!(t["data"]["status"], "claimed");

    // Eight concurrent 4 MiB submits: refused while they stream in.
    let before = rss_mb(pid);
    let huge =
        json!({ "title": "huge", "job_spec": { "blob": "y".repeat(4 * 1024 * 1024 - 100) } })
            .to_string();
    let mut calls = Vec::new();
    for _ in 0..8 {
        let http = http.clone();
        let body = huge.clone();
        let url = server.url("/api/jobs");
        calls.push(tokio::spawn(async move {
            match http
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
            {
                Ok(r) => r.status().as_u16(),
                // The server may close the connection once it has refused the body.
                Err(_) => 413,
            }
        }));
    }
    for c in calls {
        assert_eq!(c.await.expect("call"), 413);
    }
    let after = rss_mb(pid);
    println!("RSS {before:.1} MB before, {after:.1} MB after eight 4 MiB submits");
    assert!(after < 100.0, "RSS {after:.1} MB");

    // A decline reason of 1 MiB over the WebSocket: refused, the offer still stands.
    let mut worker = agora_client::Client::new(&server.url(""));
    worker.register("w", None).await.expect("register");
    agent
        .complete(plan.task.id, json!({ "task_specs": [1] }))
        .await
        .expect("plan");
    let mut session = worker.session().await.expect("session");
    session.ready(1).await.expect("ready");
    let offer_id = loop {
        if let agora_shared::ws::ServerMsg::TaskOffer { offer_id, .. } =
            session.next().await.expect("msg")
        {
            break offer_id;
        }
    };
    session
        .decline(offer_id, Some("r".repeat(1024 * 1024)))
        .await
        .expect("send");
    let refused = loop {
        if let agora_shared::ws::ServerMsg::Ack {
            kind, ok, error, ..
        } = session.next().await.expect("msg")
        {
            if kind == "decline" {
                break (ok, error);
            }
        }
    };
    assert!(!refused.0);
    assert_eq!(refused.1.expect("error").field.as_deref(), Some("reason"));
    session.accept(offer_id).await.expect("accept");
    let accepted = loop {
        if let agora_shared::ws::ServerMsg::Ack { kind, ok, .. } =
            session.next().await.expect("msg")
        {
            if kind == "accept" {
                break ok;
            }
        }
    };
    assert!(accepted, "the offer stood after the refused decline");
}

/// A WebSocket agent announces 300 slots and never reads, while 40 jobs with 1 MB specs are
/// approved: their plan tasks are offered to it (a plan task's spec is its job's). The socket
/// is closed at its byte budget (WS_OUTBOX_BYTES), its offers go back to pending, and the
/// server's memory stays small.
#[tokio::test]
async fn a_socket_that_never_reads_is_closed_at_its_byte_budget() {
    use futures::SinkExt;
    let data = tempfile::tempdir().expect("data dir");
    let server = RealServer::start(
        free_port(),
        data.path(),
        &[("APPROVALS_REQUIRED", "1"), ("APPROVAL_COOLDOWN_SECS", "0")],
    )
    .await;
    let pid = server.child.as_ref().and_then(|c| c.id()).expect("pid");
    let mut approver = agora_client::Client::new(&server.url(""));
    approver.register("approver", None).await.expect("register");
    let mut reader = agora_client::Client::new(&server.url(""));
    let me = reader.register("reader", None).await.expect("register");
    let ws_url = format!(
        "ws://127.0.0.1:{}/api/agents/{}/ws?token={}",
        server.port, me.agent_id, me.token
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .expect("connect");
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text(
            json!({ "type": "ready", "slots": 300 }).to_string().into(),
        ))
        .await
        .expect("ready");
    let before = rss_mb(pid);
    let spec = json!({ "blob": "z".repeat(1_000_000) });
    let mut jobs = Vec::new();
    for i in 0..40 {
        let job = approver
            .submit(&job_body(&format!("big {i}"), spec.clone()))
            .await
            .expect("submit");
        approver.approve(job.id, None).await.expect("approve");
        jobs.push(job.id);
    }
    // The reader's offers come back: nothing stays claimed by it, and the release says why.
    let observer = agora_client::Client::new(&server.url(""));
    let released = eventually(30, || async {
        let held = observer
            .tasks_of_agent(me.agent_id)
            .await
            .ok()?
            .into_iter()
            .filter(|t| t.status.is_active())
            .count();
        if held > 0 {
            return None;
        }
        let events = observer.events(jobs[0], 0).await.ok()?;
        events
            .into_iter()
            .find(|e| e.kind() == agora_shared::EventKind::TaskReleased)
    })
    .await;
    let reason = match &released.payload {
        agora_shared::EventData::TaskReleased(r) => r.reason.clone(),
        other => panic!("not a release: {other:?}"),
    };
    assert!(reason.contains("stopped reading"), "{reason}");
    let after = rss_mb(pid);
    println!("RSS {before:.1} MB before, {after:.1} MB after 40 MB of offers to a socket that never reads");
    assert!(after < 100.0, "RSS {after:.1} MB");
    drop(socket);
}

/// A registration flood from one client: the burst (100) passes, then the rate (100 a minute,
/// one every 0.6 s) applies and the client is refused with 429 RATE_LIMITED and a Retry-After;
/// with the limit turned off (0) nothing is refused.
#[tokio::test]
async fn a_registration_flood_from_one_client_is_refused_past_its_burst() {
    let app = spawn_app().await;
    let url = format!("{}/agents/register", app.base);
    let started = std::time::Instant::now();
    let mut accepted = 0u64;
    let r = loop {
        let r = app
            .http
            .post(&url)
            .json(&json!({ "name": format!("flood-{accepted}") }))
            .send()
            .await
            .expect("send");
        if r.status().as_u16() != 201 {
            break r;
        }
        accepted += 1;
        assert!(
            accepted <= 300,
            "300 registrations from one client were all accepted"
        );
    };
    // The burst, plus what the rate refilled while the flood ran.
    let refilled = (started.elapsed().as_secs_f64() / 0.6).ceil() as u64 + 1;
    println!(
        "{accepted} registrations accepted in {:?}",
        started.elapsed()
    );
    assert!(
        (100..=100 + refilled).contains(&accepted),
        "{accepted} accepted, burst 100 + {refilled} refilled"
    );
    assert_eq!(r.status().as_u16(), 429);
    let retry_after: u64 = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After header");
    assert!(retry_after >= 1, "{retry_after}");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "RATE_LIMITED", "{v}");
    let agents = app.get("/agents").await.ok();
    assert_eq!(
        agents["total"].as_u64(),
        Some(accepted),
        "the refused one was not written"
    );

    let open = spawn_app_with(|c| c.registration_rate_per_min = 0).await;
    let many = open.register_many("many", 150).await;

    // The list of agents pages like every other list (50 by default): the pages hold each
    // agent once.
    let first = open.get("/agents").await.ok();
    assert_eq!(first["total"], 150, "{first}");
    assert_eq!(first["items"].as_array().map(Vec::len), Some(50));
    let mut seen = std::collections::HashSet::new();
    for offset in (0..150).step_by(40) {
        let page = open
            .get(&format!("/agents?limit=40&offset={offset}"))
            .await
            .ok();
        for a in page["items"].as_array().expect("items") {
            assert!(seen.insert(id_of(a)), "{a} on two pages");
        }
    }
    assert_eq!(seen.len(), many.len());
    let offline = open.get("/agents?status=offline").await.ok();
    assert_eq!(offline["total"], 0, "{offline}");
    open.get("/agents?limit=0")
        .await
        .err(400, "VALIDATION_ERROR");
    open.get("/agents?status=lost")
        .await
        .err(400, "VALIDATION_ERROR");
}

/// Writes without any token share one budget per client address: past the burst, a submit
/// without `submitted_by` and an open cancel get 429 with Retry-After and write nothing; an
/// agent's own submit and an operator's cancel with ADMIN_TOKEN are not counted.
#[tokio::test]
async fn anonymous_writes_are_rate_limited_per_client() {
    let app = spawn_app_with(|c| {
        c.anon_write_rate_per_min = 1;
        c.anon_write_burst = 5;
    })
    .await;
    let mut jobs = Vec::new();
    for i in 0..5 {
        jobs.push(app.submit(&format!("anon {i}"), json!({})).await);
    }
    let refused = app
        .post("/jobs", None, json_of(job_body("one too many", json!({}))))
        .await;
    refused.err(429, "RATE_LIMITED");
    let cancel = app
        .post(&format!("/jobs/{}/cancel", jobs[0]), None, json!({}))
        .await;
    cancel.err(429, "RATE_LIMITED");
    assert_eq!(
        app.job(jobs[0]).await["status"],
        "committed",
        "nothing written"
    );
    assert_eq!(job_count(&app).await, 5);

    // An agent submitting as itself has its own identity, not the anonymous budget.
    let agent = app.register("named").await;
    let mut body = job_body("signed", json!({}));
    body.submitted_by = Some(agent.id);
    app.post("/jobs", Some(&agent.token), json_of(body))
        .await
        .ok();
    assert_eq!(job_count(&app).await, 6);

    // With ADMIN_TOKEN set, a cancel carries the operator's token and is not limited.
    let guarded = spawn_app_with(|c| {
        c.anon_write_rate_per_min = 1;
        c.anon_write_burst = 1;
        c.admin_token = Some("root".into());
    })
    .await;
    let job = guarded.submit("only one", json!({})).await;
    guarded
        .post(&format!("/jobs/{job}/cancel"), Some("root"), json!({}))
        .await
        .ok();
    let r = guarded
        .http
        .post(format!("{}/jobs", guarded.base))
        .json(&job_body("second", json!({})))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().contains_key("retry-after"));
}

/// A vital part dies (the debug-only fault hook panics the SQLite writer thread): readiness
/// fails first, naming it, writes are answered 503 rather than hanging, then the process exits
/// non-zero with the cause in its log.
#[tokio::test]
async fn a_dead_writer_fails_readiness_then_the_process_exits_non_zero() {
    let data = tempfile::tempdir().expect("data dir");
    let port = free_port();
    let child = serve_command(port, data.path())
        .env("RUST_LOG", "warn")
        .env("GIT_ENABLED", "false")
        .env("SHUTDOWN_GRACE_SECS", "2")
        .env("AGORA_FAULT_WRITER_DIES_AFTER_SECS", "2")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start agora serve");
    let base = format!("http://127.0.0.1:{port}/api");
    let http = reqwest::Client::new();
    let ready = |http: reqwest::Client, base: String| async move {
        let r = http.get(format!("{base}/health/ready")).send().await.ok()?;
        let status = r.status().as_u16();
        Some((status, r.json::<Value>().await.ok()?))
    };
    let (status, _) = eventually(30, || ready(http.clone(), base.clone())).await;
    assert_eq!(status, 200, "ready before the fault");

    // The first failing answers may only say the database does not answer (the health check
    // finds the writer gone before the supervisor has named it); then the cause shows.
    let (_, failed) = eventually(10, || {
        let (http, base) = (http.clone(), base.clone());
        async move {
            ready(http, base)
                .await
                .filter(|(s, v)| *s == 503 && v["data"]["status"] == "failed")
        }
    })
    .await;
    assert_eq!(failed["data"]["status"], "failed", "{failed}");
    let why = failed["error"]["message"].as_str().unwrap_or_default();
    assert!(why.contains("SQLite writer"), "{failed}");
    let write = http
        .post(format!("{base}/jobs"))
        .json(&job_body("after the writer died", json!({})))
        .send()
        .await;
    if let Ok(w) = write {
        assert_eq!(w.status().as_u16(), 503, "a write after the writer died");
    }

    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("the process did not exit within 20 s of its writer dying")
        .expect("wait");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "exit status; log:\n{log}");
    assert!(log.contains("the SQLite writer panicked"), "{log}");
}

/// MAX_CONNECTIONS bounds what the server holds at once: past it a new client waits (in the
/// kernel's queue) instead of costing memory, and is served as soon as a connection closes.
#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let data = tempfile::tempdir().expect("data dir");
    let server = RealServer::start(
        free_port(),
        data.path(),
        &[("MAX_CONNECTIONS", "4"), ("HEADER_TIMEOUT_SECS", "60")],
    )
    .await;
    let addr = format!("127.0.0.1:{}", server.port);
    // RealServer::start's health checks may still hold a keep-alive connection: let it go.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut c = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        c.write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .expect("send");
        idle.push(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ask = |addr: String| async move {
        let mut c = tokio::net::TcpStream::connect(&addr).await.ok()?;
        c.write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.ok()?;
        Some(String::from_utf8_lossy(&got).into_owned())
    };
    let waiting = tokio::spawn(ask(addr.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !waiting.is_finished(),
        "a fifth connection was served while four were held"
    );
    drop(idle.pop());
    let answer = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("served once a connection closed")
        .expect("task")
        .expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
