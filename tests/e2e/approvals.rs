//! The approval gate: distinct agents, one approval each, the cooldown.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_second_approval_by_the_same_agent_is_409() {
    let app = spawn_app_with(|c| c.approval_cooldown_secs = 0).await;
    let a = app.register("a").await;
    let job = app.submit("j", json!({})).await;
    app.approve(job, &a).await.ok();
    let again = app.approve(job, &a).await;
    again.err(409, "CONFLICT");
    let j = app.job(job).await;
    assert_eq!(
        (j["approvals"].as_u64(), j["status"].as_str()),
        (Some(1), Some("approving"))
    );
}

#[tokio::test]
async fn the_cooldown_answers_429_with_the_next_allowed_time() {
    let app = spawn_app().await;
    let a = app.register("a").await;
    let first = app.submit("one", json!({})).await;
    let second = app.submit("two", json!({})).await;
    let ok = app.get(&format!("/agents/{}/can-approve", a.id)).await.ok();
    assert_eq!(ok, json!({ "can_approve": true, "next_allowed_at": null }));
    app.approve(first, &a).await.ok();
    let r = app.approve(second, &a).await;
    r.err(429, "RATE_LIMITED");
    let next: chrono::DateTime<chrono::Utc> = r.body["error"]["details"]["next_allowed_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let wait = next - chrono::Utc::now();
    assert!(
        wait > chrono::Duration::seconds(3590) && wait <= chrono::Duration::seconds(3600),
        "{wait}"
    );
    let can = app.get(&format!("/agents/{}/can-approve", a.id)).await.ok();
    assert_eq!(can["can_approve"], false);
    assert_eq!(
        can["next_allowed_at"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap(),
        next
    );
    // Nothing was written for the refused approval.
    assert_eq!(app.job(second).await["approvals"], 0);
    assert_eq!(
        app.get(&format!("/jobs/{second}/approvals")).await.ok(),
        json!([])
    );
}

#[tokio::test]
async fn approvals_need_a_registered_agent_and_an_open_job() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.approval_cooldown_secs = 0;
    })
    .await;
    let agents = app.register_many("a", 2).await;
    let job = app.submit("j", json!({})).await;
    // Unknown job.
    app.approve(uuid::Uuid::new_v4(), &agents[0])
        .await
        .err(404, "NOT_FOUND");
    // Approving for someone else.
    app.post(
        &format!("/jobs/{job}/approve"),
        Some(&agents[0].token),
        json!({ "agent_id": agents[1].id }),
    )
    .await
    .err(403, "FORBIDDEN");
    app.approve(job, &agents[0]).await.ok();
    app.approve(job, &agents[1]).await.err(409, "INVALID_STATE");
    app.post(&format!("/jobs/{job}/cancel"), None, json!({}))
        .await
        .ok();
    app.approve(job, &agents[1]).await.err(409, "INVALID_STATE");
}

#[tokio::test]
async fn a_job_may_ask_for_more_approvals_but_not_fewer() {
    let app = spawn_app_with(|c| c.approval_cooldown_secs = 0).await;
    app.post(
        "/jobs",
        None,
        json!({ "title": "t", "job_spec": {}, "approvals_required": 2 }),
    )
    .await
    .err(400, "VALIDATION_ERROR");
    let j = app
        .post(
            "/jobs",
            None,
            json!({ "title": "t", "job_spec": {}, "approvals_required": 6 }),
        )
        .await
        .ok();
    assert_eq!(j["approvals_required"], 6);
    let job = j["id"].as_str().unwrap().parse().unwrap();
    let agents = app.register_many("a", 6).await;
    for (i, a) in agents.iter().enumerate() {
        let r = app.approve(job, a).await.ok();
        let expected = if i < 5 { "approving" } else { "accepted" };
        assert_eq!(r["job"]["status"], expected);
    }
}
