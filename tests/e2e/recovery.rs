//! Retries, deadlines and lost agents: no task is stuck and none loops forever.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn failures_retry_until_max_retries_then_fail_the_job() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.task_max_retries = 2;
    })
    .await;
    let agents = app.register_many("w", 2).await;
    let job = app
        .planned_job(&agents, &agents[0], vec![json!("flaky")])
        .await;
    let mut ids = Vec::new();
    for attempt in 1..=3u64 {
        let worker = &agents[(attempt % 2) as usize];
        let c = app.claim(worker).await.expect("the task is pending again");
        assert_eq!(c["task"]["attempts"], attempt - 1);
        let id = id_of(&c["task"]);
        let t = app
            .task_call(
                worker,
                &id,
                "fail",
                json!({ "error": format!("try {attempt}") }),
            )
            .await
            .ok();
        assert_eq!(t["attempts"], attempt);
        let expected = if attempt <= 2 { "pending" } else { "failed" };
        assert_eq!(t["status"], expected);
        ids.push(id);
    }
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "the same task came back"
    );
    assert!(
        app.claim(&agents[0]).await.is_none(),
        "a task failed for good is not offered"
    );
    let j = app.job(job).await;
    assert_eq!(
        (j["status"].as_str(), j["tasks_failed"].as_u64()),
        (Some("failed"), Some(1))
    );
}

#[tokio::test]
async fn non_retryable_failure_is_final_at_once() {
    let app = spawn_app_with(|c| c.approvals_required = 1).await;
    let a = app.register("w").await;
    app.planned_job(std::slice::from_ref(&a), &a, vec![json!(1), json!(2)])
        .await;
    let c = app.claim(&a).await.unwrap();
    let t = app
        .task_call(
            &a,
            &id_of(&c["task"]),
            "fail",
            json!({ "error": "bad input", "retryable": false }),
        )
        .await
        .ok();
    assert_eq!(
        (t["status"].as_str(), t["attempts"].as_u64()),
        (Some("failed"), Some(1))
    );
    // The job goes on with its other task.
    let next = app.claim(&a).await.expect("the other task");
    assert_eq!(next["task"]["index"], 2);
}

#[tokio::test]
async fn a_task_past_its_deadline_is_retried_by_someone_else() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.task_timeout = 1;
        c.scheduler_interval_secs = 0.2;
    })
    .await;
    let agents = app.register_many("w", 2).await;
    let c = {
        let job = app.submit("slow", json!({})).await;
        app.approve(job, &agents[0]).await.ok();
        app.claim(&agents[0]).await.unwrap()
    };
    let id = id_of(&c["task"]);
    app.task_call(&agents[0], &id, "start", json!({}))
        .await
        .ok();
    let t = eventually(10, || async {
        let t = task(&app, &id).await;
        (t["status"] == "pending").then_some(t)
    })
    .await;
    assert_eq!(t["attempts"], 1);
    assert!(t["error"].as_str().unwrap().contains("timed out"));
    assert!(t["agent_id"].is_null());
    // The late agent can no longer report on it.
    app.task_call(
        &agents[0],
        &id,
        "complete",
        json!({ "result": { "task_specs": [] } }),
    )
    .await
    .err(409, "INVALID_STATE");
    let again = app.claim(&agents[1]).await.expect("re-offered");
    assert_eq!(id_of(&again["task"]), id);
    assert_eq!(again["task"]["attempts"], 1);
    // Progress with extend_secs keeps it alive, but never beyond its timeout.
    app.task_call(
        &agents[1],
        &id,
        "progress",
        json!({ "progress": 10, "extend_secs": 5 }),
    )
    .await
    .err(400, "VALIDATION_ERROR");
    let t = app
        .task_call(
            &agents[1],
            &id,
            "progress",
            json!({ "progress": 10, "extend_secs": 1 }),
        )
        .await
        .ok();
    assert_eq!(t["status"], "running");
}

#[tokio::test]
async fn a_stale_agent_goes_offline_and_its_unstarted_claim_returns_to_pending() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.agent_stale_secs = 1.0;
        c.claim_lease_secs = 1.0;
        c.scheduler_interval_secs = 0.2;
    })
    .await;
    let agents = app.register_many("w", 2).await;
    let job = app.submit("j", json!({})).await;
    app.approve(job, &agents[0]).await.ok();
    let c = app.claim(&agents[0]).await.unwrap();
    let id = id_of(&c["task"]);
    let lost = eventually(10, || async {
        let t = task(&app, &id).await;
        (t["status"] == "pending").then_some(t)
    })
    .await;
    // The claim's lease ran out: a delivery that ended, not a failed attempt.
    assert_eq!(lost["attempts"], 0, "an unstarted claim costs no attempt");
    assert_eq!(lost["deliveries"], 1);
    // The stale sweep marks it offline (in its own pass, about when the lease ran out).
    eventually(10, || async {
        let agent = app.get(&format!("/agents/{}", agents[0].id)).await.ok();
        (agent["status"] == "offline").then_some(())
    })
    .await;
    // The idle one goes too.
    eventually(10, || async {
        (app.get("/stats").await.ok()["agents_online"] == 0).then_some(())
    })
    .await;
    // Another agent picks it up; the stale one comes back online with a heartbeat.
    let again = app.claim(&agents[1]).await.expect("re-offered");
    assert_eq!(id_of(&again["task"]), id);
    let back = app
        .post(
            &format!("/agents/{}/heartbeat", agents[0].id),
            Some(&agents[0].token),
            json!({}),
        )
        .await
        .ok();
    assert_eq!(back["status"], "online");
    let all = app
        .store
        .event_list(agora_server::store::EventListParams {
            job_id: None,
            after: 0,
            limit: 1000,
            newest_first: false,
        })
        .await
        .unwrap();
    let kinds: Vec<&str> = all
        .iter()
        .filter(|e| e.agent_id == Some(agents[0].id) && e.job_id.is_none())
        .map(|e| e.kind().as_str())
        .collect();
    assert_eq!(kinds, ["agent.registered", "agent.offline", "agent.online"]);
}

#[tokio::test]
async fn unregistering_returns_tasks_without_counting_an_attempt() {
    let app = spawn_app_with(|c| c.approvals_required = 1).await;
    let agents = app.register_many("w", 2).await;
    app.planned_job(&agents, &agents[0], vec![json!(1)]).await;
    let c = app.claim(&agents[0]).await.unwrap();
    let id = id_of(&c["task"]);
    let r = app
        .send(
            reqwest::Method::DELETE,
            &format!("/agents/{}", agents[0].id),
            Some(&agents[0].token),
            None,
        )
        .await;
    assert_eq!(r.ok()["status"], "offline");
    let t = task(&app, &id).await;
    assert_eq!(
        (t["status"].as_str(), t["attempts"].as_u64()),
        (Some("pending"), Some(0))
    );
    // The token no longer works, and the agent is gone from the list.
    app.post(
        &format!("/agents/{}/heartbeat", agents[0].id),
        Some(&agents[0].token),
        json!({}),
    )
    .await
    .err(401, "UNAUTHORIZED");
    let list = app.get("/agents").await.ok();
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(id_of(&app.claim(&agents[1]).await.unwrap()["task"]), id);
}
