//! Plans with control fields (issue 19): dependencies and the results passed downstream,
//! validation of the graph, failures that spread to dependents, capability routing, exclusive
//! keys under racing agents, and idempotent submits. Against the real server, on both stores.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_shared::ws::ServerMsg;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

/// Registers an agent with capabilities.
/// A job approved by `approver` whose plan task `planner` has claimed and started: (job, plan
/// task id).
async fn job_at_planning(
    app: &TestApp,
    approver: &TestAgent,
    planner: &TestAgent,
) -> (Uuid, String) {
    let job = app.submit("graph", json!({ "goal": "graph" })).await;
    app.approve(job, approver).await.ok();
    let plan = app.claim(planner).await.expect("the plan task");
    assert_eq!(plan["task"]["type"], "plan");
    let id = id_of(&plan["task"]);
    app.task_call(planner, &id, "start", json!({})).await.ok();
    (job, id)
}

/// The job's tasks by index.
async fn tasks_of(app: &TestApp, job: Uuid) -> BTreeMap<u64, Value> {
    let page = app.get(&format!("/jobs/{job}/tasks?limit=500")).await.ok();
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| (t["index"].as_u64().expect("index"), t.clone()))
        .collect()
}

/// Event ids of `kind` per task id.
fn event_ids(events: &[Value], kind: &str) -> HashMap<String, Vec<i64>> {
    let mut out: HashMap<String, Vec<i64>> = HashMap::new();
    for e in events.iter().filter(|e| e["kind"] == kind) {
        if let Some(t) = e["task_id"].as_str() {
            out.entry(t.to_string())
                .or_default()
                .push(e["id"].as_i64().expect("id"));
        }
    }
    out
}

#[tokio::test]
async fn a_diamond_runs_in_dependency_order_and_the_last_task_gets_both_results() {
    let app = spawn_app_with(|c| c.approvals_required = 1).await;
    let agents = app.register_many("diamond", 3).await;
    let job = app
        .planned_job(
            &agents[..1],
            &agents[0],
            vec![
                json!({"spec": {"step": "ast"}, "name": "a"}),
                json!({"spec": {"step": "pass 1"}, "name": "b", "depends_on": ["a"]}),
                json!({"spec": {"step": "pass 2"}, "name": "c", "depends_on": [0]}),
                json!({"spec": {"step": "test"}, "name": "d", "depends_on": ["b", "c"]}),
            ],
        )
        .await;
    let tasks = tasks_of(&app, job).await;
    assert_eq!(tasks[&1]["name"], "a");
    assert_eq!(tasks[&4]["depends_on"], json!([2, 3]));
    assert_eq!(tasks[&4]["unmet_dependencies"], 2);
    assert!(tasks[&1].get("depends_on").is_none());

    // Three WebSocket agents take whatever they are offered; each task takes 300 ms.
    let offers: Arc<Mutex<HashMap<u32, serde_json::Map<String, Value>>>> = Arc::default();
    let mut workers = Vec::new();
    for agent in &agents {
        let mut ws = app.connect(agent).await;
        let offers = offers.clone();
        let name = agent.name.clone();
        workers.push(tokio::spawn(async move {
            ws.ready(1).await;
            while let Some(msg) = ws.recv_within(Duration::from_secs(60)).await {
                let ServerMsg::TaskOffer {
                    offer_id,
                    task,
                    lease_id,
                    inputs,
                    ..
                } = msg
                else {
                    continue;
                };
                offers.lock().unwrap().insert(task.index, inputs);
                ws.send(json!({"type": "accept", "offer_id": offer_id})).await;
                assert!(ws.ack("accept").await.0);
                tokio::time::sleep(Duration::from_millis(300)).await;
                let result = json!({"by": name, "step": task.task_spec["step"]});
                ws.send(json!({"type": "complete", "task_id": task.id, "lease_id": lease_id, "result": result}))
                    .await;
                assert!(ws.ack("complete").await.0);
            }
        }));
    }
    eventually(30, || async {
        (app.job(job).await["status"] == "completed").then_some(())
    })
    .await;
    for w in workers {
        w.abort();
    }

    let events = app.all_events(job).await;
    let tasks = tasks_of(&app, job).await;
    let id = |i: u64| id_of(&tasks[&i]);
    let claimed = event_ids(&events, "task.claimed");
    let completed = event_ids(&events, "task.completed");
    let (c, f) = (|i| claimed[&id(i)][0], |i| completed[&id(i)][0]);
    // b and c only after a; in parallel (each claimed before the other completed); d last.
    assert!(c(2) > f(1) && c(3) > f(1), "b and c wait for a");
    assert!(c(2) < f(3) && c(3) < f(2), "b and c run in parallel");
    assert!(c(4) > f(2) && c(4) > f(3), "d waits for b and c");
    for i in 1..=4 {
        assert_eq!(claimed[&id(i)].len(), 1, "task {i} delivered once");
    }
    let offers = offers.lock().unwrap();
    assert!(offers[&1].is_empty(), "a has no inputs");
    assert_eq!(
        Value::Object(offers[&2].clone()),
        json!({"a": tasks[&1]["result"]})
    );
    // d's offer carries b's and c's results, in depends_on order.
    let d_inputs = &offers[&4];
    assert_eq!(d_inputs.keys().collect::<Vec<_>>(), ["b", "c"]);
    assert_eq!(d_inputs["b"], tasks[&2]["result"]);
    assert_eq!(d_inputs["c"], tasks[&3]["result"]);
    assert_eq!(d_inputs["b"]["step"], "pass 1");
}

#[tokio::test]
async fn cycles_unknown_references_and_duplicate_names_get_422_naming_the_entries() {
    let app = spawn_app_with(|c| c.approvals_required = 1).await;
    let a = app.register("planner").await;
    let (job, plan) = job_at_planning(&app, &a, &a).await;
    for (specs, field, says) in [
        (
            json!([
                {"spec": 1, "name": "parse"},
                {"spec": 2, "name": "lower", "depends_on": ["parse", "emit"]},
                {"spec": 3, "name": "emit", "depends_on": ["lower"]},
            ]),
            "result.task_specs",
            "dependency cycle (each waits for the next): lower (task_specs[1]) -> emit (task_specs[2]) -> lower (task_specs[1])",
        ),
        (
            json!([{"spec": 1, "name": "a"}, {"spec": 2, "depends_on": ["a", "nope"]}]),
            "result.task_specs[1].depends_on[1]",
            "no entry is named 'nope'",
        ),
        (
            json!([{"spec": 1, "depends_on": [3]}, 2]),
            "result.task_specs[0].depends_on[0]",
            "position 3 is past the plan's last entry (1)",
        ),
        (
            json!([{"spec": 1, "name": "x"}, {"spec": 2}, {"spec": 3, "name": "x"}]),
            "result.task_specs[2].name",
            "'x' is already the name of task_specs[0]",
        ),
        (
            json!([{"spec": 1, "requires": "rust"}]),
            "result.task_specs[0].requires",
            "must be an array of capability strings, got a string",
        ),
        (
            json!([{"spec": 1, "timeout_secs": -5}]),
            "result.task_specs[0].timeout_secs",
            "must be a whole number",
        ),
        (
            json!([{"spec": 1, "priority": 3}]),
            "result.task_specs[0].priority",
            "is not a control field",
        ),
    ] {
        let r = app
            .task_call(&a, &plan, "complete", json!({"result": {"task_specs": specs}}))
            .await;
        r.err(422, "INVALID_PLAN");
        assert_eq!(r.body["error"]["field"], field, "{specs}");
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{specs}: {message}");
    }
    // Nothing was written: the plan task still runs, no work task exists.
    let j = app.job(job).await;
    assert_eq!(
        (j["status"].as_str(), j["tasks_total"].as_u64()),
        (Some("planning"), Some(1))
    );
    assert_eq!(tasks_of(&app, job).await.len(), 1);
    // The same plan without its faults lands.
    app.task_call(
        &a,
        &plan,
        "complete",
        json!({"result": {"task_specs": [{"spec": 1, "name": "parse"}, {"spec": 2, "depends_on": ["parse"]}]}}),
    )
    .await
    .ok();
    assert_eq!(app.job(job).await["status"], "ready");
}

#[tokio::test]
async fn a_dependency_that_fails_for_good_fails_its_dependents_transitively() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.retry_backoff_secs = 0.0;
    })
    .await;
    let a = app.register("worker").await;
    let job = app
        .planned_job(
            std::slice::from_ref(&a),
            &a,
            vec![
                json!({"spec": "flaky", "name": "fetch", "max_retries": 1}),
                json!({"spec": "build", "name": "build", "depends_on": ["fetch"]}),
                json!({"spec": "test", "name": "test", "depends_on": ["build"]}),
                json!({"spec": "docs", "name": "docs"}),
            ],
        )
        .await;
    // Two attempts at fetch (max_retries 1), docs completes; build and test never run.
    let mut attempts = 0;
    while let Some(c) = app.claim(&a).await {
        let id = id_of(&c["task"]);
        assert!(
            c["task"]["name"] == "fetch" || c["task"]["name"] == "docs",
            "only tasks without unmet dependencies are claimable: {}",
            c["task"]
        );
        if c["task"]["name"] == "fetch" {
            attempts += 1;
            app.task_call(
                &a,
                &id,
                "fail",
                json!({"error": "network down", "retryable": true}),
            )
            .await
            .ok();
        } else {
            app.task_call(&a, &id, "complete", json!({"result": "ok"}))
                .await
                .ok();
        }
    }
    assert_eq!(attempts, 2);
    let j = app.job(job).await;
    assert_eq!(j["status"], "failed");
    assert_eq!(j["error"], "3 of 5 tasks failed");
    let tasks = tasks_of(&app, job).await;
    let state = |i: u64| {
        (
            tasks[&i]["status"].as_str().unwrap(),
            tasks[&i]["error"].as_str(),
        )
    };
    assert_eq!(state(1), ("failed", Some("network down")));
    assert_eq!(state(2), ("failed", Some("dependency failed: fetch")));
    assert_eq!(state(3), ("failed", Some("dependency failed: build")));
    assert_eq!(state(4), ("completed", None));
    // Each dependent's failure is an event with its reason; none was ever claimed.
    let events = app.all_events(job).await;
    let failed = events
        .iter()
        .filter(|e| e["kind"] == "task.failed" && e["data"]["index"].as_u64() >= Some(2))
        .map(|e| {
            (
                e["data"]["index"].as_u64().unwrap(),
                e["data"]["error"].as_str().unwrap(),
            )
        })
        .collect::<Vec<_>>();
    assert_eq!(
        failed,
        [
            (2, "dependency failed: fetch"),
            (3, "dependency failed: build")
        ]
    );
    assert!(!event_ids(&events, "task.claimed").contains_key(&id_of(&tasks[&2])));
}

#[tokio::test]
async fn tasks_go_only_to_agents_with_their_capabilities_and_the_rest_wait_visibly() {
    let app = spawn_app_with(|c| c.approvals_required = 1).await;
    let rust = register_with(&app, "rusty", &["rust", "git"]).await;
    let python = register_with(&app, "pythonista", &["python"]).await;
    let mut specs = Vec::new();
    for i in 0..12 {
        specs.push(match i % 3 {
            0 => json!({"spec": {"i": i}, "requires": ["rust"]}),
            1 => json!({"spec": {"i": i}, "requires": ["python"]}),
            _ => json!({"spec": {"i": i}}),
        });
    }
    specs.push(json!({"spec": "port to go", "name": "go-port", "requires": ["go"]}));
    specs.push(json!({"spec": "both", "requires": ["rust", "python"]}));
    let job = app
        .planned_job(std::slice::from_ref(&rust), &python, specs)
        .await;

    // The rust agent over WebSocket, the python agent by REST claims, at the same time.
    let mut ws = app.connect(&rust).await;
    ws.ready(1).await;
    let by_ws = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(msg) = ws.recv_within(Duration::from_secs(2)).await {
            if let ServerMsg::TaskOffer {
                offer_id,
                task,
                lease_id,
                ..
            } = msg
            {
                got.push(task.requires.clone());
                ws.send(json!({"type": "accept", "offer_id": offer_id}))
                    .await;
                assert!(ws.ack("accept").await.0);
                ws.send(json!({"type": "complete", "task_id": task.id, "lease_id": lease_id, "result": 1}))
                    .await;
                assert!(ws.ack("complete").await.0);
            }
        }
        got
    });
    let mut by_rest = Vec::new();
    for _ in 0..40 {
        match app.claim(&python).await {
            Some(c) => {
                by_rest.push(c["task"]["requires"].clone());
                let id = id_of(&c["task"]);
                app.task_call(&python, &id, "complete", json!({"result": 2}))
                    .await
                    .ok();
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let by_ws = by_ws.await.unwrap();
    for r in &by_ws {
        assert!(
            r.iter().all(|c| c == "rust" || c == "git"),
            "rust agent got {r:?}"
        );
    }
    for r in &by_rest {
        assert!(
            r.is_null() || r == &json!(["python"]),
            "python agent got {r}"
        );
    }
    assert!(
        by_ws.iter().any(|r| r == &["rust"]),
        "the rust agent took rust work"
    );
    assert_eq!(
        by_ws.len() + by_rest.len(),
        12,
        "every task someone could take was taken once"
    );

    // Left: go and rust+python, pending, each saying what it waits for.
    let tasks = tasks_of(&app, job).await;
    let pending: Vec<&Value> = tasks
        .values()
        .filter(|t| t["status"] == "pending")
        .collect();
    assert_eq!(pending.len(), 2);
    let go = tasks.values().find(|t| t["name"] == "go-port").unwrap();
    assert_eq!(go["waiting_for"], "waiting for an agent with: go");
    assert_eq!(
        app.get(&format!("/tasks/{}", id_of(go))).await.ok()["waiting_for"],
        "waiting for an agent with: go"
    );
    let stats = app.get("/stats").await.ok();
    assert_eq!(
        stats["waiting_for_capabilities"],
        json!([{"requires": ["go"], "tasks": 1}, {"requires": ["python", "rust"], "tasks": 1}])
    );
    // An agent with both arrives and takes the task that needs both; go still waits.
    let both = register_with(&app, "polyglot", &["python", "rust"]).await;
    let c = app.claim(&both).await.expect("the rust+python task");
    assert_eq!(c["task"]["requires"], json!(["python", "rust"]));
    assert!(app.claim(&both).await.is_none());
    let stats = app.get("/stats").await.ok();
    assert_eq!(
        stats["waiting_for_capabilities"],
        json!([{"requires": ["go"], "tasks": 1}])
    );
}

#[tokio::test]
async fn fifty_racing_agents_never_hold_one_key_twice_and_complete_every_task_once() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.key_limits = vec![("wide".to_string(), 3)];
    })
    .await;
    let agents = app.register_many("racer", 50).await;
    let specs: Vec<Value> = (0..200)
        .map(|i| json!({"spec": {"i": i}, "key": format!("src/file{}.rs", i % 10)}))
        .collect();
    let job = app.planned_job(&agents[..1], &agents[0], specs).await;
    let app = Arc::new(app);
    let mut racers = Vec::new();
    for agent in agents {
        let app = app.clone();
        racers.push(tokio::spawn(async move {
            let mut done = 0;
            let mut idle = 0;
            while idle < 20 {
                match app.claim(&agent).await {
                    Some(c) => {
                        idle = 0;
                        let id = id_of(&c["task"]);
                        app.task_call(&agent, &id, "start", json!({})).await.ok();
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        app.task_call(&agent, &id, "complete", json!({"result": id}))
                            .await
                            .ok();
                        done += 1;
                    }
                    None => {
                        idle += 1;
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                }
                if app.job(job).await["status"] == "completed" {
                    break;
                }
            }
            done
        }));
    }
    let mut total = 0;
    for r in racers {
        total += r.await.unwrap();
    }
    assert_eq!(total, 200);
    assert_eq!(app.job(job).await["status"], "completed");
    app.assert_keys_held_once(job, 200).await;
}

#[tokio::test]
async fn a_key_limit_allows_that_many_and_a_freed_key_is_offered_at_once() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.key_limits = vec![("db".to_string(), 2)];
    })
    .await;
    let agents = app.register_many("k", 4).await;
    let specs = vec![
        json!({"spec": 1, "key": "db"}),
        json!({"spec": 2, "key": "db"}),
        json!({"spec": 3, "key": "db"}),
        json!({"spec": 4, "key": "deploy"}),
        json!({"spec": 5, "key": "deploy"}),
    ];
    app.planned_job(&agents[..1], &agents[0], specs).await;
    // By REST: two db holders (KEY_LIMITS db=2), one deploy holder.
    let mut held = Vec::new();
    for a in &agents[..3] {
        let c = app.claim(a).await.expect("a task");
        held.push((a, id_of(&c["task"]), c["task"]["key"].clone()));
    }
    let keys: Vec<&Value> = held.iter().map(|h| &h.2).collect();
    assert_eq!(keys.iter().filter(|k| **k == "db").count(), 2, "{keys:?}");
    assert_eq!(
        keys.iter().filter(|k| **k == "deploy").count(),
        1,
        "{keys:?}"
    );
    // The fourth agent waits on a WebSocket: nothing is free.
    let mut ws = app.connect(&agents[3]).await;
    ws.ready(1).await;
    assert!(
        ws.recv_within(Duration::from_millis(500))
            .await
            .is_none_or(|m| !matches!(m, ServerMsg::TaskOffer { .. })),
        "no offer while every key is held"
    );
    // The deploy holder completes: the other deploy task is offered at once (no polling: the
    // dispatcher's safety re-check is 5 s away).
    let (agent, id, _) = held.iter().find(|h| h.2 == "deploy").unwrap();
    let t0 = std::time::Instant::now();
    app.task_call(agent, id, "complete", json!({"result": 1}))
        .await
        .ok();
    let offered = tokio::time::timeout(
        Duration::from_secs(2),
        ws.recv_until(|m| match m {
            ServerMsg::TaskOffer { task, .. } => Some(task),
            _ => None,
        }),
    )
    .await
    .expect("offered when the key freed");
    assert_eq!(offered.key.as_deref(), Some("deploy"));
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn twenty_concurrent_submits_with_one_idempotency_key_make_one_job() {
    let app = Arc::new(spawn_app_with(|c| c.idempotency_ttl_secs = 2).await);
    let body =
        json!({"title": "once", "job_spec": {"z": 1, "a": 2}, "idempotency_key": "deploy-42"});
    let mut calls = Vec::new();
    for _ in 0..20 {
        let (app, body) = (app.clone(), body.clone());
        calls.push(tokio::spawn(
            async move { app.post("/jobs", None, body).await },
        ));
    }
    let mut ids = HashSet::new();
    let mut statuses = Vec::new();
    for c in calls {
        let r = c.await.unwrap();
        statuses.push(r.status.as_u16());
        ids.insert(r.ok()["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1, "one job");
    statuses.sort();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        19,
        "{statuses:?}"
    );
    let jobs = app.get("/jobs?limit=100").await.ok();
    assert_eq!(jobs["total"], 1);
    // The same content with its keys in another order is the same body.
    let again = app
        .post(
            "/jobs",
            None,
            json!({"idempotency_key": "deploy-42", "job_spec": {"a": 2, "z": 1}, "title": "once"}),
        )
        .await;
    assert_eq!(again.status.as_u16(), 200);
    assert!(ids.contains(again.ok()["id"].as_str().unwrap()));
    // Another body with the key is refused, naming the field; nothing is created.
    let other = app
        .post(
            "/jobs",
            None,
            json!({"title": "twice", "job_spec": {}, "idempotency_key": "deploy-42"}),
        )
        .await;
    other.err(409, "IDEMPOTENCY_CONFLICT");
    assert_eq!(other.body["error"]["field"], "idempotency_key");
    assert_eq!(app.get("/jobs").await.ok()["total"], 1);
    // Past IDEMPOTENCY_TTL_SECS the key makes a new job.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let later = app.post("/jobs", None, body).await;
    assert_eq!(later.status.as_u16(), 201);
    assert!(!ids.contains(later.ok()["id"].as_str().unwrap()));
    assert_eq!(app.get("/jobs").await.ok()["total"], 2);
}

#[tokio::test]
async fn inputs_past_the_size_limit_are_named_instead_of_sent() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.max_spec_bytes = 4096;
    })
    .await;
    let a = app.register("w").await;
    app.planned_job(
        std::slice::from_ref(&a),
        &a,
        vec![
            json!({"spec": 1, "name": "big1"}),
            json!({"spec": 2, "name": "big2"}),
            json!({"spec": 3, "name": "join", "depends_on": ["big1", "big2"]}),
        ],
    )
    .await;
    for _ in 0..2 {
        let c = app.claim(&a).await.unwrap();
        let id = id_of(&c["task"]);
        app.task_call(&a, &id, "complete", json!({"result": "x".repeat(3000)}))
            .await
            .ok();
    }
    let c = app.claim(&a).await.unwrap();
    assert_eq!(c["task"]["name"], "join");
    assert_eq!(
        c["inputs"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["big1"]
    );
    assert_eq!(c["inputs_omitted"], json!(["big2"]));
}
