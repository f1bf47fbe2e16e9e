//! One round trip per task for a busy agent: a WebSocket agent that says `ready` with
//! `auto_start` gets offers already started and its next task right after each report's ack,
//! taken in the report's own commit; a REST agent gets the same with `?next=true`. Agents that
//! do not opt in keep the three steps. Both stores.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agora_shared::ws::ServerMsg;
use agora_shared::{ErrorCode, Task, TaskStatus};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

async fn small_app() -> TestApp {
    spawn_app_with(|c| c.approvals_required = 1).await
}

/// A job of `n` work tasks, planned and approved by `agent`.
async fn job_of(app: &TestApp, agent: &TestAgent, n: usize) -> Uuid {
    let specs = (0..n).map(|i| json!({ "i": i })).collect();
    app.planned_job(std::slice::from_ref(agent), agent, specs)
        .await
}

/// A started offer: (offer id, task).
fn started_offer(m: ServerMsg) -> (Uuid, Box<Task>) {
    match m {
        ServerMsg::TaskOffer {
            offer_id,
            task,
            started: true,
            ..
        } => (offer_id, task),
        other => panic!("expected a started task_offer, got {other:?}"),
    }
}

/// The frame right after a report must be its ack, and (while work is left) the frame right
/// after the ack the next task, already running: no `accept` is ever sent. The next task starts
/// at the very instant the last one finished, the mark of one commit.
#[tokio::test]
async fn an_auto_start_agent_gets_its_next_task_right_after_each_ack() {
    let app = small_app().await;
    let agent = app.register("solo").await;
    let job = job_of(&app, &agent, 5).await;
    let mut ws = app.connect(&agent).await;
    ws.send(json!({ "type": "ready", "slots": 1, "auto_start": true, "ref": "r" }))
        .await;
    assert!(ws.ack("ready").await.0);
    let (offer_id, mut task) = started_offer(ws.recv().await);
    assert_eq!(
        task.status,
        TaskStatus::Running,
        "started before it is shown"
    );

    // Not an offer to accept: there is nothing to accept.
    ws.send(json!({ "type": "accept", "offer_id": offer_id }))
        .await;
    let (ok, error) = ws.ack("accept").await;
    assert!(!ok && error.expect("error").code == ErrorCode::NotFound);

    let mut done = Vec::new();
    for i in 0..5 {
        ws.send(json!({ "type": "complete", "task_id": task.id, "result": { "n": i } }))
            .await;
        match ws.recv().await {
            ServerMsg::Ack {
                kind,
                ok: true,
                task: Some(t),
                ..
            } if kind == "complete" => assert_eq!(t.status, TaskStatus::Completed),
            other => panic!("the complete's ack first, got {other:?}"),
        }
        done.push(task.id);
        if i < 4 {
            let (_, next) = started_offer(ws.recv().await);
            assert!(!done.contains(&next.id), "a new task each time");
            task = next;
        }
    }
    assert!(
        ws.recv_within(Duration::from_millis(500)).await.is_none(),
        "nothing is left to offer"
    );

    let tasks = app.work_tasks(job).await;
    assert!(tasks.iter().all(|t| t.status == TaskStatus::Completed));
    let finished: HashSet<_> = tasks.iter().filter_map(|t| t.finished_at).collect();
    for t in &tasks {
        let started = t.started_at.expect("started");
        if t.id != done[0] {
            assert!(
                finished.contains(&started),
                "task {} started in the commit that finished the one before it",
                t.index
            );
        }
    }
    let kinds = app.event_kinds(job).await;
    assert_eq!(kinds.iter().filter(|k| *k == "task.started").count(), 5);
    assert_eq!(app.job(job).await["status"], "completed");
}

/// `?next=true` on complete and fail answers `{task, next}` with the next claim (its lease
/// works), `null` when the queue is empty. A refused report claims nothing.
#[tokio::test]
async fn rest_reports_with_next_answer_the_next_claim_and_a_refused_one_claims_nothing() {
    let app = small_app().await;
    let agent = app.register("rest").await;
    let other = app.register("other").await;
    let job = job_of(&app, &agent, 3).await;
    let first = app.claim(&agent).await.expect("a task");
    let first_id = id_of(&first["task"]);

    // Refused reports: another agent's task, a lease that is not this delivery's, a bad flag.
    app.task_call(&other, &first_id, "complete?next=true", json!({}))
        .await
        .err(403, "FORBIDDEN");
    app.task_call(
        &agent,
        &first_id,
        "complete?next=true",
        json!({ "lease_id": Uuid::new_v4() }),
    )
    .await
    .err(409, "LEASE_LOST");
    let bad = app
        .task_call(&agent, &first_id, "complete?next=yes", json!({}))
        .await;
    bad.err(400, "VALIDATION_ERROR");
    let pending = app
        .work_tasks(job)
        .await
        .iter()
        .filter(|t| t.status == TaskStatus::Pending)
        .count();
    assert_eq!(pending, 2, "no refused report claimed a task");

    let lease = first["lease_id"].as_str().expect("lease");
    let answer = app
        .task_call(
            &agent,
            &first_id,
            "complete?next=true",
            json!({ "result": 1, "lease_id": lease }),
        )
        .await
        .ok();
    assert_eq!(answer["task"]["status"], "completed");
    let next = &answer["next"];
    assert_eq!(next["task"]["status"], "claimed");
    assert_eq!(next["job"]["id"], job.to_string());
    let second = id_of(&next["task"]);
    assert_ne!(second, first_id);

    // Fail with next (for good): the next claim is the last task.
    let answer = app
        .task_call(
            &agent,
            &second,
            "fail?next=true",
            json!({ "error": "no", "retryable": false, "lease_id": next["lease_id"] }),
        )
        .await
        .ok();
    assert_eq!(answer["task"]["status"], "failed");
    let third = answer["next"].clone();
    assert_eq!(third["task"]["status"], "claimed");
    let answer = app
        .task_call(
            &agent,
            &id_of(&third["task"]),
            "complete?next=true",
            json!({ "lease_id": third["lease_id"] }),
        )
        .await
        .ok();
    assert_eq!(answer["task"]["status"], "completed");
    assert_eq!(answer["next"], Value::Null, "nothing left");

    // Without the flag the answer is the task, as before.
    let job2 = job_of(&app, &other, 1).await;
    let c = app.claim(&agent).await.expect("a task");
    let plain = app
        .task_call(&agent, &id_of(&c["task"]), "complete", json!({}))
        .await
        .ok();
    assert_eq!(plain["status"], "completed");
    assert_eq!(app.job(job2).await["status"], "completed");
}

/// The SDK's `complete_next` drives a REST agent through a job one round trip per task.
#[tokio::test]
async fn the_sdk_completes_a_job_one_call_per_task() {
    let app = small_app().await;
    let agent = app.register("sdk").await;
    let job = job_of(&app, &agent, 20).await;
    let client = app.as_agent(&agent);
    let mut task = client.claim(None).await.expect("claim");
    let mut calls = 0;
    while let Some(c) = task {
        calls += 1;
        let done = client
            .complete_next(c.task.id, json!({ "i": c.task.index }))
            .await
            .expect("complete");
        assert_eq!(done.task.status, TaskStatus::Completed);
        task = done.next;
    }
    assert_eq!(calls, 20, "one call per task after the first claim");
    assert_eq!(app.job(job).await["status"], "completed");
}

/// Lowered slots take no next task (the slot is free, the queue keeps it); `auto_start` can be
/// turned off again (offers must then be accepted); a started task dies with its socket like an
/// accepted one (a failed attempt, back to pending).
#[tokio::test]
async fn slots_and_auto_start_can_change_and_a_started_task_dies_with_its_socket() {
    let app = small_app().await;
    let agent = app.register("changer").await;
    let job = job_of(&app, &agent, 4).await;
    let mut ws = app.connect(&agent).await;
    ws.send(json!({ "type": "ready", "slots": 1, "auto_start": true }))
        .await;
    assert!(ws.ack("ready").await.0);
    let (_, task) = started_offer(ws.recv().await);
    ws.ready(0).await;
    ws.send(json!({ "type": "complete", "task_id": task.id }))
        .await;
    assert!(ws.ack("complete").await.0);
    assert!(
        ws.recv_within(Duration::from_millis(500)).await.is_none(),
        "no slot, no next task"
    );
    let pending = |tasks: Vec<Task>| {
        tasks
            .iter()
            .filter(|t| t.status == TaskStatus::Pending)
            .count()
    };
    assert_eq!(pending(app.work_tasks(job).await), 3);

    // Three steps again: the offer waits for an accept.
    ws.ready(1).await;
    match ws.recv().await {
        ServerMsg::TaskOffer {
            started: false,
            task,
            ..
        } => assert_eq!(task.status, TaskStatus::Claimed),
        other => panic!("expected an offer to accept, got {other:?}"),
    }
    ws.send(json!({ "type": "ready", "slots": 1, "auto_start": true }))
        .await;
    assert!(ws.ack("ready").await.0);
    drop(ws);

    // The unaccepted offer goes back without an attempt when the socket closes.
    let mut ws = app.connect(&agent).await;
    ws.send(json!({ "type": "ready", "slots": 1, "auto_start": true }))
        .await;
    assert!(ws.ack("ready").await.0);
    // A started offer may be declined: back to pending, no attempt, and offered again.
    let (offer_id, declined) = started_offer(ws.recv().await);
    let released = |kinds: Vec<String>| kinds.iter().filter(|k| *k == "task.released").count();
    // The closed socket's offer is released by the server on its own time: this offer may be
    // another pending task's, taken before that release was written.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while released(app.event_kinds(job).await) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed socket's offer was never released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = released(app.event_kinds(job).await);
    ws.send(json!({ "type": "decline", "offer_id": offer_id, "reason": "cannot plan" }))
        .await;
    assert!(ws.ack("decline").await.0);
    let t = app.get(&format!("/tasks/{}", declined.id)).await.ok();
    // Pending again, or already offered again (the dispatcher is quick): no attempt either way.
    assert_eq!(t["attempts"], 0, "{t}");
    assert_ne!(t["status"], "failed");
    assert_eq!(released(app.event_kinds(job).await), before + 1);
    let (_, held) = started_offer(ws.recv().await);
    ws.send(json!({ "type": "decline", "offer_id": offer_id }))
        .await;
    assert!(!ws.ack("decline").await.0, "declined once only");
    drop(ws);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let t = app.get(&format!("/tasks/{}", held.id)).await.ok();
        if t["status"] == "pending" {
            assert_eq!(
                t["attempts"], 1,
                "a started task lost with its socket is an attempt"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the started task came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Agents of all three kinds race on one queue: auto-start WebSocket agents, three-step
/// WebSocket agents and REST agents using `?next=true`. Every task is completed exactly once,
/// with no attempt lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_start_three_step_and_rest_agents_race_and_complete_every_task_once() {
    const TASKS: usize = 600;
    let app = Arc::new(small_app().await);
    let planner = app.register("planner").await;
    let job = job_of(&app, &planner, TASKS).await;
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for i in 0..24 {
        let app = app.clone();
        let done = done.clone();
        let agent = app.register(&format!("racer{i}")).await;
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            match i % 3 {
                0 | 1 => {
                    let auto_start = i % 3 == 0;
                    let mut ws = app.connect(&agent).await;
                    ws.send(json!({ "type": "ready", "slots": 2, "auto_start": auto_start }))
                        .await;
                    while done.load(Ordering::SeqCst) < TASKS {
                        let Some(msg) = ws.recv_within(Duration::from_millis(200)).await else {
                            continue;
                        };
                        match msg {
                            ServerMsg::TaskOffer {
                                offer_id,
                                task,
                                started,
                                ..
                            } => {
                                assert_eq!(started, auto_start);
                                let frame = match started {
                                    true => json!({ "type": "complete", "task_id": task.id }),
                                    false => json!({ "type": "accept", "offer_id": offer_id }),
                                };
                                ws.send(frame).await;
                            }
                            ServerMsg::Ack {
                                kind,
                                ok,
                                error,
                                task: Some(t),
                                ..
                            } => {
                                assert!(ok, "{kind}: {error:?}");
                                if kind == "accept" {
                                    ws.send(json!({ "type": "complete", "task_id": t.id }))
                                        .await;
                                } else if kind == "complete" {
                                    mine.push(t.id);
                                    done.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                            ServerMsg::TaskRevoked { task_id, reason } => {
                                panic!("{task_id} revoked: {reason}")
                            }
                            _ => {}
                        }
                    }
                }
                _ => mine = app.rest_next_worker(&agent, &done, TASKS).await,
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (TASKS, TASKS));
    let tasks = app.work_tasks(job).await;
    assert!(tasks
        .iter()
        .all(|t| t.status == TaskStatus::Completed && t.attempts == 0));
    assert_eq!(app.job(job).await["status"], "completed");
}

/// A batch of reports that each ask for the next task is claimed together (`store/ahead.rs`):
/// it must hand out what the same claims one at a time would. Thirty-two REST agents (rust, no
/// go) race through a queue of plain tasks, tasks that require go, and tasks with exclusive
/// keys. Replaying the events: no agent gets a task it lacks a capability for, no key ever has
/// two holders, and the plain tasks are first claimed in queue order.
#[tokio::test]
async fn reports_with_next_hand_out_the_queue_as_claims_one_at_a_time_would() {
    let app = Arc::new(small_app().await);
    let planner = register_with(&app, "planner", &["rust"]).await;
    // Keys of their own (claimable at once, so the queue's head moves past them) and, at the
    // end, two tasks sharing one.
    let specs: Vec<Value> = (0..120)
        .map(|i| match (i % 10, i >= 100) {
            (3, _) => json!({"spec": {"i": i}, "requires": ["go"]}),
            (6, _) => json!({"spec": {"i": i}, "key": format!("file{i}")}),
            (7, true) => json!({"spec": {"i": i}, "key": "db"}),
            _ => json!({"spec": {"i": i}}),
        })
        .collect();
    let job = app
        .planned_job(std::slice::from_ref(&planner), &planner, specs)
        .await;
    let runnable = 120 - 12; // all but the go tasks
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for n in 0..32 {
        let agent = register_with(&app, &format!("rusty-{n}"), &["rust"]).await;
        let (app, done) = (app.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let client = app.as_agent(&agent);
            let mut task = None;
            while done.load(Ordering::SeqCst) < runnable {
                let c = match task.take() {
                    Some(c) => c,
                    None => match client.claim(Some(1)).await.expect("claim") {
                        Some(c) => c,
                        None => {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            continue;
                        }
                    },
                };
                let finished = client
                    .complete_next(c.task.id, json!({ "by": agent.name }))
                    .await
                    .expect("complete");
                done.fetch_add(1, Ordering::SeqCst);
                task = finished.next;
            }
            if let Some(c) = task {
                client.complete_next(c.task.id, json!(0)).await.ok();
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let tasks: std::collections::HashMap<Uuid, Task> = app
        .work_tasks(job)
        .await
        .into_iter()
        .map(|t| (t.id, t))
        .collect();
    let mut holders: std::collections::HashMap<String, i32> = Default::default();
    let mut first_claims = Vec::new();
    let mut claimed = HashSet::new();
    for e in app.all_events(job).await {
        let Some(task) = e["task_id"]
            .as_str()
            .and_then(|t| tasks.get(&t.parse().unwrap()))
        else {
            continue;
        };
        match (e["kind"].as_str().unwrap(), &task.key) {
            ("task.claimed", key) => {
                assert!(
                    task.requires.is_empty(),
                    "a go task went to {}",
                    e["agent_id"]
                );
                if let Some(key) = key {
                    let n = holders.entry(key.clone()).or_default();
                    *n += 1;
                    assert!(*n <= 1, "two holders of {key} at event {}", e["id"]);
                } else if claimed.insert(task.id) {
                    first_claims.push(task.index);
                }
            }
            ("task.completed" | "task.failed" | "task.released", Some(key)) => {
                *holders.entry(key.clone()).or_default() -= 1;
            }
            _ => {}
        }
    }
    let plain = tasks
        .values()
        .filter(|t| t.key.is_none() && t.requires.is_empty())
        .count();
    assert_eq!(first_claims.len(), plain, "every plain task claimed");
    assert!(
        first_claims.windows(2).all(|w| w[0] < w[1]),
        "plain tasks first claimed in queue order: {first_claims:?}"
    );
    let left: Vec<u32> = tasks
        .values()
        .filter(|t| t.status != TaskStatus::Completed)
        .map(|t| t.index)
        .collect();
    assert_eq!(left.len(), 12, "only the go tasks wait: {left:?}");
}
