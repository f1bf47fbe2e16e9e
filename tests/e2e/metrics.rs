//! `GET /metrics`: Prometheus text with tasks by state, claims, offers, the wake latency
//! histogram, connected agents, SSE clients and HTTP latency by route.

use std::time::Duration;

use agora_shared::ws::ServerMsg;
use serde_json::json;

use crate::helpers::{metric_sample, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_claims_offers_sockets_streams_and_requests() {
    let app = spawn_app_with(|c| c.approvals_required = 1).await;
    let agents = app.register_many("m", 2).await;
    let job = app
        .planned_job(&agents, &agents[0], vec![json!(1), json!(2)])
        .await;
    // One task over REST, one offered over the WebSocket.
    let t = app.claim(&agents[0]).await.expect("a task");
    let id = t["task"]["id"].as_str().expect("id").to_string();
    app.task_call(&agents[0], &id, "complete", json!({ "result": 1 }))
        .await
        .ok();
    let mut session = app.as_agent(&agents[1]).session().await.expect("session");
    session.ready(1).await.expect("ready");
    let offered = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let ServerMsg::TaskOffer { offer_id, task, .. } = session.next().await.expect("msg")
            {
                return (offer_id, task.id);
            }
        }
    })
    .await
    .expect("an offer");
    session.accept(offered.0).await.expect("accept");
    // The task runs once the server has answered the accept.
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let ServerMsg::Ack { kind, ok, .. } = session.next().await.expect("msg") {
                if kind == "accept" {
                    assert!(ok, "the accept was refused");
                    return;
                }
            }
        }
    })
    .await
    .expect("the accept's ack");
    let sse = app
        .http
        .get(format!("{}/jobs/{job}/stream", app.base))
        .send()
        .await
        .expect("SSE");
    assert_eq!(sse.status(), 200);

    let root = app.base.trim_end_matches("/api");
    let res = app
        .http
        .get(format!("{root}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(res.status(), 200);
    assert!(res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/plain")));
    let text = res.text().await.expect("body");
    let at_least = |prefix: &str, min: f64| {
        let v = metric_sample(&text, prefix).unwrap_or_else(|| panic!("no {prefix} in\n{text}"));
        assert!(v >= min, "{prefix} = {v}, expected at least {min}");
    };
    at_least("agora_tasks{state=\"completed\"}", 2.0); // the plan and one work task
    at_least("agora_tasks{state=\"running\"}", 1.0);
    at_least("agora_jobs{state=\"executing\"}", 1.0);
    at_least("agora_claims_total{via=\"rest\"}", 2.0);
    at_least("agora_claims_total{via=\"push\"}", 1.0);
    at_least("agora_offers_total", 1.0);
    at_least("agora_wake_latency_seconds_count", 1.0);
    at_least("agora_connected_agents", 1.0);
    at_least("agora_agents_online", 2.0);
    at_least("agora_sse_clients", 1.0);
    at_least(
        "agora_http_request_duration_seconds_count{method=\"POST\",route=\"/api/tasks/claim\",status=\"200\"}",
        2.0,
    );
    assert!(
        text.contains("route=\"/api/jobs/{id}/stream\""),
        "routes are templates, not ids:\n{text}"
    );
    drop(sse);
}
