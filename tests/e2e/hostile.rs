//! Hostile input on the streams, which the OpenAPI fuzzing cannot reach: malformed WebSocket
//! frames of every kind and bad SSE resume points. Each gets a clear refusal, the server stays
//! up and the socket (when it should) keeps working.

use futures::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use agora_shared::ErrorCode;

use crate::helpers::spawn_app_with;

#[tokio::test]
async fn malformed_websocket_frames_get_negative_acks_and_the_socket_survives() {
    let app = spawn_app_with(|c| c.max_body_bytes = 64 * 1024).await;
    let agent = app.register("hostile").await;
    let mut ws = app.connect(&agent).await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let cases: Vec<(String, ErrorCode)> = vec![
        ("".into(), ErrorCode::MalformedJson),
        ("{".into(), ErrorCode::MalformedJson),
        ("\u{0}\u{1}\u{2}".into(), ErrorCode::MalformedJson),
        ("[]".into(), ErrorCode::ValidationError),
        ("null".into(), ErrorCode::ValidationError),
        ("42".into(), ErrorCode::ValidationError),
        (deep, ErrorCode::ValidationError),
        (json!({ "type": 7 }).to_string(), ErrorCode::ValidationError),
        (
            json!({ "type": "ready", "slots": -1 }).to_string(),
            ErrorCode::ValidationError,
        ),
        (
            json!({ "type": "ready", "slots": 1_000_000 }).to_string(),
            ErrorCode::ValidationError,
        ),
        (
            json!({ "type": "accept", "offer_id": "not-a-uuid" }).to_string(),
            ErrorCode::ValidationError,
        ),
        (
            json!({ "type": "progress", "task_id": uuid::Uuid::new_v4(), "progress": 500 })
                .to_string(),
            ErrorCode::ValidationError,
        ),
        (
            json!({ "type": "fail", "task_id": uuid::Uuid::new_v4() }).to_string(),
            ErrorCode::ValidationError,
        ),
        (
            json!({ "type": "subscribe", "job_id": 12 }).to_string(),
            ErrorCode::ValidationError,
        ),
    ];
    for (frame, code) in &cases {
        ws.send_raw(frame).await;
        let (ok, err) = ws
            .recv_until(|m| match m {
                agora_shared::ws::ServerMsg::Ack { ok, error, .. } => Some((ok, error)),
                _ => None,
            })
            .await;
        assert!(!ok, "{frame:.80} was accepted");
        let err = err.expect("an error body");
        assert_eq!(err.code, *code, "{frame:.80}: {}", err.message);
        assert!(!err.message.is_empty());
    }
    // Unknown fields are refused, as in REST bodies: a misspelt optional field is not ignored.
    ws.send(json!({ "type": "ready", "slots": 0, "hint": true, "ref": "extra" }))
        .await;
    let (ok, err) = ws.ack("ready").await;
    assert!(!ok, "an unknown field is refused");
    let err = err.expect("an error body");
    assert_eq!(
        (err.code, err.field.as_deref()),
        (ErrorCode::ValidationError, Some("hint"))
    );
    // Binary frames are not the protocol.
    ws.socket
        .send(Message::Binary(vec![0xff, 0x00, 0x13].into()))
        .await
        .expect("binary frame sent");
    let (ok, err) = ws.ack("binary").await;
    assert!(!ok, "a binary frame is refused");
    assert_eq!(err.map(|e| e.code), Some(ErrorCode::ValidationError));
    // Still up and answering.
    ws.send(json!({ "type": "ready", "slots": 1, "ref": "alive" }))
        .await;
    let acked = ws
        .recv_until(|m| match m {
            agora_shared::ws::ServerMsg::Ack { reference, ok, .. } => Some((reference, ok)),
            _ => None,
        })
        .await;
    assert_eq!(acked, (Some("alive".into()), true));
    // A frame over MAX_BODY_BYTES closes the socket (the limit protects the server), and the
    // server carries on.
    let big = json!({ "type": "ready", "slots": 1, "ref": "x".repeat(70 * 1024) }).to_string();
    let _ = ws.socket.send(Message::Text(big.into())).await;
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        use futures::StreamExt;
        loop {
            match ws.socket.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(closed, "an oversize frame ends the socket");
    assert_eq!(app.get("/health").await.ok()["status"], "ok");
    let again = app.connect(&agent).await;
    drop(again);
}

#[tokio::test]
async fn bad_sse_resume_points_are_400s_naming_the_problem() {
    let app = spawn_app_with(|_| {}).await;
    let job = app.submit("sse", json!({})).await;
    for path in ["/events", &format!("/jobs/{job}/stream")] {
        for query in [
            "last_event_id=-1",
            "last_event_id=abc",
            "last_event_id=1.5",
            "nonsense=1",
            "last_event_id=99999999999999999999",
        ] {
            let res = app
                .http
                .get(format!("{}{path}?{query}", app.base))
                .send()
                .await
                .expect("GET");
            assert_eq!(res.status(), 400, "{path}?{query}");
            let body: serde_json::Value = res.json().await.expect("JSON error");
            assert_eq!(body["success"], false);
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{body}"
            );
        }
        for header in ["-5", "x", "", "1e3"] {
            let res = app
                .http
                .get(format!("{}{path}", app.base))
                .header("Last-Event-ID", header)
                .send()
                .await
                .expect("GET");
            assert_eq!(res.status(), 400, "{path} with Last-Event-ID {header:?}");
            let body: serde_json::Value = res.json().await.expect("JSON error");
            assert_eq!(body["error"]["field"], "Last-Event-ID", "{body}");
        }
    }
    let res = app
        .http
        .get(format!("{}/jobs/{}/stream", app.base, uuid::Uuid::new_v4()))
        .send()
        .await
        .expect("GET");
    assert_eq!(res.status(), 404, "an unknown job's stream");
}

/// Text that looks like SQL (quotes, backslashes, `$` signs, a statement of its own) in an
/// event comes back as it was sent, from the live SSE feed and from the events table alike:
/// on PostgreSQL the batch's events are written as literals with its `COMMIT`.
#[tokio::test]
async fn sql_looking_text_in_events_comes_back_as_sent_live_and_from_the_table() {
    use crate::push_helpers::SseClient;
    let app = spawn_app_with(|c| c.approvals_required = 1).await;
    let agent = app.register("quoter").await;
    let job = app
        .planned_job(std::slice::from_ref(&agent), &agent, vec![json!(1)])
        .await;
    let mut sse = SseClient::connect(&app, &format!("/jobs/{job}/stream"), None).await;
    let claimed = app.claim(&agent).await.expect("a task");
    let task = claimed["task"]["id"].as_str().expect("task id").to_string();
    let text = "it's E'x' \\' \\\\ $1 $$ $a$ '); DROP TABLE events; -- \u{fc} \u{1f680} \\u0000";
    let r = app
        .task_call(
            &agent,
            &task,
            "fail",
            json!({ "error": text, "retryable": false }),
        )
        .await;
    assert_eq!(r.body["data"]["status"], "failed", "{}", r.body);

    let live = loop {
        let e = sse.next_event().await;
        if e["kind"] == "task.failed" {
            break e;
        }
    };
    assert_eq!(live["data"]["error"], text, "live: {live}");
    let stored = app
        .all_events(job)
        .await
        .into_iter()
        .find(|e| e["kind"] == "task.failed")
        .expect("task.failed in the table");
    assert_eq!(stored["data"]["error"], text, "table: {stored}");
    assert_eq!(stored, live, "the table holds what was published");
}
