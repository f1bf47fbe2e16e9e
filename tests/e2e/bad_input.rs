//! Hostile and careless input: every bad request gets a clear 4xx naming the problem, and
//! nothing is written.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

/// A fingerprint of everything written so far.
async fn written(app: &TestApp) -> Value {
    let s = app.get("/stats").await.ok();
    json!([s["last_event_id"], s["jobs"], s["tasks"], s["agents_total"]])
}

#[tokio::test]
async fn malformed_bodies_get_4xx_naming_the_field_and_write_nothing() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.max_body_bytes = 64 * 1024;
    })
    .await;
    let agents = app.register_many("a", 2).await;
    let a = &agents[0];
    let job = app.planned_job(&agents, a, vec![json!(1)]).await;
    let task = id_of(&app.claim(a).await.unwrap()["task"]);
    let fresh = app.submit("fresh", json!({})).await;

    let register = "/agents/register".to_string();
    let jobs = "/jobs".to_string();
    let approve = format!("/jobs/{fresh}/approve");
    let claim = "/tasks/claim".to_string();
    let progress = format!("/tasks/{task}/progress");
    let fail = format!("/tasks/{task}/fail");
    let complete = format!("/tasks/{task}/complete");
    let aid = a.id.to_string();
    let long = "x".repeat(201);
    // (path, body, status, code, field)
    let table: Vec<(&String, String, u16, &str, Option<&str>)> = vec![
        (&register, "{bad".into(), 400, "MALFORMED_JSON", None),
        (&register, "".into(), 400, "MALFORMED_JSON", None),
        (
            &register,
            r#"{"name": "a"} trailing"#.into(),
            400,
            "MALFORMED_JSON",
            None,
        ),
        (
            &register,
            "{}".into(),
            400,
            "VALIDATION_ERROR",
            Some("name"),
        ),
        (
            &register,
            r#"{"name": 5}"#.into(),
            400,
            "VALIDATION_ERROR",
            Some("name"),
        ),
        (
            &register,
            r#"{"name": "  "}"#.into(),
            400,
            "VALIDATION_ERROR",
            Some("name"),
        ),
        (
            &register,
            r#"{"name": "x", "capabilities": "rust"}"#.into(),
            400,
            "VALIDATION_ERROR",
            Some("capabilities"),
        ),
        (
            &register,
            r#"{"name": "x", "capabilities": ["ok", 3]}"#.into(),
            400,
            "VALIDATION_ERROR",
            Some("capabilities[1]"),
        ),
        (
            &register,
            r#"{"name": "x", "admin": true}"#.into(),
            400,
            "VALIDATION_ERROR",
            Some("admin"),
        ),
        (
            &register,
            "[]".into(),
            400,
            "VALIDATION_ERROR",
            Some("body"),
        ),
        (
            &jobs,
            r#"{"title": "t"}"#.into(),
            400,
            "VALIDATION_ERROR",
            Some("job_spec"),
        ),
        (
            &jobs,
            r#"{"title": "t", "job_spec": null}"#.into(),
            400,
            "VALIDATION_ERROR",
            Some("job_spec"),
        ),
        (
            &jobs,
            r#"{"title": "t", "job_spec": {}, "priority": "high"}"#.into(),
            400,
            "VALIDATION_ERROR",
            Some("priority"),
        ),
        (
            &jobs,
            r#"{"title": "t", "job_spec": {}, "priority": 1.5}"#.into(),
            400,
            "VALIDATION_ERROR",
            Some("priority"),
        ),
        (
            &jobs,
            r#"{"title": "t", "job_spec": {}, "approvals_required": -1}"#.into(),
            400,
            "VALIDATION_ERROR",
            Some("approvals_required"),
        ),
        (
            &jobs,
            r#"{"title": "t", "job_spec": {}, "approvals_required": 101}"#.into(),
            400,
            "VALIDATION_ERROR",
            Some("approvals_required"),
        ),
        (
            &jobs,
            format!(r#"{{"title": "{long}", "job_spec": {{}}}}"#),
            400,
            "VALIDATION_ERROR",
            Some("title"),
        ),
        (
            &jobs,
            r#"{"title": "t", "job_spec": {}, "submitted_by": "me"}"#.into(),
            400,
            "VALIDATION_ERROR",
            Some("submitted_by"),
        ),
        (
            &approve,
            r#"{"agent_id": "nope"}"#.into(),
            400,
            "VALIDATION_ERROR",
            Some("agent_id"),
        ),
        (
            &approve,
            "{}".into(),
            400,
            "VALIDATION_ERROR",
            Some("agent_id"),
        ),
        (
            &claim,
            format!(r#"{{"agent_id": "{aid}", "wait_secs": 61}}"#),
            400,
            "VALIDATION_ERROR",
            Some("wait_secs"),
        ),
        (
            &claim,
            format!(r#"{{"agent_id": "{aid}", "wait_secs": "soon"}}"#),
            400,
            "VALIDATION_ERROR",
            Some("wait_secs"),
        ),
        (
            &progress,
            r#"{"progress": 101}"#.into(),
            400,
            "VALIDATION_ERROR",
            Some("progress"),
        ),
        (
            &progress,
            r#"{"progress": -1}"#.into(),
            400,
            "VALIDATION_ERROR",
            Some("progress"),
        ),
        (
            &progress,
            r#"{"progress": "half"}"#.into(),
            400,
            "VALIDATION_ERROR",
            Some("progress"),
        ),
        (
            &progress,
            r#"{"progress": 5, "message": 7}"#.into(),
            400,
            "VALIDATION_ERROR",
            Some("message"),
        ),
        (&fail, "{}".into(), 400, "VALIDATION_ERROR", Some("error")),
        (
            &fail,
            r#"{"error": ""}"#.into(),
            400,
            "VALIDATION_ERROR",
            Some("error"),
        ),
        (
            &fail,
            r#"{"error": "x", "retryable": "no"}"#.into(),
            400,
            "VALIDATION_ERROR",
            Some("retryable"),
        ),
        (
            &complete,
            r#"{"result": 1, "extra": 2}"#.into(),
            400,
            "VALIDATION_ERROR",
            Some("extra"),
        ),
    ];
    let before = written(&app).await;
    for (path, body, status, code, field) in &table {
        let r = app
            .raw(
                Method::POST,
                path,
                Some(&a.token),
                body.clone().into_bytes(),
            )
            .await;
        assert_eq!(r.status.as_u16(), *status, "{path} {body}: {}", r.body);
        assert_eq!(r.code(), *code, "{path} {body}: {}", r.body);
        assert_eq!(
            r.body["error"]["field"].as_str(),
            *field,
            "{path} {body}: {}",
            r.body
        );
        assert!(!r.body["error"]["message"].as_str().unwrap_or("").is_empty());
    }
    assert_eq!(
        written(&app).await,
        before,
        "a refused request wrote something"
    );
    let t = app.get(&format!("/tasks/{task}")).await.ok();
    assert_eq!(
        (t["status"].as_str(), t["progress"].as_u64()),
        (Some("claimed"), Some(0))
    );
    let _ = job;
}

#[tokio::test]
async fn ids_routes_methods_and_sizes() {
    let app = spawn_app_with(|c| c.max_body_bytes = 64 * 1024).await;
    let a = app.register("a").await;
    let before = written(&app).await;
    let r = app.get("/jobs/not-a-uuid").await;
    r.err(400, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["field"], "id");
    app.get(&format!("/jobs/{}", uuid::Uuid::new_v4()))
        .await
        .err(404, "NOT_FOUND");
    app.get(&format!("/jobs/{}/tasks", uuid::Uuid::new_v4()))
        .await
        .err(404, "NOT_FOUND");
    app.get(&format!("/tasks/{}", uuid::Uuid::new_v4()))
        .await
        .err(404, "NOT_FOUND");
    app.get(&format!("/agents/{}/can-approve", uuid::Uuid::new_v4()))
        .await
        .err(404, "NOT_FOUND");
    app.task_call(&a, &uuid::Uuid::new_v4().to_string(), "start", json!({}))
        .await
        .err(404, "NOT_FOUND");
    app.task_call(&a, "123", "start", json!({}))
        .await
        .err(400, "VALIDATION_ERROR");
    app.get("/nothing/here").await.err(404, "NOT_FOUND");
    app.send(Method::PUT, "/jobs", None, None)
        .await
        .err(405, "METHOD_NOT_ALLOWED");
    let huge = json!({ "title": "big", "job_spec": { "blob": "x".repeat(70 * 1024) } });
    let r = app.post("/jobs", None, huge).await;
    r.err(413, "PAYLOAD_TOO_LARGE");
    assert_eq!(written(&app).await, before);
    // Just under the limit is fine.
    let fits = json!({ "title": "fits", "job_spec": { "blob": "x".repeat(60 * 1024) } });
    assert_eq!(app.post("/jobs", None, fits).await.status, 201);
}

#[tokio::test]
async fn illegal_task_transitions_are_409() {
    let app = spawn_app_with(|c| c.approvals_required = 1).await;
    let a = app.register("a").await;
    app.planned_job(std::slice::from_ref(&a), &a, vec![json!(1)])
        .await;
    let c = app.claim(&a).await.unwrap();
    let id = id_of(&c["task"]);
    app.task_call(&a, &id, "start", json!({})).await.ok();
    app.task_call(&a, &id, "start", json!({}))
        .await
        .err(409, "INVALID_STATE");
    app.task_call(&a, &id, "complete", json!({ "result": 1 }))
        .await
        .ok();
    for (action, body) in [
        ("start", json!({})),
        ("progress", json!({ "progress": 1 })),
        ("complete", json!({ "result": 2 })),
        ("fail", json!({ "error": "late" })),
    ] {
        app.task_call(&a, &id, action, body)
            .await
            .err(409, "INVALID_STATE");
    }
    let t = app.get(&format!("/tasks/{id}")).await.ok();
    assert_eq!(
        (t["status"].as_str(), t["result"].as_u64()),
        (Some("completed"), Some(1))
    );
}
