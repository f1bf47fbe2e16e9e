//! The plan task: validation of `task_specs`, empty plans, claim order.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn malformed_plans_get_422_and_the_task_stays_running() {
    let app = spawn_app_with(|c| c.approvals_required = 1).await;
    let a = app.register("planner").await;
    let job = app.submit("j", json!({})).await;
    app.approve(job, &a).await.ok();
    let plan = app.claim(&a).await.unwrap();
    let id = id_of(&plan["task"]);
    app.task_call(&a, &id, "start", json!({})).await.ok();
    for bad in [
        json!({ "result": { "tasks": [] } }),
        json!({ "result": { "task_specs": "x" } }),
        json!({ "result": { "task_specs": [1, null] } }),
        json!({ "result": [1, 2] }),
        json!({}),
    ] {
        let r = app.task_call(&a, &id, "complete", bad.clone()).await;
        r.err(422, "INVALID_PLAN");
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("task_specs"),
            "{bad}"
        );
    }
    let task = app.get(&format!("/tasks/{id}")).await.ok();
    assert_eq!(task["status"], "running");
    let j = app.job(job).await;
    assert_eq!(
        (j["status"].as_str(), j["tasks_total"].as_u64()),
        (Some("planning"), Some(1))
    );
    // A good plan still lands afterwards.
    app.task_call(
        &a,
        &id,
        "complete",
        json!({ "result": { "task_specs": [{"n": 1}] } }),
    )
    .await
    .ok();
    assert_eq!(app.job(job).await["status"], "ready");
}

#[tokio::test]
async fn an_empty_plan_completes_the_job() {
    let app = spawn_app_with(|c| c.approvals_required = 1).await;
    let a = app.register("planner").await;
    let job = app.planned_job(std::slice::from_ref(&a), &a, vec![]).await;
    let j = app.job(job).await;
    assert_eq!(j["status"], "completed");
    assert!(app.claim(&a).await.is_none());
}

#[tokio::test]
async fn claims_follow_priority_then_age_then_index() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.approval_cooldown_secs = 0;
    })
    .await;
    let a = app.register("a").await;
    for (title, priority) in [("old", 0), ("new", 0), ("urgent", 10)] {
        let j = app
            .post(
                "/jobs",
                None,
                json!({ "title": title, "job_spec": {}, "priority": priority }),
            )
            .await
            .ok();
        app.approve(j["id"].as_str().unwrap().parse().unwrap(), &a)
            .await
            .ok();
        // Distinct creation times, so age decides between equal priorities.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut order = Vec::new();
    while let Some(c) = app.claim(&a).await {
        let title = c["job"]["title"].as_str().unwrap().to_string();
        order.push(format!("{title}/{}", c["task"]["index"]));
        let result = if c["task"]["type"] == "plan" {
            let n = if title == "old" { 2 } else { 1 };
            json!({ "task_specs": vec![json!(title); n] })
        } else {
            json!("done")
        };
        app.task_call(
            &a,
            &id_of(&c["task"]),
            "complete",
            json!({ "result": result }),
        )
        .await
        .ok();
    }
    assert_eq!(
        order,
        ["urgent/0", "urgent/1", "old/0", "old/1", "old/2", "new/0", "new/1"]
    );
}
