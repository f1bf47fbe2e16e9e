//! Scale-out: several replicas on one PostgreSQL. Runs in the PostgreSQL pass of the suite
//! (`TEST_BACKEND=postgres`, which `scripts/test.sh` and CI always run).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::push_helpers::SseClient;

/// Two replicas (A, B) on one fresh database, which lives as long as the handle; `None` (said
/// on stderr) outside the PostgreSQL pass.
async fn two_replicas(
    tweak: impl Fn(&mut agora_server::Config),
) -> Option<(TestApp, TestApp, PgDatabase)> {
    if test_backend() != "postgres" {
        eprintln!("replicas: runs in the PostgreSQL pass (TEST_BACKEND=postgres)");
        return None;
    }
    let (mut apps, db) = spawn_replicas(2, tweak).await;
    let b = apps.pop()?;
    let a = apps.pop()?;
    Some((a, b, db))
}

/// Claims and completes over REST until everything is done, moving to the next replica when
/// the current one stops answering.
async fn rest_worker(
    bases: Vec<String>,
    http: reqwest::Client,
    agent: TestAgent,
    done: Arc<AtomicUsize>,
    total: usize,
) -> usize {
    let mut replica = 0;
    let mut completed = 0;
    let mut held: Option<String> = None;
    while done.load(Ordering::SeqCst) < total {
        let base = &bases[replica];
        let call = async {
            if held.is_none() {
                let r: Value = http
                    .post(format!("{base}/tasks/claim"))
                    .bearer_auth(&agent.token)
                    .json(&json!({ "agent_id": agent.id }))
                    .send()
                    .await?
                    .json()
                    .await?;
                held = r["data"]["task"]["id"].as_str().map(str::to_string);
            }
            if let Some(task) = &held {
                let r: Value = http
                    .post(format!("{base}/tasks/{task}/complete"))
                    .bearer_auth(&agent.token)
                    .json(&json!({ "result": { "by": agent.name } }))
                    .send()
                    .await?
                    .json()
                    .await?;
                assert_eq!(r["success"], true, "complete failed: {r}");
                held = None;
                return Ok::<bool, reqwest::Error>(true);
            }
            Ok(false)
        };
        match call.await {
            Ok(true) => {
                completed += 1;
                done.fetch_add(1, Ordering::SeqCst);
            }
            Ok(false) => tokio::time::sleep(Duration::from_millis(20)).await,
            // The replica is gone: carry on against the next one, task in hand.
            Err(_) => replica = (replica + 1) % bases.len(),
        }
    }
    completed
}

/// Reads an SSE feed, reconnecting with Last-Event-ID every `every` events (to whichever
/// replica answers), until `stop` and no message came for a while.
async fn sse_reader(
    apps: Vec<(String, reqwest::Client)>,
    path: String,
    every: usize,
    stop: Arc<AtomicBool>,
) -> Vec<Value> {
    let mut seen: Vec<Value> = Vec::new();
    let mut replica = 0;
    loop {
        let last = seen.last().and_then(|e| e["id"].as_i64());
        let (base, http) = &apps[replica % apps.len()];
        let mut req = http.get(format!("{base}{path}"));
        req = req.header("Last-Event-ID", last.unwrap_or(0).to_string());
        let Ok(res) = req.send().await else {
            replica += 1;
            continue;
        };
        let mut client = SseClient::from_response(res);
        let mut n = 0;
        loop {
            match client.next_within(Duration::from_millis(500)).await {
                Some(m) if m.event.is_none() => {
                    seen.push(serde_json::from_str(&m.data).expect("event JSON"));
                    n += 1;
                    if n >= every {
                        break;
                    }
                }
                Some(_) => break,
                None => {
                    if stop.load(Ordering::SeqCst) {
                        return seen;
                    }
                    break;
                }
            }
        }
        replica += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_drain_two_thousand_tasks_and_survive_losing_one() {
    const PER_JOB: usize = 1000;
    let Some((a, b, _db)) = two_replicas(|c| {
        c.approvals_required = 1;
        // Both replicas sweep often, concurrently with the agents: the sweeps must do no harm.
        c.scheduler_interval_secs = 0.1;
    })
    .await
    else {
        return;
    };

    // One job submitted through each replica.
    let planner_a = a.register("planner-a").await;
    let planner_b = b.register("planner-b").await;
    let specs: Vec<Value> = (0..PER_JOB).map(|i| json!(i)).collect();
    let job_a = a
        .planned_job(std::slice::from_ref(&planner_a), &planner_a, specs.clone())
        .await;
    // Higher priority, so B's planner claims its plan before A's pending work.
    let job_b: uuid::Uuid = b
        .post(
            "/jobs",
            None,
            json!({ "title": "through b", "job_spec": {}, "priority": 1 }),
        )
        .await
        .ok()["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("job id");

    // Readers on A: the job submitted on B, and the global feed, reconnecting often.
    let stop = Arc::new(AtomicBool::new(false));
    let replicas = vec![
        (a.base.clone(), a.http.clone()),
        (b.base.clone(), b.http.clone()),
    ];
    let job_reader = tokio::spawn(sse_reader(
        replicas.clone(),
        format!("/jobs/{job_b}/stream"),
        150,
        stop.clone(),
    ));
    let all_reader = tokio::spawn(sse_reader(replicas, "/events".into(), 400, stop.clone()));

    b.approve(job_b, &planner_b).await.ok();
    let plan = b.claim(&planner_b).await.expect("plan of the job on b");
    b.task_call(
        &planner_b,
        &id_of(&plan["task"]),
        "complete",
        json!({ "result": { "task_specs": specs } }),
    )
    .await
    .ok();

    // 100 agents, half registered through each replica.
    let total = 2 * PER_JOB;
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for i in 0..100 {
        let (home, other) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let agent = home.register(&format!("r{i}")).await;
        let bases = vec![home.base.clone(), other.base.clone()];
        workers.push(tokio::spawn(rest_worker(
            bases,
            home.http.clone(),
            agent,
            done.clone(),
            total,
        )));
    }
    // Lose replica A a quarter of the way in.
    while done.load(Ordering::SeqCst) < total / 4 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "replicas: stopping A after {} completions",
        done.load(Ordering::SeqCst)
    );
    a.stop().await;
    eprintln!("replicas: A stopped");
    let mut completed = 0;
    for w in workers {
        completed += w.await.expect("worker");
    }
    assert_eq!(completed, total, "every task completed, none twice");
    stop.store(true, Ordering::SeqCst);

    // The database agrees: every work task completed once.
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT job_id, status, attempts FROM tasks WHERE idx > 0")
            .fetch_all(b.store.reader_for_tests())
            .await
            .unwrap();
    assert_eq!(rows.len(), total);
    assert!(
        rows.iter().all(|(_, s, a)| s == "completed" && *a == 0),
        "{rows:?}"
    );
    let completions: Vec<(String,)> =
        sqlx::query_as("SELECT task_id FROM events WHERE kind = 'task.completed'")
            .fetch_all(b.store.reader_for_tests())
            .await
            .unwrap();
    let mut per_task: HashMap<String, usize> = HashMap::new();
    for (t,) in completions {
        *per_task.entry(t).or_default() += 1;
    }
    assert!(per_task.values().all(|n| *n == 1), "a task completed twice");
    for job in [job_a, job_b] {
        assert_eq!(b.job(job).await["status"], "completed");
    }

    // The readers, across reconnects and the loss of A, saw exactly the table, in id order.
    let job_events = job_reader.await.unwrap();
    let table: Vec<i64> = b
        .all_events(job_b)
        .await
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    let streamed: Vec<i64> = job_events
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(streamed.len(), table.len(), "job feed: count");
    assert_eq!(
        streamed, table,
        "job feed: the events of the job submitted on B, in order, none missing"
    );
    let all = all_reader.await.unwrap();
    let ids: Vec<i64> = all.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    let (count, max): (i64, Option<i64>) = sqlx::query_as("SELECT COUNT(*), MAX(id) FROM events")
        .fetch_one(b.store.reader_for_tests())
        .await
        .unwrap();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "global feed in strictly increasing id order"
    );
    assert_eq!(
        ids.len() as i64,
        count,
        "global feed: every event, none twice"
    );
    assert_eq!(ids.last().copied(), max);
}

/// A WebSocket agent with `auto_start` (its next task in each report's commit) until every task
/// is done; the ids of the tasks it completed.
async fn ws_auto_start_worker(
    app: Arc<TestApp>,
    agent: TestAgent,
    done: Arc<AtomicUsize>,
    total: usize,
) -> Vec<uuid::Uuid> {
    use agora_shared::ws::ServerMsg;
    let mut ws = app.connect(&agent).await;
    ws.send(json!({ "type": "ready", "slots": 1, "auto_start": true }))
        .await;
    let mut mine = Vec::new();
    while done.load(Ordering::SeqCst) < total {
        let Some(msg) = ws.recv_within(Duration::from_millis(200)).await else {
            continue;
        };
        match msg {
            ServerMsg::TaskOffer { task, started, .. } => {
                assert!(started, "auto_start offers are started");
                ws.send(json!({ "type": "complete", "task_id": task.id, "result": { "by": agent.name } }))
                    .await;
            }
            ServerMsg::Ack {
                kind,
                ok,
                error,
                task,
                ..
            } => {
                assert!(ok, "{kind} refused: {error:?}");
                if let (true, Some(t)) = (kind == "complete", task) {
                    mine.push(t.id);
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }
            ServerMsg::TaskRevoked { task_id, reason } => panic!("{task_id} revoked: {reason}"),
            _ => {}
        }
    }
    mine
}

/// Four replicas on one database, 200 agents spread over them (WebSocket agents with
/// `auto_start` and REST agents with `?next=true`, half each), 5,000 tasks of five jobs
/// submitted through different replicas: every task is completed exactly once, and every
/// replica's `/events` feed, read from the start while the work runs, is the events table,
/// in id order, with nothing missing or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_replicas_two_hundred_agents_five_thousand_tasks_every_feed_is_the_table() {
    if test_backend() != "postgres" {
        eprintln!("replicas: runs in the PostgreSQL pass (TEST_BACKEND=postgres)");
        return;
    }
    const JOBS: usize = 5;
    const PER_JOB: usize = 1000;
    const AGENTS: usize = 200;
    let total = JOBS * PER_JOB;
    let (apps, _db) = spawn_replicas(4, |c| {
        c.approvals_required = 1;
        c.scheduler_interval_secs = 0.2;
    })
    .await;
    let apps: Vec<Arc<TestApp>> = apps.into_iter().map(Arc::new).collect();

    // Each replica's own feed, from the first event on, never reconnecting elsewhere.
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = apps
        .iter()
        .map(|app| {
            tokio::spawn(sse_reader(
                vec![(app.base.clone(), app.http.clone())],
                "/events".into(),
                usize::MAX,
                stop.clone(),
            ))
        })
        .collect();

    // The jobs first, each planned through a replica of its own.
    let mut jobs = Vec::new();
    for j in 0..JOBS {
        let app = &apps[j % apps.len()];
        let planner = app.register(&format!("planner{j}")).await;
        let specs: Vec<Value> = (0..PER_JOB).map(|i| json!({ "job": j, "i": i })).collect();
        // Each job above the last, so that its plan comes before the earlier jobs' work.
        let job: uuid::Uuid = app
            .post(
                "/jobs",
                None,
                json!({ "title": format!("job {j}"), "job_spec": {}, "priority": j }),
            )
            .await
            .ok()["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("job id");
        app.approve(job, &planner).await.ok();
        let plan = app.claim(&planner).await.expect("the job's plan");
        assert_eq!(plan["task"]["type"], "plan");
        app.task_call(
            &planner,
            &id_of(&plan["task"]),
            "complete",
            json!({ "result": { "task_specs": specs } }),
        )
        .await
        .ok();
        jobs.push(job);
    }

    // Then the agents (after the plans: they would take plan tasks for work).
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for i in 0..AGENTS {
        let app = apps[i % apps.len()].clone();
        let agent = app.register(&format!("w{i}")).await;
        let (done, app) = (done.clone(), app.clone());
        workers.push(match i % 2 {
            0 => tokio::spawn(ws_auto_start_worker(app, agent, done, total)),
            _ => tokio::spawn(async move { app.rest_next_worker(&agent, &done, total).await }),
        });
    }
    let mut completed = Vec::new();
    for w in workers {
        completed.extend(w.await.expect("worker"));
    }
    let unique: std::collections::HashSet<&uuid::Uuid> = completed.iter().collect();
    assert_eq!(
        (completed.len(), unique.len()),
        (total, total),
        "every task completed, none twice"
    );
    stop.store(true, Ordering::SeqCst);

    let reader = apps[0].store.reader_for_tests();
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, attempts FROM tasks WHERE idx > 0")
            .fetch_all(reader)
            .await
            .unwrap();
    assert_eq!(rows.len(), total);
    assert!(
        rows.iter().all(|(s, a)| s == "completed" && *a == 0),
        "every work task completed at its first attempt"
    );
    for job in &jobs {
        assert_eq!(apps[0].job(*job).await["status"], "completed");
    }

    // Every replica's feed is the table: the same ids, kinds and tasks, in the same order.
    let table: Vec<(i64, String, Option<String>)> =
        sqlx::query_as("SELECT id, kind, task_id FROM events ORDER BY id")
            .fetch_all(reader)
            .await
            .unwrap();
    assert!(
        table.len() > 2 * total,
        "claims and completions are in the table"
    );
    for (r, feed) in readers.into_iter().enumerate() {
        let feed = feed.await.expect("reader");
        let streamed: Vec<(i64, String, Option<String>)> = feed
            .iter()
            .map(|e| {
                (
                    e["id"].as_i64().expect("id"),
                    e["kind"].as_str().expect("kind").to_string(),
                    e["task_id"].as_str().map(str::to_string),
                )
            })
            .collect();
        assert_eq!(
            streamed.len(),
            table.len(),
            "replica {r}'s feed: every event of the table, none twice"
        );
        let first_difference = streamed.iter().zip(&table).position(|(s, t)| s != t);
        assert_eq!(
            first_difference, None,
            "replica {r}'s feed is the events table in id order"
        );
    }
}

/// Claims and completions of two replicas commit side by side (the claims lock shared), but not
/// while a pending task has an exclusive key: agents on both replicas that complete with
/// `?next=true` (claiming in the same batch) drain a job of keyed and unkeyed tasks, and the
/// events table, replayed in commit order, never shows a key held twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_on_two_replicas_never_hold_one_key_twice() {
    const TASKS: usize = 240;
    let Some((a, b, _db)) = two_replicas(|c| c.approvals_required = 1).await else {
        return;
    };
    let (a, b) = (Arc::new(a), Arc::new(b));
    let planner = a.register("planner").await;
    // Every other task has one of six keys; the rest none.
    let specs: Vec<Value> = (0..TASKS)
        .map(|i| match i % 2 {
            0 => json!({"spec": {"i": i}, "key": format!("src/file{}.rs", i % 12)}),
            _ => json!({"spec": {"i": i}}),
        })
        .collect();
    let job = a
        .planned_job(std::slice::from_ref(&planner), &planner, specs)
        .await;
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for (n, app) in [&a, &b, &a, &b, &a, &b, &a, &b, &a, &b, &a, &b]
        .into_iter()
        .enumerate()
    {
        let app = Arc::clone(app);
        let agent = app.register(&format!("w{n}")).await;
        let done = done.clone();
        workers.push(tokio::spawn(async move {
            app.rest_next_worker(&agent, &done, TASKS).await
        }));
    }
    let mut completed = 0;
    for w in workers {
        completed += w.await.expect("worker").len();
    }
    assert_eq!(completed, TASKS, "every task completed, none twice");
    assert_eq!(a.job(job).await["status"], "completed");
    a.assert_keys_held_once(job, TASKS / 2).await;
}

/// Two replicas complete a job's last two tasks at the same moment: each batch's copy of the
/// job's counters misses the other's completion, and the last to commit settles the job (the
/// sweep that would also repair it is off here).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_whose_last_tasks_finish_on_two_replicas_at_once_completes() {
    let Some((a, b, _db)) = two_replicas(|c| {
        c.approvals_required = 1;
        c.approval_cooldown_secs = 0;
    })
    .await
    else {
        return;
    };
    let planner = a.register("planner").await;
    let on_a = a.register("on-a").await;
    let on_b = b.register("on-b").await;
    for round in 0..24 {
        let job = a
            .planned_job(
                std::slice::from_ref(&planner),
                &planner,
                vec![json!(1), json!(2)],
            )
            .await;
        let first = a.claim(&on_a).await.expect("a task for a");
        let second = b.claim(&on_b).await.expect("a task for b");
        let (first, second) = (id_of(&first["task"]), id_of(&second["task"]));
        let (x, y) = tokio::join!(
            a.task_call(&on_a, &first, "complete", json!({"result": 1})),
            b.task_call(&on_b, &second, "complete", json!({"result": 2})),
        );
        x.ok();
        y.ok();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let status = a.job(job).await["status"].clone();
            if status == "completed" {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: the job is still {status} with both tasks completed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
