//! Leases: every delivery of a task is a lease of its own. Stale revocations cannot touch a
//! newer delivery; an orphaned REST claim comes back within its lease; a claim can be retried
//! with the same `request_id`; a report on an ended delivery is refused (`LEASE_LOST`); a REST
//! agent that thinks for a long time keeps its task unless it asked for heartbeats; failed
//! attempts back off; a task delivered too often fails for good; unregistering cuts the agent
//! off at once. Both stores.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_client::Client;
use agora_shared::ws::{ClientMsg, ServerMsg};
use agora_shared::{ErrorCode, Task, TaskStatus, DELIVERY_LIMIT_ERROR};
use futures::SinkExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::helpers::*;

/// Tasks held (claimed or running) by `agent` since before `older_than_ms` ago, from the
/// database itself.
async fn claims_older_than(app: &TestApp, agent: Uuid, older_than_ms: i64) -> Vec<String> {
    let before = chrono::Utc::now().timestamp_millis() - older_than_ms;
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM tasks WHERE agent_id = $1 AND status = 'claimed' AND claimed_at < $2",
    )
    .bind(agent.to_string())
    .bind(before)
    .fetch_all(app.store.reader_for_tests())
    .await
    .expect("read tasks");
    rows.into_iter().map(|(id,)| id).collect()
}

async fn all_tasks(app: &TestApp, job: Uuid) -> Vec<Task> {
    let all = agora_shared::TaskListQuery {
        limit: Some(1000),
        ..Default::default()
    };
    let page = app.client().tasks(job, &all).await.expect("tasks");
    page.items
}

/// A job with `n` work tasks planned by `planner`, ready to run.
async fn job_of(app: &TestApp, agents: &[TestAgent], n: usize) -> Uuid {
    let specs = (0..n).map(|i| json!({ "i": i })).collect();
    app.planned_job(agents, &agents[0], specs).await
}

/// A WebSocket agent with one slot that declines every offer, beside one that accepts and
/// completes: the decliner's declines used to revoke the re-offer that followed them (the
/// hub routed the late `task.released` by task id), leaving the task `claimed` by an agent
/// whose socket held nothing until its deadline. Checked against the database every 100 ms.
#[tokio::test]
async fn a_declining_agent_never_holds_a_task_its_socket_does_not_know() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        // Long enough that an expired offer cannot hide a lost one.
        c.offer_ttl_secs = 60.0;
        c.max_deliveries = 4;
        c.scheduler_interval_secs = 0.2;
    })
    .await;
    let agents = app.register_many("a", 2).await;
    let job = job_of(&app, &agents, 60).await;
    let stop = Arc::new(AtomicBool::new(false));

    let decliner = app.as_agent(&agents[0]);
    let stop_d = stop.clone();
    let declines = tokio::spawn(async move {
        let mut s = decliner.session().await.expect("session");
        s.ready(1).await.expect("ready");
        let mut n = 0u32;
        while !stop_d.load(Ordering::SeqCst) {
            let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_millis(200), s.next()).await
            else {
                continue;
            };
            if let ServerMsg::TaskOffer { offer_id, .. } = msg {
                s.decline(offer_id, Some("not for me".into()))
                    .await
                    .expect("decline");
                n += 1;
            }
        }
        n
    });
    let worker = app.as_agent(&agents[1]);
    let stop_w = stop.clone();
    let work = tokio::spawn(async move {
        let mut s = worker.session().await.expect("session");
        s.ready(1).await.expect("ready");
        while !stop_w.load(Ordering::SeqCst) {
            let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_millis(200), s.next()).await
            else {
                continue;
            };
            if let ServerMsg::TaskOffer { offer_id, task, .. } = msg {
                s.accept(offer_id).await.expect("accept");
                tokio::time::sleep(Duration::from_millis(15)).await;
                s.complete(task.id, json!({ "done": task.index }))
                    .await
                    .expect("complete");
            }
        }
    });

    let started = Instant::now();
    loop {
        // An offer is answered at once: a task claimed by the decliner for over 3 s is one
        // its socket never showed.
        let stuck = claims_older_than(&app, agents[0].id, 3000).await;
        assert!(
            stuck.is_empty(),
            "tasks held by the decliner with nothing on its socket: {stuck:?}"
        );
        let j = app.client().job(job).await.expect("job");
        if j.status.is_terminal() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the job did not finish: {j:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let declined = declines.await.expect("decliner");
    work.await.expect("worker");
    assert!(declined > 0, "the decliner was offered work");
    let tasks = all_tasks(&app, job).await;
    let mut dead = 0;
    for t in tasks.iter().filter(|t| t.index > 0) {
        match t.status {
            TaskStatus::Completed => assert!(t.deliveries >= 1 && t.deliveries <= 4, "{t:?}"),
            TaskStatus::Failed => {
                assert_eq!(t.error.as_deref(), Some(DELIVERY_LIMIT_ERROR), "{t:?}");
                assert_eq!(
                    t.deliveries, 4,
                    "dead letters after exactly MAX_DELIVERIES: {t:?}"
                );
                dead += 1;
            }
            other => panic!("task {} ended {other}", t.index),
        }
    }
    println!("declined {declined} offers; {dead} of 60 tasks reached the delivery limit");
    // A dead letter says so in its event.
    if dead > 0 {
        let events = app.all_events(job).await;
        assert!(events
            .iter()
            .any(|e| e["kind"] == "task.failed" && e["data"]["dead_letter"] == true));
    }
}

/// A REST claim whose client hangs up before reading the answer is committed; its lease brings
/// the task back within CLAIM_LEASE_SECS plus one sweep, with no attempt counted.
#[tokio::test]
async fn an_orphaned_rest_claim_is_pending_again_within_its_lease() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.claim_lease_secs = 1.0;
        c.scheduler_interval_secs = 0.25;
    })
    .await;
    let agents = app.register_many("a", 2).await;
    let job = job_of(&app, &agents, 1).await;
    let body = json!({ "agent_id": agents[1].id }).to_string();
    let addr = app
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/api");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST /api/tasks/claim HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        agents[1].token,
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.expect("send");
    let work = all_tasks(&app, job)
        .await
        .into_iter()
        .find(|t| t.index == 1)
        .expect("task 1");
    let id = work.id.to_string();
    // The claim is committed; the client hangs up without reading the answer.
    eventually(5, || async {
        (task(&app, &id).await["status"] == "claimed").then_some(())
    })
    .await;
    drop(tcp);
    // Its lease ends it.
    let back = eventually(5, || async {
        let t = task(&app, &id).await;
        (t["status"] == "pending").then_some(t)
    })
    .await;
    let events = app.all_events(job).await;
    let at = |kind: &str| {
        let e = events
            .iter()
            .find(|e| e["kind"] == kind && e["task_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no {kind} event"));
        let t: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(e["at"].clone()).expect("event time");
        (e.clone(), t)
    };
    let (_, claimed_at) = at("task.claimed");
    let (released, released_at) = at("task.released");
    let took = (released_at - claimed_at).num_milliseconds();
    println!("orphaned claim pending again {took} ms after the claim");
    assert!(
        (1000..1000 + 250 + 300).contains(&took),
        "took {took} ms: not the lease plus at most a sweep"
    );
    assert_eq!(back["attempts"], 0, "an unstarted claim costs no attempt");
    assert_eq!(back["deliveries"], 1);
    assert!(back["agent_id"].is_null());
    assert!(
        released["data"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("claim lease expired"),
        "{released}"
    );
}

/// A claim retried with the same `request_id` gets the same delivery; a report naming an
/// earlier delivery of the task is refused with LEASE_LOST and writes nothing.
#[tokio::test]
async fn request_ids_answer_the_same_delivery_and_old_leases_are_refused() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.claim_lease_secs = 1.0;
        c.scheduler_interval_secs = 0.2;
    })
    .await;
    let agents = app.register_many("a", 3).await;
    let job = job_of(&app, &agents, 2).await;
    let me = app.as_agent(&agents[1]);
    let first = me
        .claim_with(None, Some("req-1"))
        .await
        .expect("claim")
        .expect("a task");
    let again = me
        .claim_with(None, Some("req-1"))
        .await
        .expect("claim")
        .expect("the same task");
    assert_eq!(again.task.id, first.task.id);
    assert_eq!(again.lease_id, first.lease_id);
    assert_eq!(again.task.deliveries, 1, "no second delivery");
    let claimed_events = app
        .all_events(job)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "task.claimed" && e["data"]["type"] == "work")
        .count();
    assert_eq!(claimed_events, 1);
    // Another request id is another claim.
    let other = me
        .claim_with(None, Some("req-2"))
        .await
        .expect("claim")
        .expect("the other task");
    assert_ne!(other.task.id, first.task.id);

    // The first delivery's lease runs out; the same agent claims the task again.
    let id = first.task.id.to_string();
    eventually(5, || async {
        (task(&app, &id).await["status"] == "pending").then_some(())
    })
    .await;
    let second = me.claim(None).await.expect("claim").expect("re-claimed");
    assert_eq!(second.task.id, first.task.id);
    assert_ne!(second.lease_id, first.lease_id);
    assert_eq!(second.task.deliveries, 2);

    // Reports on the first delivery: refused, nothing written.
    let before_task = task(&app, &id).await;
    let before_events = app.all_events(job).await.len();
    let old = first.lease_id;
    for (action, body) in [
        ("start", json!({ "lease_id": old })),
        ("progress", json!({ "progress": 50, "lease_id": old })),
        (
            "complete",
            json!({ "result": { "stale": true }, "lease_id": old }),
        ),
        ("fail", json!({ "error": "stale", "lease_id": old })),
    ] {
        // The agent that held it, and another agent naming that lease, are told the same.
        for agent in [&agents[1], &agents[2]] {
            app.task_call(agent, &id, action, body.clone())
                .await
                .err(409, "LEASE_LOST");
        }
    }
    // Over WebSocket too.
    let mut ws = app.connect(&agents[1]).await;
    ws.send(json!({ "type": "complete", "task_id": id, "result": {}, "lease_id": old }))
        .await;
    let (ok, error) = ws.ack("complete").await;
    assert!(!ok);
    assert_eq!(error.expect("error").code, ErrorCode::LeaseLost);
    drop(ws);
    assert_eq!(task(&app, &id).await, before_task, "the task is untouched");
    assert_eq!(app.all_events(job).await.len(), before_events, "no event");

    // The current delivery reports fine (the SDK sends its lease).
    me.start(second.task.id).await.expect("start");
    let done = me
        .complete(second.task.id, json!({ "ok": true }))
        .await
        .expect("complete");
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.deliveries, 2);
}

/// A REST agent that started a task and thinks for three times AGENT_STALE_SECS still
/// completes it (it goes offline meanwhile); one that asked for `heartbeat_secs: 2` and went
/// silent loses it within 2 s plus a sweep, and one that heartbeats keeps it.
#[tokio::test]
async fn a_thinking_agent_keeps_its_task_unless_it_asked_for_heartbeats() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.agent_stale_secs = 1.0;
        c.scheduler_interval_secs = 0.2;
    })
    .await;
    let agents = app.register_many("a", 4).await;
    let _job = job_of(&app, &agents, 3).await;
    let thinker = app.as_agent(&agents[1]);
    let quitter = app.as_agent(&agents[2]);
    let beater = app.as_agent(&agents[3]);
    let t1 = thinker.claim(None).await.expect("claim").expect("task");
    thinker.start(t1.task.id).await.expect("start");
    let t2 = quitter.claim(None).await.expect("claim").expect("task");
    let started = quitter
        .start_with(t2.task.id, Some(2))
        .await
        .expect("start with heartbeat");
    assert_eq!(started.heartbeat_secs, Some(2));
    let t3 = beater.claim(None).await.expect("claim").expect("task");
    beater
        .start_with(t3.task.id, Some(2))
        .await
        .expect("start with heartbeat");
    let silent_from = Instant::now();

    // The quitter's task comes back within its heartbeat lease plus a sweep.
    let beat = tokio::spawn(async move {
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            beater.heartbeat().await.expect("heartbeat");
        }
        beater
    });
    let id2 = t2.task.id.to_string();
    let lost = eventually(6, || async {
        let t = task(&app, &id2).await;
        (t["status"] == "pending").then_some(t)
    })
    .await;
    let took = silent_from.elapsed();
    println!("heartbeat lease lost after {took:?}");
    assert!(
        took < Duration::from_millis(2000 + 200 + 600),
        "took {took:?}"
    );
    assert!(took >= Duration::from_millis(1900), "took {took:?}");
    assert_eq!(lost["attempts"], 1, "a lost heartbeat counts an attempt");
    assert!(
        lost["error"].as_str().unwrap_or("").contains("heartbeat"),
        "{lost}"
    );

    // Three times AGENT_STALE_SECS of silence: offline, but the task is still the thinker's.
    let remaining = Duration::from_secs(3).saturating_sub(silent_from.elapsed());
    tokio::time::sleep(remaining + Duration::from_millis(300)).await;
    let agent = app.get(&format!("/agents/{}", agents[1].id)).await.ok();
    assert_eq!(
        agent["status"], "offline",
        "the stale sweep still marks it offline"
    );
    let held = task(&app, &t1.task.id.to_string()).await;
    assert_eq!(held["status"], "running");
    assert_eq!(held["agent_id"], agents[1].id.to_string());
    let done = thinker
        .complete(t1.task.id, json!({ "thought": "long" }))
        .await
        .expect("the thinker completes");
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.attempts, 0);

    // The heartbeating agent kept its task past its 2 s lease.
    let beater = beat.await.expect("heartbeats");
    let kept = beater
        .complete(t3.task.id, json!({ "beat": true }))
        .await
        .expect("the heartbeating agent completes");
    assert_eq!(kept.attempts, 0);
}

/// With a 1 s base, a task failing three times is not claimable again before 1, 2 and 4 s
/// (at most a quarter more, the jitter) after each failure; the job's other task is claimable
/// at once meanwhile. A long-poll claim and an idle WebSocket agent both wake when the backoff
/// ends, not at a poll.
#[tokio::test]
async fn failed_attempts_back_off_exponentially_and_nothing_else_waits() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.retry_backoff_secs = 1.0;
        c.task_max_retries = 3;
        c.approval_cooldown_secs = 0;
    })
    .await;
    let agents = app.register_many("a", 3).await;
    let job = job_of(&app, &agents, 2).await;
    let me = app.as_agent(&agents[1]);
    let first = me.claim(None).await.expect("claim").expect("task");
    let mut id = first.task.id;
    let mut other_taken = false;
    for (attempt, step_ms) in [(1u32, 1000u64), (2, 2000), (3, 4000)] {
        // Timed from before the report: the backoff runs from the server's commit, which the
        // answer reaches the test after (6 ms later on a loaded machine, so timing from the
        // answer made a correct 2 s backoff look "too early").
        let failed_at = Instant::now();
        let failed = me.fail(id, "try again", true).await.expect("fail");
        assert_eq!(failed.status, TaskStatus::Pending);
        assert_eq!(failed.attempts, attempt);
        let until = failed.available_at.expect("available_at is set");
        let ahead = (until - chrono::Utc::now()).num_milliseconds();
        assert!(
            ahead > step_ms as i64 - 300 && ahead <= (step_ms + step_ms / 4) as i64,
            "available in {ahead} ms after attempt {attempt}"
        );
        if !other_taken {
            // Nothing else waits: the other task is claimable at once.
            let other = app
                .as_agent(&agents[2])
                .claim(None)
                .await
                .expect("claim")
                .expect("the other task is available");
            assert_ne!(other.task.id, id);
            other_taken = true;
        }
        // A long-poll wakes when the backoff ends.
        let again = me
            .claim(Some(10))
            .await
            .expect("claim")
            .expect("the task comes back");
        let waited = failed_at.elapsed();
        println!("attempt {attempt}: claimable again after {waited:?}");
        assert_eq!(again.task.id, id);
        assert!(
            waited >= Duration::from_millis(step_ms),
            "too early: {waited:?}"
        );
        assert!(
            waited < Duration::from_millis(step_ms + step_ms / 4 + 500),
            "too late: {waited:?}"
        );
        id = again.task.id;
    }

    // An idle WebSocket agent is offered a backed-off task when its backoff ends (a timer, not
    // the dispatcher's 5 s safety re-check).
    let job2 = job_of(&app, &agents, 1).await;
    let ws_agent = app.as_agent(&agents[2]);
    let mut s = ws_agent.session().await.expect("session");
    s.ready(1).await.expect("ready");
    let (offer_id, task_id) = loop {
        if let ServerMsg::TaskOffer { offer_id, task, .. } = s.next().await.expect("msg") {
            if task.job_id == job2 {
                break (offer_id, task.id);
            }
        }
    };
    s.accept(offer_id).await.expect("accept");
    s.fail(task_id, "flaky".into(), true).await.expect("fail");
    let failed_at = Instant::now();
    let offered_again = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let ServerMsg::TaskOffer { task, .. } = s.next().await.expect("msg") {
                if task.id == task_id {
                    return Instant::now();
                }
            }
        }
    })
    .await
    .expect("offered again");
    let waited = offered_again - failed_at;
    println!("websocket: offered again after {waited:?}");
    assert!(
        waited >= Duration::from_millis(950),
        "too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(1250 + 600),
        "too late: {waited:?}"
    );
    let _ = job;
}

/// Unregistering closes the agent's sockets at once, its token stops working for REST and
/// WebSocket upgrades, and nothing it sends afterwards fails anyone else's call.
#[tokio::test]
async fn unregistering_cuts_the_agent_off_at_once() {
    let app = spawn_app_with(|c| c.approvals_required = 1).await;
    let agents = app.register_many("a", 4).await;
    let job = job_of(&app, &agents, 200).await;
    revocation_round(&[&app, &app], &agents, job).await;
}

/// The same across two replicas on one PostgreSQL: sockets on both are closed within a second
/// of the unregister on one, and the token is refused on both at once.
#[tokio::test]
async fn unregistering_on_one_replica_cuts_the_agent_off_on_every_replica() {
    if test_backend() != "postgres" {
        return;
    }
    let (apps, _db) = spawn_replicas(2, |c| c.approvals_required = 1).await;
    let agents = apps[0].register_many("a", 4).await;
    let job = job_of(&apps[0], &agents, 200).await;
    revocation_round(&[&apps[0], &apps[1]], &agents, job).await;
}

/// Agent 3 holds a socket on each of `apps` (one socket per server, the same agent) and
/// warms each server's token cache; agents 1 and 2 work the job meanwhile. Agent 3 is
/// unregistered on the first server.
async fn revocation_round(apps: &[&TestApp; 2], agents: &[TestAgent], job: Uuid) {
    let victim = &agents[3];
    let mut sockets = Vec::new();
    for app in apps.iter() {
        // A REST call first, so the token is in this server's cache.
        app.post(
            &format!("/agents/{}/heartbeat", victim.id),
            Some(&victim.token),
            json!({}),
        )
        .await
        .ok();
        sockets.push(app.connect(victim).await);
        if std::ptr::eq(apps[0], apps[1]) {
            break; // one server: one socket (a second would replace the first)
        }
    }
    for s in &mut sockets {
        s.ready(5).await;
    }
    // Other agents work the job meanwhile and must never see a 503.
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for (i, a) in agents[1..3].iter().enumerate() {
        let client = Client::new(&apps[i % 2].base).with_agent(a.id, a.token.clone());
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut done = 0;
            let mut unavailable = 0;
            while !stop.load(Ordering::SeqCst) {
                match client.claim(None).await {
                    Ok(Some(c)) => match client.complete(c.task.id, json!({})).await {
                        Ok(_) => done += 1,
                        Err(e) if e.code() == Some(ErrorCode::Unavailable) => unavailable += 1,
                        Err(_) => {}
                    },
                    Ok(None) => tokio::time::sleep(Duration::from_millis(10)).await,
                    Err(e) if e.code() == Some(ErrorCode::Unavailable) => unavailable += 1,
                    Err(_) => {}
                }
            }
            (done, unavailable)
        }));
    }
    // The victim hammers the server with accepts and completes of whatever it is offered
    // while it is being unregistered.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let gone = apps[0]
        .send(
            reqwest::Method::DELETE,
            &format!("/agents/{}", victim.id),
            Some(&victim.token),
            None,
        )
        .await;
    let unregistered_at = Instant::now();
    gone.ok();
    // Every socket is closed within a second (offers and acks may come first).
    for mut s in sockets {
        let closed = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match s.recv_within(Duration::from_secs(2)).await {
                    None => return,
                    Some(ServerMsg::TaskOffer {
                        offer_id,
                        task,
                        lease_id,
                        ..
                    }) => {
                        // Whatever it tries now must fail without harming anyone.
                        let accept = json!({ "type": "accept", "offer_id": offer_id });
                        let complete = ClientMsg::Complete {
                            task_id: task.id,
                            result: json!({}),
                            lease_id: Some(lease_id),
                        };
                        for frame in [accept.to_string(), json_of(complete).to_string()] {
                            let _ = s.socket.send(Message::Text(frame.into())).await;
                        }
                    }
                    Some(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "a socket was still open a second after the unregister"
        );
    }
    println!(
        "sockets closed {:?} after the unregister",
        unregistered_at.elapsed()
    );
    // The token is refused everywhere at once: REST and WebSocket upgrades.
    for app in apps.iter() {
        app.post(
            &format!("/agents/{}/heartbeat", victim.id),
            Some(&victim.token),
            json!({}),
        )
        .await
        .err(401, "UNAUTHORIZED");
        let upgrade = tokio_tungstenite::connect_async(app.ws_url(victim)).await;
        match upgrade {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status().as_u16(), 401)
            }
            other => panic!("the upgrade with a revoked token answered {other:?}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for w in workers {
        let (done, unavailable) = w.await.expect("worker");
        assert_eq!(unavailable, 0, "another caller saw a 503");
        total += done;
    }
    assert!(total > 0, "the other agents worked meanwhile");
    // Nothing is left claimed by the unregistered agent.
    let tasks = all_tasks(apps[0], job).await;
    assert!(tasks
        .iter()
        .all(|t| !(t.status.is_active() && t.agent_id == Some(victim.id))));
}
