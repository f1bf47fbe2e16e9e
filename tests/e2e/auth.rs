//! Tokens: 401 without or with a wrong one, 403 for another agent's task, gated registration
//! and operator calls.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn agent_calls_need_the_agents_token() {
    let app = spawn_app_with(|c| c.approvals_required = 1).await;
    let agents = app.register_many("a", 2).await;
    let (a, b) = (&agents[0], &agents[1]);
    let hb = format!("/agents/{}/heartbeat", a.id);
    app.post(&hb, None, json!({}))
        .await
        .err(401, "UNAUTHORIZED");
    app.post(&hb, Some("not-a-token"), json!({}))
        .await
        .err(401, "UNAUTHORIZED");
    app.post(&hb, Some(&b.token), json!({}))
        .await
        .err(403, "FORBIDDEN");
    app.post(&hb, Some(&a.token), json!({})).await.ok();
    let claim = json!({ "agent_id": a.id });
    app.post("/tasks/claim", None, claim.clone())
        .await
        .err(401, "UNAUTHORIZED");
    app.post("/tasks/claim", Some(&b.token), claim)
        .await
        .err(403, "FORBIDDEN");

    app.planned_job(&agents, a, vec![json!(1)]).await;
    let c = app.claim(a).await.unwrap();
    let task = id_of(&c["task"]);
    for (action, body) in [
        ("start", json!({})),
        ("progress", json!({ "progress": 5 })),
        ("complete", json!({ "result": 1 })),
        ("fail", json!({ "error": "x" })),
    ] {
        app.task_call(b, &task, action, body.clone())
            .await
            .err(403, "FORBIDDEN");
        app.post(&format!("/tasks/{task}/{action}"), None, body)
            .await
            .err(401, "UNAUTHORIZED");
    }
    // Nothing changed.
    let t = app.get(&format!("/tasks/{task}")).await.ok();
    assert_eq!(
        (t["status"].as_str(), t["progress"].as_u64()),
        (Some("claimed"), Some(0))
    );
    // The owner can, and a raw header scheme other than Bearer is refused.
    let r = app
        .http
        .post(format!("{}/tasks/{task}/start", app.base))
        .header("Authorization", format!("Basic {}", a.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    app.task_call(a, &task, "start", json!({})).await.ok();
}

#[tokio::test]
async fn registration_token_gates_registration() {
    let app = spawn_app_with(|c| c.registration_token = Some("sesame".into())).await;
    app.post("/agents/register", None, json!({ "name": "x" }))
        .await
        .err(401, "UNAUTHORIZED");
    app.post("/agents/register", Some("wrong"), json!({ "name": "x" }))
        .await
        .err(401, "UNAUTHORIZED");
    let r = app
        .post("/agents/register", Some("sesame"), json!({ "name": "x" }))
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(app.get("/agents").await.ok()["total"], 1);
}

#[tokio::test]
async fn cancel_needs_the_admin_token_when_set() {
    let app = spawn_app_with(|c| c.admin_token = Some("root".into())).await;
    let agent = app.register("a").await;
    let job = app.submit("j", json!({})).await;
    let path = format!("/jobs/{job}/cancel");
    app.post(&path, None, json!({}))
        .await
        .err(401, "UNAUTHORIZED");
    app.post(&path, Some(&agent.token), json!({}))
        .await
        .err(401, "UNAUTHORIZED");
    assert_eq!(app.job(job).await["status"], "committed");
    let j = app
        .post(&path, Some("root"), json!({ "reason": "test" }))
        .await
        .ok();
    assert_eq!(j["status"], "failed");
    assert!(j["error"].as_str().unwrap().contains("test"));
}

#[tokio::test]
async fn submitting_as_an_agent_needs_its_token() {
    let app = spawn_app().await;
    let agents = app.register_many("a", 2).await;
    let body = json!({ "title": "t", "job_spec": {}, "submitted_by": agents[0].id });
    app.post("/jobs", None, body.clone())
        .await
        .err(401, "UNAUTHORIZED");
    app.post("/jobs", Some(&agents[1].token), body.clone())
        .await
        .err(403, "FORBIDDEN");
    let j = app.post("/jobs", Some(&agents[0].token), body).await.ok();
    assert_eq!(j["submitted_by"], agents[0].id.to_string());
}
