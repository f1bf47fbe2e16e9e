//! Specs, plans and results come back as they were sent: JSON object keys keep their order
//! through REST, the WebSocket offer, the database (both stores) and the git history. (No event
//! carries a spec or a result, so the SSE feeds have none to reorder.)

use serde_json::Value;

use crate::helpers::{eventually, id_of, spawn_app_with};

/// Keys in an order no sorting gives, nested.
const SPEC: &str = r#"{"zeta": 1, "alpha": {"yak": true, "bee": [{"z": 1, "a": 2}]}, "mid": "m"}"#;
const RESULT: &str = r#"{"words": 3, "the": 9, "and": 5}"#;

fn keys(v: &Value) -> Vec<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

#[track_caller]
fn as_sent(spec: &Value) {
    assert_eq!(keys(spec), ["zeta", "alpha", "mid"], "{spec}");
    assert_eq!(keys(&spec["alpha"]), ["yak", "bee"], "{spec}");
    assert_eq!(keys(&spec["alpha"]["bee"][0]), ["z", "a"], "{spec}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn specs_plans_and_results_keep_their_key_order_everywhere() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.git_enabled = true;
    })
    .await;
    let approver = app.register("approver").await;
    let planner = app.register("planner").await;
    let worker = app.register("worker").await;
    let body = format!(r#"{{"title": "order", "job_spec": {SPEC}}}"#);
    let job = app
        .raw(reqwest::Method::POST, "/jobs", None, body.into_bytes())
        .await
        .ok();
    as_sent(&job["job_spec"]);
    let job_id: uuid::Uuid = id_of(&job).parse().expect("uuid");
    as_sent(&app.get(&format!("/jobs/{job_id}")).await.ok()["job_spec"]);
    app.approve(job_id, &approver).await.ok();

    // The plan task's spec (the job's) in the REST claim; the plan sent as text.
    let plan = app.claim(&planner).await.expect("the plan task");
    as_sent(&plan["task"]["task_spec"]);
    let result = format!(
        r#"{{"result": {{"task_specs": [{SPEC}]}}, "lease_id": "{}"}}"#,
        plan["lease_id"].as_str().expect("lease")
    );
    let path = format!("/tasks/{}/complete", id_of(&plan["task"]));
    app.raw(
        reqwest::Method::POST,
        &path,
        Some(&planner.token),
        result.into_bytes(),
    )
    .await
    .ok();

    // The work task offered over the WebSocket, completed with a result sent as text.
    let mut ws = app.connect(&worker).await;
    ws.ready(1).await;
    let (offer, task, _) = ws.offer().await;
    let offered = app.get(&format!("/tasks/{task}")).await.ok();
    as_sent(&offered["task_spec"]);
    ws.send_raw(&format!(r#"{{"type": "accept", "offer_id": "{offer}"}}"#))
        .await;
    assert!(ws.ack("accept").await.0);
    ws.send_raw(&format!(
        r#"{{"type": "complete", "task_id": "{task}", "result": {RESULT}}}"#
    ))
    .await;
    assert!(ws.ack("complete").await.0);
    let done = app.get(&format!("/tasks/{task}")).await.ok();
    assert_eq!(keys(&done["result"]), ["words", "the", "and"]);
    let plan_task = app
        .get(&format!("/tasks/{}", id_of(&plan["task"])))
        .await
        .ok();
    as_sent(&plan_task["result"]["task_specs"][0]);

    // The git history: job.json, plan.json and the task's result.json.
    let file = |path: String| {
        let app = &app;
        async move {
            let r = app.get(&format!("/jobs/{job_id}/files/{path}")).await;
            let text = r.body["data"]["content"].as_str()?.to_string();
            serde_json::from_str::<Value>(&text).ok()
        }
    };
    let job_file = eventually(20, || file("job.json".into())).await;
    as_sent(&job_file["job_spec"]);
    let plan_file = eventually(20, || file("plan.json".into())).await;
    as_sent(&plan_file["task_specs"][0]);
    let dir = agora_shared::task_dir(1, task.parse().expect("uuid"));
    let result_file = eventually(20, || file(format!("{dir}/result.json"))).await;
    assert_eq!(keys(&result_file), ["words", "the", "and"]);
}
