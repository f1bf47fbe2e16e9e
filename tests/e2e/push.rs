//! Push: WebSocket agents get offers, SSE feeds resume without gaps, long-poll wakes at once.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_shared::ws::ServerMsg;
use serde_json::json;

use crate::helpers::*;
use crate::push_helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_websocket_agents_drain_a_thousand_tasks_exactly_once() {
    const AGENTS: usize = 50;
    const TASKS: usize = 1000;
    let app = Arc::new(spawn_app().await);
    let agents = app.register_many("ws", AGENTS).await;
    let specs = (0..TASKS).map(|i| json!(i)).collect();
    let job = app.planned_job(&agents, &agents[0], specs).await;

    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for agent in agents {
        let app = app.clone();
        let done = done.clone();
        workers.push(tokio::spawn(async move {
            let mut ws = app.connect(&agent).await;
            ws.ready(2).await;
            let mut mine = Vec::new();
            while done.load(Ordering::SeqCst) < TASKS {
                let Some(msg) = ws.recv_within(Duration::from_millis(200)).await else { continue };
                match msg {
                    ServerMsg::TaskOffer { offer_id, task, .. } => {
                        ws.send(json!({ "type": "accept", "offer_id": offer_id, "ref": task.id })).await;
                    }
                    ServerMsg::Ack { kind, ok, task: Some(task), .. } if kind == "accept" => {
                        assert!(ok);
                        ws.send(json!({ "type": "complete", "task_id": task.id, "result": { "by": agent.name } })).await;
                    }
                    ServerMsg::Ack { kind, ok, error, task, .. } if kind == "complete" => {
                        assert!(ok, "{error:?}");
                        mine.push(task.expect("completed task").id);
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    ServerMsg::TaskRevoked { task_id, reason } => panic!("{task_id} revoked: {reason}"),
                    _ => {}
                }
            }
            mine
        }));
    }
    let mut all = Vec::new();
    let mut busy = 0;
    for w in workers {
        let mine = w.await.expect("worker");
        busy += usize::from(!mine.is_empty());
        all.extend(mine);
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(
        (all.len(), unique.len()),
        (TASKS, TASKS),
        "each task completed exactly once"
    );
    assert!(
        busy > 25,
        "offers were spread over the agents ({busy} got work)"
    );
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, attempts FROM tasks WHERE job_id = $1 AND idx > 0")
            .bind(job.to_string())
            .fetch_all(app.store.reader_for_tests())
            .await
            .unwrap();
    assert!(rows.iter().all(|(s, a)| s == "completed" && *a == 0));
    assert_eq!(app.job(job).await["status"], "completed");
}

async fn one_task_job(app: &TestApp, agents: &[TestAgent]) -> uuid::Uuid {
    app.planned_job(agents, &agents[0], vec![json!("only")])
        .await
}

#[tokio::test]
async fn a_disconnect_mid_task_re_offers_it_to_another_agent() {
    let app = spawn_app_with(|c| c.approvals_required = 1).await;
    let agents = app.register_many("ws", 2).await;
    one_task_job(&app, &agents).await;
    let mut a = app.connect(&agents[0]).await;
    a.ready(1).await;
    let (offer, task, _) = a.offer().await;
    a.send(json!({ "type": "accept", "offer_id": offer })).await;
    assert!(a.ack("accept").await.0);
    drop(a);
    let mut b = app.connect(&agents[1]).await;
    b.ready(1).await;
    let (_, again, _) = b.offer().await;
    assert_eq!(again, task);
    let t = app.get(&format!("/tasks/{task}")).await.ok();
    assert_eq!(t["attempts"], 1, "a task lost mid-run counts an attempt");
}

#[tokio::test]
async fn an_expired_offer_is_revoked_and_re_offered_to_another_agent_without_an_attempt() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.offer_ttl_secs = 0.3;
    })
    .await;
    let agents = app.register_many("ws", 2).await;
    one_task_job(&app, &agents).await;
    let mut a = app.connect(&agents[0]).await;
    a.ready(1).await;
    let (_, task, _) = a.offer().await;
    let mut b = app.connect(&agents[1]).await;
    b.ready(1).await;
    let revoked = a.revoked().await;
    assert_eq!(revoked, (task.clone(), "offer expired".to_string()));
    let (_, again, _) = b.offer().await;
    assert_eq!(again, task, "the other ready agent gets it");
    let t = app.get(&format!("/tasks/{task}")).await.ok();
    assert_eq!(t["attempts"], 0, "an expired offer costs no attempt");
}

#[tokio::test]
async fn cancelling_a_job_revokes_the_task_an_agent_is_running() {
    let app = spawn_app_with(|c| c.approvals_required = 1).await;
    let agents = app.register_many("ws", 1).await;
    let job = one_task_job(&app, &agents).await;
    let mut a = app.connect(&agents[0]).await;
    a.ready(1).await;
    let (offer, task, _) = a.offer().await;
    a.send(json!({ "type": "accept", "offer_id": offer })).await;
    assert!(a.ack("accept").await.0);
    app.post(
        &format!("/jobs/{job}/cancel"),
        None,
        json!({ "reason": "stop" }),
    )
    .await
    .ok();
    let (revoked, reason) = a.revoked().await;
    assert_eq!(revoked, task);
    assert!(reason.contains("stop"), "{reason}");
    // The slot is free again, and reporting on the revoked task is refused.
    a.send(json!({ "type": "complete", "task_id": task, "result": 1 }))
        .await;
    assert!(!a.ack("complete").await.0);
}

#[tokio::test]
async fn decline_re_offers_to_another_agent_with_no_attempt_counted() {
    let app = spawn_app_with(|c| c.approvals_required = 1).await;
    let agents = app.register_many("ws", 2).await;
    one_task_job(&app, &agents).await;
    let mut a = app.connect(&agents[0]).await;
    a.ready(1).await;
    let (offer, task, _) = a.offer().await;
    // Lower the slots first so the declined task is not offered straight back.
    a.ready(0).await;
    let mut b = app.connect(&agents[1]).await;
    b.ready(1).await;
    a.send(json!({ "type": "decline", "offer_id": offer, "reason": "busy" }))
        .await;
    assert!(a.ack("decline").await.0);
    let (offer_b, again, _) = b.offer().await;
    assert_eq!(again, task);
    b.send(json!({ "type": "accept", "offer_id": offer_b }))
        .await;
    assert!(b.ack("accept").await.0);
    b.send(json!({ "type": "complete", "task_id": task, "result": 1 }))
        .await;
    assert!(b.ack("complete").await.0);
    let t = app.get(&format!("/tasks/{task}")).await.ok();
    assert_eq!(
        (t["status"].as_str(), t["attempts"].as_u64()),
        (Some("completed"), Some(0))
    );
}

#[tokio::test]
async fn a_frozen_client_is_cut_off_and_its_task_released() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.ws_ping_secs = 0.3;
    })
    .await;
    let agents = app.register_many("ws", 2).await;
    one_task_job(&app, &agents).await;
    let mut a = app.connect(&agents[0]).await;
    a.ready(1).await;
    let (offer, task, _) = a.offer().await;
    a.send(json!({ "type": "accept", "offer_id": offer })).await;
    assert!(a.ack("accept").await.0);
    // Freeze: keep the TCP connection open but stop reading and answering pings.
    let started = Instant::now();
    let mut b = app.connect(&agents[1]).await;
    b.ready(1).await;
    let (_, again, _) = b.offer().await;
    assert_eq!(again, task);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "released {waited:?} after the freeze"
    );
    drop(a);
}

#[tokio::test]
async fn bad_frames_get_a_negative_ack_and_the_socket_stays_up() {
    let app = spawn_app_with(|c| c.approvals_required = 1).await;
    let agents = app.register_many("ws", 2).await;
    one_task_job(&app, &agents).await;
    let mut a = app.connect(&agents[0]).await;
    a.send_raw("not json").await;
    let (ok, err) = a.ack("unknown").await;
    assert!(!ok);
    assert_eq!(err.unwrap().code, agora_shared::ErrorCode::MalformedJson);
    a.send(json!({ "type": "dance" })).await;
    assert!(!a.ack("unknown").await.0);
    a.send(json!({ "type": "ready", "slots": "many" })).await;
    let (ok, err) = a.ack("unknown").await;
    assert!(!ok);
    let err = err.unwrap();
    assert_eq!(err.code, agora_shared::ErrorCode::ValidationError);
    assert!(err.message.contains("u32"), "{}", err.message);
    a.send(json!({ "type": "accept", "offer_id": uuid::Uuid::new_v4() }))
        .await;
    let (ok, err) = a.ack("accept").await;
    assert_eq!(
        (ok, err.unwrap().code),
        (false, agora_shared::ErrorCode::NotFound)
    );
    // Someone else's task.
    let mut b = app.connect(&agents[1]).await;
    b.ready(1).await;
    let (_, task, _) = b.offer().await;
    a.send(json!({ "type": "complete", "task_id": task, "result": 1 }))
        .await;
    let (ok, err) = a.ack("complete").await;
    assert_eq!(
        (ok, err.unwrap().code),
        (false, agora_shared::ErrorCode::Forbidden)
    );
    // Still up.
    a.send(json!({ "type": "ready", "slots": 1, "ref": "r1" }))
        .await;
    let acked = a
        .recv_until(|m| match m {
            ServerMsg::Ack { reference, ok, .. } => Some((reference, ok)),
            _ => None,
        })
        .await;
    assert_eq!(acked, (Some("r1".to_string()), true));
}

#[tokio::test]
async fn a_second_socket_replaces_the_first() {
    let app = spawn_app().await;
    let agent = app.register("twice").await;
    let mut first = app.connect(&agent).await;
    let _second = app.connect(&agent).await;
    assert!(
        first.recv_within(Duration::from_secs(5)).await.is_none(),
        "the first socket is closed"
    );
    let bad = TestAgent {
        token: "wrong".into(),
        ..agent.clone()
    };
    let err = tokio_tungstenite::connect_async(app.ws_url(&bad))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
}

#[tokio::test]
async fn sse_resumes_after_a_disconnect_with_no_gap_and_no_duplicate() {
    let app = spawn_app_with(|c| c.approvals_required = 1).await;
    let a = app.register("a").await;
    let job = app.submit("streamed", json!({})).await;
    let path = format!("/jobs/{job}/stream");
    let mut sse = SseClient::connect(&app, &path, Some(0)).await;
    let mut seen = Vec::new();
    for _ in 0..1 {
        seen.push(sse.next_event().await);
    }
    assert_eq!(seen[0]["kind"], "job.committed");
    let k = seen.last().unwrap()["id"].as_i64().unwrap();
    drop(sse);
    // Events happen while the client is away.
    app.approve(job, &a).await.ok();
    let plan = app.claim(&a).await.unwrap();
    app.task_call(
        &a,
        &id_of(&plan["task"]),
        "complete",
        json!({ "result": { "task_specs": [1, 2] } }),
    )
    .await
    .ok();
    let mut sse = SseClient::connect(&app, &path, Some(k)).await;
    // And while it is back.
    let finisher = {
        let a = a.clone();
        let base = app.base.clone();
        let http = app.http.clone();
        tokio::spawn(async move {
            for _ in 0..2 {
                let r: serde_json::Value = http
                    .post(format!("{base}/tasks/claim"))
                    .bearer_auth(&a.token)
                    .json(&json!({ "agent_id": a.id }))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let t = r["data"]["task"]["id"].as_str().unwrap().to_string();
                http.post(format!("{base}/tasks/{t}/complete"))
                    .bearer_auth(&a.token)
                    .json(&json!({ "result": "ok" }))
                    .send()
                    .await
                    .unwrap();
            }
        })
    };
    loop {
        let e = sse.next_event().await;
        let last = e["kind"] == "job.completed";
        seen.push(e);
        if last {
            break;
        }
    }
    finisher.await.unwrap();
    let from_sse: Vec<i64> = seen.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    let from_table: Vec<i64> = app
        .events(job)
        .await
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        from_sse, from_table,
        "the stream, across the reconnect, is exactly the job's events"
    );
    // A bad resume point is a 400.
    let r = app
        .http
        .get(format!("{}{path}", app.base))
        .header("Last-Event-ID", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn the_global_feed_carries_live_events_of_every_job() {
    let app = spawn_app().await;
    let mut sse = SseClient::connect(&app, "/events", None).await;
    let agent = app.register("a").await;
    let first = sse.next_event().await;
    assert_eq!(
        (first["kind"].as_str(), first["agent_id"].as_str()),
        (
            Some("agent.registered"),
            Some(agent.id.to_string().as_str())
        )
    );
    let job = app.submit("j", json!({})).await;
    let second = sse.next_event().await;
    assert_eq!(
        (second["kind"].as_str(), second["job_id"].as_str()),
        (Some("job.committed"), Some(job.to_string().as_str()))
    );
    assert!(second["id"].as_i64() > first["id"].as_i64());
}

#[tokio::test]
async fn a_long_poll_claim_returns_within_100ms_of_a_task_becoming_pending() {
    let app = Arc::new(spawn_app_with(|c| c.approvals_required = 1).await);
    let agents = app.register_many("lp", 2).await;
    let job = app.submit("j", json!({})).await;
    let waiter = {
        let app = app.clone();
        let a = agents[1].clone();
        tokio::spawn(async move {
            let r = app
                .post(
                    "/tasks/claim",
                    Some(&a.token),
                    json!({ "agent_id": a.id, "wait_secs": 30 }),
                )
                .await;
            (Instant::now(), r.ok())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "the long-poll waits while nothing is pending"
    );
    let approved_at = Instant::now();
    app.approve(job, &agents[0]).await.ok();
    let (claimed_at, claimed) = waiter.await.unwrap();
    assert_eq!(claimed["task"]["type"], "plan");
    let lag = claimed_at.saturating_duration_since(approved_at);
    assert!(
        lag < Duration::from_millis(100),
        "long-poll answered {lag:?} after the task became pending"
    );
    // With nothing pending, it answers null at the end of the wait.
    let started = Instant::now();
    let r = app
        .post(
            "/tasks/claim",
            Some(&agents[0].token),
            json!({ "agent_id": agents[0].id, "wait_secs": 1 }),
        )
        .await
        .ok();
    assert!(r.is_null());
    assert!(started.elapsed() >= Duration::from_millis(900));
}

/// Reads until the server acknowledges a frame of `kind`.
async fn until_acked(s: &mut agora_client::Session, kind: &str) {
    loop {
        if let ServerMsg::Ack { kind: k, ok, .. } = s.next().await.expect("msg") {
            if k == kind {
                assert!(ok, "{kind} refused");
                return;
            }
        }
    }
}

async fn next_offer(s: &mut agora_client::Session) -> (uuid::Uuid, agora_shared::Task) {
    loop {
        if let ServerMsg::TaskOffer { offer_id, task, .. } = s.next().await.expect("msg") {
            return (offer_id, *task);
        }
    }
}

/// A plan completed over a WebSocket makes its work pending and frees the planner's slot at
/// the same moment; the dispatcher must take the wake-up, not lose it to the slot message and
/// leave the work to its 5 s safety re-check. Twenty rounds, each offered well before that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_from_a_plan_completed_over_a_websocket_is_offered_at_once() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.approval_cooldown_secs = 0;
    })
    .await;
    let agents = app.register_many("wake", 3).await;
    let mut planner = app.as_agent(&agents[0]).session().await.expect("planner");
    let mut worker = app.as_agent(&agents[1]).session().await.expect("worker");
    planner.ready(1).await.expect("ready");
    for round in 0..20 {
        let job = app.submit(&format!("round {round}"), json!({})).await;
        let approved = app.approve(job, &agents[2]).await;
        assert_eq!(approved.status, 200, "round {round}: {}", approved.body);
        let (offer, plan) = tokio::time::timeout(Duration::from_secs(2), next_offer(&mut planner))
            .await
            .unwrap_or_else(|_| panic!("round {round}: the plan was not offered within 2 s"));
        planner.accept(offer).await.expect("accept");
        // The worker's slot must be free before the plan completes: its `ready` and the plan's
        // `complete` travel on two sockets, and a `complete` handled first would free the
        // planner's slot first, so the work would rightly go to the planner.
        worker.ready(1).await.expect("ready");
        until_acked(&mut worker, "ready").await;
        planner
            .complete(plan.id, json!({ "task_specs": [{ "round": round }] }))
            .await
            .expect("complete");
        let (offer, work) =
            tokio::time::timeout(Duration::from_millis(2500), next_offer(&mut worker))
                .await
                .unwrap_or_else(|_| {
                    panic!("round {round}: the work waited for the safety re-check")
                });
        assert_eq!(work.job_id, job);
        worker.accept(offer).await.expect("accept");
        worker.complete(work.id, json!(1)).await.expect("complete");
        worker.ready(0).await.expect("not ready");
        until_acked(&mut worker, "ready").await;
    }
}

/// An SSE reader that stops reading while the feed keeps going falls behind the segments the
/// server keeps; when it reads again it gets what was waiting, then `event: resync` with the
/// last id it was sent, and the response ends. Reconnecting from that id gets every later
/// event: each progress report made meanwhile is seen exactly once across the two streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_that_stops_reading_is_told_to_resync_and_resumes_without_loss() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let addr: std::net::SocketAddr = app
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/api")
        .parse()
        .expect("the app's address");
    // A plain socket that is not read (its receive buffer is the kernel's default; a tiny one
    // would leave it waiting on the sender's zero-window probes once it reads again).
    let mut stalled = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stalled
        .write_all(format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("send");
    // The feed goes on: far more than the kernel's socket buffers hold (the server's side grows
    // to 4 MB), then far more than the server's 64 segments (one every 25 ms at most). Eight
    // agents report progress with long messages, 2 KB events, 10 MB in all.
    let agents = app.register_many("p", 8).await;
    app.planned_job(&agents, &agents[0], (0..8).map(|i| json!(i)).collect())
        .await;
    let message = "m".repeat(2000);
    let total = AtomicUsize::new(0);
    let reports = futures::future::join_all(agents.iter().map(|a| {
        let (app, message, total) = (&app, &message, &total);
        async move {
            let claimed = app.claim(a).await.expect("a work task");
            let task = id_of(&claimed["task"]);
            let r = app.task_call(a, &task, "start", json!({})).await;
            assert!(r.status.is_success(), "{}: {}", r.status, r.body);
            let started = Instant::now();
            let mut sent = 0u32;
            while total.load(Ordering::Relaxed) < 5000 || started.elapsed() < Duration::from_secs(3)
            {
                let body = json!({ "progress": sent % 100, "message": message });
                let r = app.task_call(a, &task, "progress", body).await;
                assert!(r.status.is_success(), "{}: {}", r.status, r.body);
                sent += 1;
                total.fetch_add(1, Ordering::Relaxed);
            }
            (task, sent)
        }
    }))
    .await;
    let marker = app.submit("marker", json!({})).await.to_string();
    // Read it all now: the stream must end (chunked body's last chunk) with a resync.
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = stalled.read(&mut buf).await.expect("read");
            raw.extend_from_slice(&buf[..n]);
            if n == 0 || raw.ends_with(b"\r\n0\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the stalled reader's response did not end within 20 s of reading again ({} bytes)",
        raw.len()
    );
    let messages = sse_messages(&dechunk(&raw));
    let (last, before) = messages.split_last().expect("some messages");
    assert_eq!(
        last.event.as_deref(),
        Some("resync"),
        "the last message of a reader that fell behind is a resync"
    );
    let resync: serde_json::Value = serde_json::from_str(&last.data).expect("resync JSON");
    let ids: Vec<i64> = before.iter().filter_map(|m| m.id).collect();
    assert!(!ids.is_empty(), "it got what was waiting before the resync");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids strictly increase");
    assert_eq!(
        resync["last_event_id"].as_i64(),
        ids.last().copied(),
        "resync names the last id it was sent"
    );
    // Reconnect from there and read until the job submitted last.
    let mut sse = SseClient::connect(&app, "/events", ids.last().copied()).await;
    let mut resumed = Vec::new();
    loop {
        let e = sse.next_event().await;
        let done = e["job_id"].as_str() == Some(marker.as_str());
        resumed.push(e);
        if done {
            break;
        }
    }
    let mut all: Vec<serde_json::Value> = before
        .iter()
        .map(|m| serde_json::from_str(&m.data).expect("event JSON"))
        .collect();
    all.extend(resumed);
    let all_ids: Vec<i64> = all.iter().filter_map(|e| e["id"].as_i64()).collect();
    assert!(
        all_ids.windows(2).all(|w| w[0] < w[1]),
        "no duplicate across the resync and the reconnect"
    );
    let mut progress = std::collections::HashMap::<String, u32>::new();
    for e in all.iter().filter(|e| e["kind"] == "task.progress") {
        *progress
            .entry(e["task_id"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    for (task, sent) in reports {
        assert_eq!(
            progress.get(&task).copied().unwrap_or(0),
            sent,
            "every progress report of task {task} once, across the resync and the reconnect"
        );
    }
}

/// An HTTP/1.1 response's chunked body, decoded (the head skipped).
fn dechunk(raw: &[u8]) -> Vec<u8> {
    let start = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |p| p + 4);
    let mut rest = &raw[start..];
    let mut body = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .expect("a chunk size line");
        if size == 0 || rest.len() < eol + 2 + size {
            break;
        }
        body.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
        rest = &rest[eol + 2 + size + 2..];
    }
    body
}

/// The messages of an SSE body (comments skipped).
fn sse_messages(body: &[u8]) -> Vec<SseMsg> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(SseMsg::parse)
        .collect()
}
