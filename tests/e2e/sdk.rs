//! The Rust SDK against the real server: a whole job, and errors carrying the server's codes.

use agora_client::{Client, ClientError};
use agora_shared::ErrorCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn the_sdk_runs_a_job_and_reports_error_codes() {
    let app = spawn_app_with(|c| c.approvals_required = 1).await;
    let root = app.base.trim_end_matches("/api").to_string();
    let mut agent = Client::new(&root);
    let registered = agent
        .register("sdk-agent", Some(vec!["rust".into()]))
        .await
        .unwrap();
    assert_eq!(agent.agent_id(), Some(registered.agent_id));
    let anonymous = Client::new(&root);
    let job = anonymous
        .submit(&job_body("via sdk", json!({ "n": 2 })))
        .await
        .unwrap();
    assert_eq!(
        agent
            .approve(job.id, Some("ok"))
            .await
            .unwrap()
            .job
            .status
            .as_str(),
        "accepted"
    );
    let plan = agent.claim(Some(5)).await.unwrap().expect("the plan task");
    agent
        .complete(plan.task.id, json!({ "task_specs": [1, 2] }))
        .await
        .unwrap();
    while let Some(c) = agent.claim(None).await.unwrap() {
        agent.start(c.task.id).await.unwrap();
        agent.progress(c.task.id, 50, Some("half")).await.unwrap();
        agent
            .complete(c.task.id, json!({ "done": c.task.index }))
            .await
            .unwrap();
    }
    assert_eq!(
        anonymous.job(job.id).await.unwrap().status.as_str(),
        "completed"
    );
    let events = anonymous.events(job.id, 0).await.unwrap();
    assert_eq!(
        events.last().map(|e| e.kind().as_str()),
        Some("job.completed")
    );

    // Errors come back typed, with the server's code.
    let err = agent.approve(job.id, None).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidState));
    let err = anonymous.job(uuid::Uuid::new_v4()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Api {
                status: 404,
                code: ErrorCode::NotFound,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        anonymous.claim(None).await,
        Err(ClientError::NoAgent)
    ));
    agent.unregister().await.unwrap();
    assert_eq!(
        agent.heartbeat().await.unwrap_err().code(),
        Some(ErrorCode::Unauthorized)
    );
}

#[tokio::test]
async fn the_sdk_event_stream_resumes_from_its_last_id() {
    let app = spawn_app_with(|c| c.approvals_required = 1).await;
    let root = app.base.trim_end_matches("/api").to_string();
    let mut agent = Client::new(&root);
    agent.register("streamer", None).await.unwrap();
    let job = Client::new(&root)
        .submit(&job_body("streamed", json!({})))
        .await
        .unwrap();
    let mut stream = agent.event_stream(Some(job.id), 0);
    let first = stream.next().await.unwrap();
    assert_eq!(first.kind().as_str(), "job.committed");
    // Work happens; a second stream picks up exactly where the first stopped.
    let resume_from = stream.last_id();
    drop(stream);
    agent.approve(job.id, None).await.unwrap();
    let plan = agent.claim(None).await.unwrap().unwrap();
    agent
        .complete(plan.task.id, json!({ "task_specs": [] }))
        .await
        .unwrap();
    let mut stream = agent.event_stream(Some(job.id), resume_from);
    let mut seen = vec![first.id];
    loop {
        let e = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .unwrap()
            .unwrap();
        seen.push(e.id);
        if e.kind().as_str() == "job.completed" {
            break;
        }
    }
    let table: Vec<i64> = Client::new(&root)
        .events(job.id, 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(seen, table);
}

#[tokio::test]
async fn the_sdk_session_takes_offers_and_reconnects_after_being_dropped() {
    use agora_shared::ws::ServerMsg;
    let app = spawn_app_with(|c| c.approvals_required = 1).await;
    let root = app.base.trim_end_matches("/api").to_string();
    let mut agent = Client::new(&root);
    agent.register("ws-sdk", None).await.unwrap();
    let agents = vec![app.register("planner").await];
    app.planned_job(&agents, &agents[0], vec![json!("a"), json!("b")])
        .await;
    let mut session = agent.session().await.unwrap();
    session.ready(1).await.unwrap();
    let mut done = 0;
    let mut replaced = false;
    while done < 2 {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), session.next())
            .await
            .unwrap()
            .unwrap();
        match msg {
            ServerMsg::TaskOffer { offer_id, .. } => session.accept(offer_id).await.unwrap(),
            ServerMsg::Ack {
                kind,
                ok: true,
                task: Some(t),
                ..
            } if kind == "accept" => {
                session.complete(t.id, json!({ "ok": true })).await.unwrap();
            }
            ServerMsg::Ack { kind, ok: true, .. } if kind == "complete" => {
                done += 1;
                if !replaced {
                    // Another socket of the same agent takes over; the session must come back.
                    replaced = true;
                    let url = format!(
                        "{}/agents/{}/ws?token={}",
                        app.base.replace("http", "ws"),
                        agent.agent_id().unwrap(),
                        agent.token().unwrap()
                    );
                    let (other, _) = tokio_tungstenite::connect_async(url).await.unwrap();
                    drop(other);
                }
            }
            // An offer in flight when the socket was replaced died with it: the session's
            // accept reaches the new socket, which does not know it, and the task is offered
            // again.
            ServerMsg::Ack {
                kind,
                ok: false,
                error: Some(e),
                ..
            } if kind == "accept" && e.code == agora_shared::ErrorCode::NotFound => {}
            ServerMsg::Ack {
                ok: false, error, ..
            } => panic!("{error:?}"),
            _ => {}
        }
    }
    let tasks = app.get("/stats").await.ok();
    assert_eq!(tasks["tasks"]["completed"], 3, "plan and both work tasks");
}
