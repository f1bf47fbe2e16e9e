//! Graceful drain on SIGTERM, with the real binary: readiness fails and nothing new is handed
//! out, a WebSocket agent's running task may finish within SHUTDOWN_GRACE_SECS, SSE streams
//! end cleanly, and the process exits 0. A task still running when the grace is over is
//! released without costing an attempt.

use std::time::Duration;

use agora_client::Client;
use agora_shared::ws::ServerMsg;
use agora_shared::ErrorCode;
use futures::StreamExt;
use serde_json::json;

use crate::helpers::{free_port, job_body, test_backend, RealServer};

/// A job of `n` work tasks, approved and planned; returns its id.
async fn planned(c: &Client, planner: &Client, n: usize) -> uuid::Uuid {
    let job = c
        .submit(&job_body("drain", json!({})))
        .await
        .expect("submit");
    planner.approve(job.id, None).await.expect("approve");
    let plan = planner.claim(None).await.expect("claim").expect("the plan");
    let specs: Vec<_> = (0..n).map(|i| json!({ "i": i })).collect();
    planner
        .complete(plan.task.id, json!({ "task_specs": specs }))
        .await
        .expect("plan");
    job.id
}

async fn offered(s: &mut agora_client::Session) -> (uuid::Uuid, uuid::Uuid) {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let ServerMsg::TaskOffer { offer_id, task, .. } = s.next().await.expect("next") {
                return (offer_id, task.id);
            }
        }
    })
    .await
    .expect("an offer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_running_websocket_tasks_and_exits_0() {
    if test_backend() == "postgres" {
        return; // the drain is the server's, whichever the store: the SQLite pass runs it
    }
    let data = tempfile::tempdir().expect("data");
    let env = [("APPROVALS_REQUIRED", "1"), ("SHUTDOWN_GRACE_SECS", "10")];
    let mut server = RealServer::start(free_port(), data.path(), &env).await;
    let base = server.url("");
    let mut ws_agent = Client::new(&base);
    ws_agent.register("ws", None).await.expect("register");
    let mut rest_agent = Client::new(&base);
    rest_agent.register("rest", None).await.expect("register");
    let job = planned(&Client::new(&base), &rest_agent, 3).await;

    let mut session = ws_agent.session().await.expect("session");
    session.ready(1).await.expect("ready");
    let (offer, task) = offered(&mut session).await;
    session.accept(offer).await.expect("accept");
    // An SSE reader, to see its stream end cleanly.
    let sse = reqwest::get(server.url("/api/events")).await.expect("SSE");
    let mut sse_body = sse.bytes_stream();

    let pid = server.child.as_ref().and_then(|c| c.id()).expect("pid") as i32;
    // SAFETY: kill(2) sends a signal to our child; no memory is involved.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let http = reqwest::Client::new();
    // Draining: alive, not ready; REST claims are refused; the socket stays up.
    let ready = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let r = http
                .get(server.url("/api/health/ready"))
                .send()
                .await
                .expect("ready");
            if r.status() == 503 {
                return r.json::<serde_json::Value>().await.expect("JSON");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("readiness fails while draining");
    assert_eq!(ready["data"]["draining"], true, "{ready}");
    assert_eq!(ready["error"]["code"], "UNAVAILABLE", "{ready}");
    let live = http
        .get(server.url("/api/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(live.status(), 200, "a draining server is alive");
    let refused = rest_agent
        .claim(None)
        .await
        .expect_err("no claims while draining");
    assert_eq!(refused.code(), Some(ErrorCode::Unavailable), "{refused}");

    // The running task may still finish over the socket; then the server exits 0.
    session
        .complete(task, json!({ "done": "during the drain" }))
        .await
        .expect("complete");
    let status = tokio::time::timeout(Duration::from_secs(8), async {
        server
            .child
            .as_mut()
            .expect("child")
            .wait()
            .await
            .expect("wait")
    })
    .await
    .expect("the server exits once its socket tasks are done, well before the grace");
    assert!(status.success(), "exit status {status}");
    server.child = None;
    // The SSE stream ended without an error.
    let rest: Vec<_> = tokio::time::timeout(
        Duration::from_secs(2),
        sse_body.by_ref().collect::<Vec<_>>(),
    )
    .await
    .expect("the SSE stream ended");
    assert!(
        rest.iter().all(|chunk| chunk.is_ok()),
        "SSE ended cleanly: {rest:?}"
    );

    // Restarted on the same data: the task is completed with the drain-time result, and the
    // two others are still pending (no offer was made during the drain).
    let server = RealServer::start(server.port, data.path(), &env).await;
    let t = Client::new(&server.url(""));
    let done = t.events(job, 0).await.expect("events");
    assert!(done
        .iter()
        .any(|e| e.task_id == Some(task) && e.kind().as_str() == "task.completed"));
    let stats = t.stats().await.expect("stats");
    assert_eq!(stats.tasks.get("pending"), Some(&2), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_still_running_after_the_grace_is_released_without_an_attempt() {
    if test_backend() == "postgres" {
        return;
    }
    let data = tempfile::tempdir().expect("data");
    let env = [("APPROVALS_REQUIRED", "1"), ("SHUTDOWN_GRACE_SECS", "0.5")];
    let mut server = RealServer::start(free_port(), data.path(), &env).await;
    let base = server.url("");
    let mut ws_agent = Client::new(&base);
    ws_agent.register("slow", None).await.expect("register");
    let mut planner = Client::new(&base);
    planner.register("planner", None).await.expect("register");
    planned(&Client::new(&base), &planner, 1).await;
    let mut session = ws_agent.session().await.expect("session");
    session.ready(1).await.expect("ready");
    let (offer, task) = offered(&mut session).await;
    session.accept(offer).await.expect("accept");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = std::time::Instant::now();
    let status = server.terminate().await;
    assert!(status.success(), "exit status {status}");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "it waited for the grace"
    );

    let server = RealServer::start(server.port, data.path(), &env).await;
    let t: serde_json::Value = reqwest::get(server.url(&format!("/api/tasks/{task}")))
        .await
        .expect("task")
        .json()
        .await
        .expect("JSON");
    assert_eq!(t["data"]["status"], "pending", "{t}");
    assert_eq!(t["data"]["attempts"], 0, "released, not failed: {t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_json_writes_one_json_object_per_line() {
    if test_backend() == "postgres" {
        return;
    }
    let data = tempfile::tempdir().expect("data");
    let port = free_port();
    let child = crate::helpers::serve_command(port, data.path())
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start agora");
    let pid = child.id().expect("pid") as i32;
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/health");
    while http.get(&url).send().await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SAFETY: kill(2) sends a signal to our child; no memory is involved.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let out = child.wait_with_output().await.expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A SIGTERM right after the first health answer drains: the handler is in place before
    // the port opens (it once killed the server, when it was installed later).
    assert!(out.status.success(), "{:?}:\n{text}", out.status);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() >= 3,
        "listening, draining, shutting down: {text}"
    );
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
    }
    assert!(
        text.contains("agora listening") && text.contains("draining"),
        "{text}"
    );
}
