//! Operator cancel: the job fails, its open tasks close, nothing more is offered.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn cancelling_an_executing_job_closes_its_tasks() {
    let app = spawn_app_with(|c| c.approvals_required = 1).await;
    let agents = app.register_many("w", 2).await;
    let job = app
        .planned_job(&agents, &agents[0], vec![json!(1), json!(2), json!(3)])
        .await;
    let c = app.claim(&agents[1]).await.unwrap();
    let held = id_of(&c["task"]);
    app.task_call(&agents[1], &held, "complete", json!({ "result": "done" }))
        .await
        .ok();
    let c = app.claim(&agents[1]).await.unwrap();
    let running = id_of(&c["task"]);
    app.task_call(&agents[1], &running, "start", json!({}))
        .await
        .ok();

    let j = app
        .post(
            &format!("/jobs/{job}/cancel"),
            None,
            json!({ "reason": "changed my mind" }),
        )
        .await
        .ok();
    assert_eq!(j["status"], "failed");
    assert_eq!(
        (
            j["tasks_completed"].as_u64(),
            j["tasks_failed"].as_u64(),
            j["tasks_running"].as_u64()
        ),
        (Some(2), Some(2), Some(0))
    );
    assert!(
        app.claim(&agents[0]).await.is_none(),
        "no task of a cancelled job is offered"
    );
    // The agent that held a task learns it from the API.
    app.task_call(&agents[1], &running, "complete", json!({ "result": 1 }))
        .await
        .err(409, "INVALID_STATE");
    let tasks = app
        .get(&format!("/jobs/{job}/tasks?status=failed"))
        .await
        .ok();
    assert_eq!(tasks["total"], 2);
    // Terminal jobs never change again.
    app.post(&format!("/jobs/{job}/cancel"), None, json!({}))
        .await
        .err(409, "INVALID_STATE");
    let kinds = app.event_kinds(job).await;
    assert_eq!(kinds.last().map(String::as_str), Some("job.failed"));
    assert!(
        kinds.iter().any(|k| k == "task.failed"),
        "the running task's agent is told"
    );
    // A cancel with no body at all also works (on another job).
    let other = app.submit("other", json!({})).await;
    let r = app
        .raw(
            reqwest::Method::POST,
            &format!("/jobs/{other}/cancel"),
            None,
            vec![],
        )
        .await;
    assert_eq!(r.ok()["status"], "failed");
}
