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

    // The default binds loopback only, and is not open.
    let port = free_port();
    let mut default = serve(&[], port, data.path()).spawn().expect("start agora");
    let h = eventually(20, || health(port)).await;
    assert_eq!(h["open_access"], false, "{h}");
    default.start_kill().expect("stop");
}

async fn job_count(app: &TestApp) -> u64 {
    app.client().jobs(None, 1, 0).await.expect("jobs").total
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
    assert!(agents.as_array().is_some_and(|a| a.is_empty()), "{agents}");

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
    let mut server =
        RealServer::start(free_port(), data.path(), &[("SHUTDOWN_GRACE_SECS", "1")]).await;
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
            .find(|e| e.kind == agora_shared::EventKind::TaskReleased)
    })
    .await;
    let reason = released.data["reason"].as_str().unwrap_or("").to_string();
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
        agents.as_array().map(Vec::len),
        Some(100),
        "the refused one was not written"
    );

    let open = spawn_app_with(|c| c.registration_rate_per_min = 0).await;
    open.register_many("many", 150).await;
}
