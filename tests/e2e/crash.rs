//! Crash recovery with the real binary: 40 agents (half WebSocket, half REST) work a job of
//! 1,000 tasks, the server is killed with SIGKILL mid-run and restarted on the same data, and
//! the agents carry on. Every task ends completed exactly once (or failed for good by its retry
//! rule), none is left claimed or running, and a resuming SSE reader sees exactly the events
//! the database holds, in strictly increasing id order. The second test also kills 30% of the
//! agents mid-task.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_client::{Client, ClientError};
use agora_shared::ws::{ClientMsg, ServerMsg};
use agora_shared::{Event, EventKind, JobStatus};
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

use crate::helpers::{free_port, job_body, test_backend, PgDatabase, RealServer};

const TASKS: usize = 1000;
const AGENTS: usize = 40;

/// Retries a call while the server is down; an API error is final.
async fn persist<T, F, Fut>(mut call: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    loop {
        match call().await {
            Err(ClientError::Http(_)) | Err(ClientError::Unexpected { .. }) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => return other,
        }
    }
}

/// Agents that die holding a task once `doom` is set record the task here.
type Orphans = Arc<std::sync::Mutex<Vec<Uuid>>>;

/// What an agent is told: `stop` ends it; a doomed agent dies holding its next task once
/// `doom` is set.
#[derive(Clone)]
struct Fate {
    stop: watch::Receiver<bool>,
    doom: watch::Receiver<bool>,
    doomed: bool,
    orphans: Orphans,
}

impl Fate {
    /// Whether to die now, holding `task`.
    fn dies_holding(&self, task: Uuid) -> bool {
        let dies = self.doomed && *self.doom.borrow();
        if dies {
            if let Ok(mut o) = self.orphans.lock() {
                o.push(task);
            }
        }
        dies
    }
}

/// A REST agent: long-poll claim, complete (retrying while the server is down).
async fn rest_agent(client: Client, fate: Fate) {
    let mut stop = fate.stop.clone();
    loop {
        if *stop.borrow() {
            return;
        }
        let claimed = tokio::select! {
            c = persist(|| client.claim(Some(1))) => c,
            _ = stop.changed() => return,
        };
        let Ok(Some(c)) = claimed else {
            continue;
        };
        if fate.dies_holding(c.task.id) {
            return; // no complete, no unregister: the scheduler must recover the task
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        // A completion the crash swallowed is sent again; one that did land answers 409.
        let _ = persist(|| client.complete(c.task.id, json!({ "by": "rest" }))).await;
    }
}

/// A WebSocket agent: accepts offers, completes at once, sends a completion again until it is
/// acknowledged (the crash may have swallowed it).
async fn ws_agent(client: Client, fate: Fate) {
    let mut stop = fate.stop.clone();
    let Ok(mut session) = persist(|| client.session()).await else {
        return;
    };
    if session.ready(2).await.is_err() {
        return;
    }
    let mut unacked: HashMap<Uuid, Instant> = HashMap::new();
    let mut resend = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            msg = session.next() => match msg {
                Ok(ServerMsg::TaskOffer { offer_id, task, .. }) => {
                    let _ = session.accept(offer_id).await;
                    if fate.dies_holding(task.id) {
                        return; // the socket goes with the agent: the task is handed on
                    }
                    let _ = session.send_with_ref(
                        ClientMsg::Complete { task_id: task.id, result: json!({ "by": "ws" }), lease_id: None },
                        Some(task.id.to_string()),
                    ).await;
                    unacked.insert(task.id, Instant::now());
                }
                Ok(ServerMsg::Ack { reference: Some(r), kind, .. }) if kind == "complete" => {
                    if let Ok(id) = r.parse::<Uuid>() {
                        unacked.remove(&id);
                    }
                }
                Ok(ServerMsg::TaskRevoked { task_id, .. }) => {
                    unacked.remove(&task_id);
                }
                _ => {}
            },
            _ = resend.tick() => {
                let stale: Vec<Uuid> = unacked
                    .iter()
                    .filter(|(_, at)| at.elapsed() > Duration::from_secs(1))
                    .map(|(id, _)| *id)
                    .collect();
                for id in stale {
                    unacked.insert(id, Instant::now());
                    let _ = session.send_with_ref(
                        ClientMsg::Complete { task_id: id, result: json!({ "by": "ws" }), lease_id: None },
                        Some(id.to_string()),
                    ).await;
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// Follows the job's SSE stream (resuming across the crash) until the job is settled.
async fn follow(client: Client, job: Uuid) -> Vec<Event> {
    let mut stream = client.event_stream(Some(job), 0);
    let mut seen = Vec::new();
    loop {
        let Ok(e) = stream.next().await else {
            continue;
        };
        let settled = matches!(e.kind(), EventKind::JobCompleted | EventKind::JobFailed);
        seen.push(e);
        if settled {
            return seen;
        }
    }
}

async fn crash_run(kill_agents: bool) {
    let data = tempfile::tempdir().expect("data dir");
    let pg = if test_backend() == "postgres" {
        Some(PgDatabase::create().await)
    } else {
        None
    };
    let mut env: Vec<(&str, &str)> = vec![
        ("APPROVALS_REQUIRED", "1"),
        ("TASK_TIMEOUT", "4"),
        ("AGENT_STALE_SECS", "3"),
        ("SCHEDULER_INTERVAL_SECS", "0.3"),
        ("TASK_MAX_RETRIES", "5"),
    ];
    if let Some(db) = &pg {
        env.push(("DATABASE_URL", db.url.as_str()));
    }
    let mut server = RealServer::start(free_port(), data.path(), &env).await;
    let base = server.url("");

    let mut clients = Vec::new();
    for i in 0..AGENTS {
        let mut c = Client::new(&base);
        c.register(&format!("agent-{i}"), None)
            .await
            .expect("register");
        clients.push(c);
    }
    let job = Client::new(&base)
        .submit(&job_body("crash", json!({})))
        .await
        .expect("submit")
        .id;
    let planner = &clients[0];
    planner.approve(job, None).await.expect("approve");
    let plan = planner.claim(None).await.expect("claim").expect("plan");
    let specs: Vec<_> = (0..TASKS).map(|i| json!({ "i": i })).collect();
    planner
        .complete(plan.task.id, json!({ "task_specs": specs }))
        .await
        .expect("plan");
    let feed = tokio::spawn(follow(Client::new(&base), job));

    let (stop, stopped) = watch::channel(false);
    let (doom, doomed) = watch::channel(false);
    let orphans: Orphans = Arc::default();
    let mut handles = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        let fate = Fate {
            stop: stopped.clone(),
            doom: doomed.clone(),
            // 30% of the agents (12 of 40, both kinds) when this run kills agents.
            doomed: kill_agents && i % 10 < 3,
            orphans: orphans.clone(),
        };
        handles.push(if i % 2 == 0 {
            tokio::spawn(ws_agent(c, fate))
        } else {
            tokio::spawn(rest_agent(c, fate))
        });
    }

    // Kill -9 once a good part of the job is done, and start again on the same data.
    let observer = Client::new(&base);
    let wait_done = |n: u32| {
        let observer = observer.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(60), async {
                loop {
                    if let Ok(j) = observer.job(job).await {
                        if j.tasks_completed >= n || j.status.is_terminal() {
                            return j;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .expect("the job made progress")
        }
    };
    let before = wait_done(300).await;
    server.kill().await;
    // The doomed agents die holding the next task they get (no complete, no unregister).
    let _ = doom.send(true);
    let restarted_at = Instant::now();
    server = RealServer::start(server.port, data.path(), &env).await;
    println!(
        "killed with {} of {} tasks done; back after {} ms",
        before.tasks_completed,
        TASKS + 1,
        restarted_at.elapsed().as_millis()
    );

    let finished = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            if let Ok(j) = observer.job(job).await {
                if j.status.is_terminal() {
                    return j;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the job settled after the crash");
    let _ = stop.send(true);
    for h in handles {
        let _ = h.await;
    }

    // Every task is terminal: completed, or failed for good by the retry rule.
    let mut tasks = Vec::new();
    let mut offset = 0;
    loop {
        let query = agora_shared::TaskListQuery {
            limit: Some(1000),
            offset: Some(offset),
            ..Default::default()
        };
        let page = observer.tasks(job, &query).await.expect("tasks");
        offset += page.items.len() as u64;
        let n = page.items.len();
        tasks.extend(page.items);
        if n < 1000 {
            break;
        }
    }
    assert_eq!(tasks.len(), TASKS + 1);
    let mut failed = 0;
    for t in &tasks {
        match t.status.as_str() {
            "completed" => {}
            "failed" => {
                failed += 1;
                assert_eq!(
                    t.attempts,
                    t.max_retries + 1,
                    "failed for good only by the rule: {t:?}"
                );
            }
            other => panic!("task {} is {other} after the job settled", t.id),
        }
    }
    let expected = if failed == 0 {
        JobStatus::Completed
    } else {
        JobStatus::Failed
    };
    assert_eq!(finished.status, expected);
    // The tasks the dead agents held were recovered (a lost attempt each) and finished.
    let orphans = orphans.lock().map(|o| o.clone()).unwrap_or_default();
    if kill_agents {
        assert_eq!(
            orphans.len(),
            AGENTS * 3 / 10,
            "every doomed agent died holding a task"
        );
    }
    for id in &orphans {
        let t = tasks.iter().find(|t| t.id == *id).expect("orphaned task");
        assert!(t.attempts >= 1, "the lost attempt is counted: {t:?}");
        assert_eq!(t.status.as_str(), "completed", "{t:?}");
    }

    // Exactly once: one task.completed per completed task, in the table and in the feed.
    let table = observer.events(job, 0).await.expect("events");
    let mut table_all = table.clone();
    let mut after = table.last().map_or(0, |e| e.id);
    loop {
        let more = observer.events(job, after).await.expect("events");
        let Some(last) = more.last() else { break };
        after = last.id;
        table_all.extend(more);
    }
    let mut completions: HashMap<Uuid, usize> = HashMap::new();
    for e in table_all
        .iter()
        .filter(|e| e.kind() == EventKind::TaskCompleted)
    {
        *completions.entry(e.task_id.expect("task id")).or_default() += 1;
    }
    let completed: HashSet<Uuid> = tasks
        .iter()
        .filter(|t| t.status.as_str() == "completed")
        .map(|t| t.id)
        .collect();
    assert_eq!(completions.len(), completed.len());
    assert!(
        completions.values().all(|&n| n == 1),
        "a task completed twice"
    );

    // The feed: strictly increasing ids, and exactly the table's events.
    let seen = tokio::time::timeout(Duration::from_secs(30), feed)
        .await
        .expect("the feed saw the job settle")
        .expect("feed task");
    assert!(
        seen.windows(2).all(|w| w[0].id < w[1].id),
        "ids strictly increase"
    );
    let seen_ids: Vec<i64> = seen.iter().map(|e| e.id).collect();
    let table_ids: Vec<i64> = table_all
        .iter()
        .map(|e| e.id)
        .take_while(|id| *id <= *seen_ids.last().expect("events"))
        .collect();
    assert_eq!(
        seen_ids, table_ids,
        "the resumed SSE feed is exactly the events table"
    );
    println!(
        "{} tasks completed, {failed} failed for good, {} events, {} tasks recovered from dead agents",
        completed.len(),
        table_all.len(),
        orphans.len()
    );
    server.kill().await;
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_mid_run_restarts_and_loses_nothing() {
    crash_run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_with_thirty_percent_of_agents_killed_mid_task_loses_nothing() {
    crash_run(true).await;
}
