//! Reports in flight: a WebSocket agent with several slots sends its reports without waiting
//! for each answer. The socket runs them at once, so they reach the writer together and share
//! commits; it acks them in the order they were sent; a second report about the same task
//! waits for the first; and a socket closed before its reports' answers still lets go of the
//! next tasks they took. Both stores.

use agora_shared::ws::ServerMsg;
use agora_shared::{Task, TaskStatus};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::*;
use crate::push_helpers::*;

/// (batches committed, of them holding one operation), from `/metrics`.
async fn batches(app: &TestApp) -> (f64, f64) {
    let text = app.metrics_text().await;
    let value = |prefix: &str| metric_sample(&text, prefix).unwrap_or(0.0);
    (
        value("agora_write_batch_operations_count"),
        value("agora_write_batch_operations_bucket{le=\"1\"}"),
    )
}

/// Reads started offers until there are `n`.
async fn started(ws: &mut WsAgent, n: usize) -> Vec<Task> {
    let mut tasks = Vec::new();
    while tasks.len() < n {
        if let ServerMsg::TaskOffer {
            task,
            started: true,
            ..
        } = ws.recv().await
        {
            tasks.push(*task);
        }
    }
    tasks
}

/// An agent of a job of `tasks` work tasks, connected with `slots` and `auto_start`, holding
/// its first started tasks: (app, job, socket, tasks).
async fn busy_agent(tasks: usize, slots: usize) -> (TestApp, Uuid, WsAgent, Vec<Task>) {
    let app = spawn_app_with(|c| c.approvals_required = 1).await;
    let agent = app.register("busy").await;
    let specs = (0..tasks).map(|i| json!({ "i": i })).collect();
    let job = app
        .planned_job(std::slice::from_ref(&agent), &agent, specs)
        .await;
    let mut ws = app.connect(&agent).await;
    ws.send(json!({ "type": "ready", "slots": slots, "auto_start": true }))
        .await;
    assert!(ws.ack("ready").await.0);
    let first = started(&mut ws, slots).await;
    (app, job, ws, first)
}

/// Eight reports sent back to back, then a second report of the last task: at least one
/// commit holds several of them (one at a time, every batch would hold one), the acks come
/// in the order sent, each report's next task follows its ack, and the second report of a
/// task waits for the first and is refused.
#[tokio::test]
async fn reports_sent_without_waiting_share_commits_and_are_acked_in_order() {
    let (app, job, mut ws, first) = busy_agent(16, 8).await;

    let (count_before, ones_before) = batches(&app).await;
    for (i, t) in first.iter().enumerate() {
        ws.send(json!({ "type": "complete", "task_id": t.id, "result": { "i": i }, "ref": format!("c{i}") }))
            .await;
    }
    let last = first.last().expect("eight tasks").id;
    ws.send(json!({ "type": "fail", "task_id": last, "error": "again", "ref": "again" }))
        .await;

    let mut acks = Vec::new();
    let mut next = Vec::new();
    let mut after_ack = false;
    while acks.len() < 9 || next.len() < 8 {
        match ws.recv().await {
            ServerMsg::Ack {
                reference,
                kind,
                ok,
                ..
            } => {
                acks.push((reference.unwrap_or_default(), kind, ok));
                after_ack = true;
            }
            ServerMsg::TaskOffer {
                task,
                started: true,
                ..
            } => {
                assert!(after_ack, "a next task came before the ack of its report");
                after_ack = false;
                next.push(task.id);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let order: Vec<&str> = acks.iter().map(|(r, _, _)| r.as_str()).collect();
    assert_eq!(
        order,
        ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "again"],
        "acks in the order the frames were sent"
    );
    assert!(
        acks[..8]
            .iter()
            .all(|(_, kind, ok)| kind == "complete" && *ok),
        "every report was taken: {acks:?}"
    );
    assert_eq!(
        (acks[8].1.as_str(), acks[8].2),
        ("fail", false),
        "the second report of a task ran after the first, which had finished it"
    );
    let (count_after, ones_after) = batches(&app).await;
    let (count, ones) = (count_after - count_before, ones_after - ones_before);
    assert!(
        count - ones >= 1.0,
        "no commit held more than one report ({count} batches, {ones} of one operation)"
    );

    // The eight next tasks are running, the first eight done.
    let tasks = app.work_tasks(job).await;
    let status = |id: Uuid| tasks.iter().find(|t| t.id == id).map(|t| t.status);
    assert!(first
        .iter()
        .all(|t| status(t.id) == Some(TaskStatus::Completed)));
    assert!(next
        .iter()
        .all(|&id| status(id) == Some(TaskStatus::Running)));
}

/// An agent sends four reports and closes its socket at once, before their answers. The
/// reports still count, and the next tasks they took (never shown to the agent) do not stay
/// running until their leases run out: the socket lets go of them as it closes.
#[tokio::test]
async fn a_socket_closed_with_reports_in_flight_lets_go_of_the_tasks_they_took() {
    let (app, job, mut ws, first) = busy_agent(8, 4).await;
    for t in &first {
        ws.send(json!({ "type": "complete", "task_id": t.id, "result": "ok" }))
            .await;
    }
    ws.socket.close(None).await.expect("the socket closes");

    // Within 5 s, the four reports count and no task is left running.
    let tasks = eventually(5, || async {
        let tasks = app.work_tasks(job).await;
        let running = tasks.iter().any(|t| t.status == TaskStatus::Running);
        let done = tasks
            .iter()
            .filter(|t| t.status == TaskStatus::Completed)
            .count();
        (done == 4 && !running).then_some(tasks)
    })
    .await;
    assert!(
        first.iter().all(|f| tasks
            .iter()
            .any(|t| t.id == f.id && t.status == TaskStatus::Completed)),
        "the four reported tasks are the completed ones"
    );
}

/// A flood of reports about tasks that do not exist, far past the 64 a socket keeps in
/// flight: every one gets its refusal, in the order sent, and the socket keeps working.
#[tokio::test]
async fn a_flood_of_reports_about_unknown_tasks_is_refused_in_order_and_the_socket_stays() {
    let (_app, _job, mut ws, first) = busy_agent(2, 1).await;
    const FLOOD: usize = 1000;
    for i in 0..FLOOD {
        let unknown = Uuid::new_v4();
        ws.send(
            json!({ "type": "complete", "task_id": unknown, "result": i, "ref": format!("f{i}") }),
        )
        .await;
    }
    let mut refused = 0;
    while refused < FLOOD {
        match ws.recv().await {
            ServerMsg::Ack { reference, ok, .. } => {
                assert!(!ok, "a report about an unknown task was taken");
                assert_eq!(
                    reference.as_deref(),
                    Some(format!("f{refused}").as_str()),
                    "refusals in the order sent"
                );
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The socket still answers, and the agent's own task is still its to report.
    ws.send(json!({ "type": "complete", "task_id": first[0].id, "result": "ok", "ref": "mine" }))
        .await;
    let (ok, error) = ws.ack("complete").await;
    assert!(ok, "{error:?}");
}

/// Accepts in flight while the job is cancelled: every accept the server took is followed by
/// the task's revocation (a revoke handled before the accept's answer landed would be lost,
/// and the agent would keep a cancelled task and its slot). Repeated, since the cancel races
/// the accepts.
#[tokio::test]
async fn accepts_in_flight_during_a_cancel_are_each_revoked_or_refused() {
    for round in 0..10 {
        let app = spawn_app_with(|c| c.approvals_required = 1).await;
        let agent = app.register("racer").await;
        let specs = (0..8).map(|i| json!({ "i": i })).collect();
        let job = app
            .planned_job(std::slice::from_ref(&agent), &agent, specs)
            .await;
        let mut ws = app.connect(&agent).await;
        ws.send(json!({ "type": "ready", "slots": 8 })).await;
        assert!(ws.ack("ready").await.0);
        let mut offers = Vec::new();
        while offers.len() < 8 {
            if let ServerMsg::TaskOffer { offer_id, .. } = ws.recv().await {
                offers.push(offer_id);
            }
        }
        let cancel = tokio::spawn(
            app.http
                .post(format!("{}/jobs/{job}/cancel", app.base))
                .json(&json!({}))
                .send(),
        );
        for offer_id in &offers {
            ws.send(json!({ "type": "accept", "offer_id": offer_id }))
                .await;
        }
        let mut accepted = std::collections::HashSet::new();
        let mut revoked = std::collections::HashSet::new();
        let mut acks = 0;
        while acks < 8 || !accepted.is_subset(&revoked) {
            let Some(m) = ws.recv_within(std::time::Duration::from_secs(5)).await else {
                panic!(
                    "round {round}: {} accepts taken, {} of them never revoked",
                    accepted.len(),
                    accepted.difference(&revoked).count()
                );
            };
            match m {
                ServerMsg::Ack { kind, ok, task, .. } if kind == "accept" => {
                    acks += 1;
                    if ok {
                        accepted.insert(task.expect("the started task").id);
                    }
                }
                ServerMsg::TaskRevoked { task_id, .. } => {
                    revoked.insert(task_id);
                }
                _ => {}
            }
        }
        let cancelled = cancel.await.expect("cancel").expect("cancel sent");
        assert_eq!(cancelled.status(), 200);
    }
}
