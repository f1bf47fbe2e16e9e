//! WebSocket and SSE clients for the push tests.

use std::time::Duration;

use agora_shared::ws::ServerMsg;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{TestAgent, TestApp};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct WsAgent {
    pub socket: Socket,
}

impl TestApp {
    pub fn ws_url(&self, agent: &TestAgent) -> String {
        format!(
            "{}/agents/{}/ws?token={}",
            self.base.replace("http://", "ws://"),
            agent.id,
            agent.token
        )
    }

    /// Connects and reads the `hello`.
    pub async fn connect(&self, agent: &TestAgent) -> WsAgent {
        let (socket, _) = tokio_tungstenite::connect_async(self.ws_url(agent))
            .await
            .expect("websocket connects");
        let mut ws = WsAgent { socket };
        match ws.recv().await {
            ServerMsg::Hello { agent_id, .. } => assert_eq!(agent_id, agent.id),
            other => panic!("expected hello, got {other:?}"),
        }
        ws
    }
}

impl WsAgent {
    pub async fn send(&mut self, v: Value) {
        self.socket
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("frame sent");
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.socket
            .send(Message::Text(text.to_string().into()))
            .await
            .expect("frame sent");
    }

    /// The next protocol message (pings are answered by the library), within 10 s.
    pub async fn recv(&mut self) -> ServerMsg {
        self.recv_within(Duration::from_secs(10))
            .await
            .expect("a message within 10 s")
    }

    pub async fn recv_within(&mut self, limit: Duration) -> Option<ServerMsg> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()??;
            match frame.expect("socket error") {
                Message::Text(t) => {
                    return Some(serde_json::from_str(t.as_str()).expect("server message parses"))
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Skips messages until one matches.
    pub async fn recv_until<T>(&mut self, mut f: impl FnMut(ServerMsg) -> Option<T>) -> T {
        loop {
            if let Some(t) = f(self.recv().await) {
                return t;
            }
        }
    }

    /// The ack for the next frame of `kind`.
    pub async fn ack(&mut self, kind: &str) -> (bool, Option<agora_shared::ApiErrorBody>) {
        self.recv_until(|m| match m {
            ServerMsg::Ack {
                kind: k, ok, error, ..
            } if k == kind => Some((ok, error)),
            _ => None,
        })
        .await
    }

    /// Waits for a `task_revoked`: (task id, reason).
    pub async fn revoked(&mut self) -> (String, String) {
        self.recv_until(|m| match m {
            ServerMsg::TaskRevoked { task_id, reason } => Some((task_id.to_string(), reason)),
            _ => None,
        })
        .await
    }

    pub async fn ready(&mut self, slots: u32) {
        self.send(serde_json::json!({ "type": "ready", "slots": slots }))
            .await;
        assert!(self.ack("ready").await.0);
    }

    /// Waits for an offer: (offer id, task id, task index).
    pub async fn offer(&mut self) -> (String, String, u64) {
        self.recv_until(|m| match m {
            ServerMsg::TaskOffer { offer_id, task, .. } => Some((
                offer_id.to_string(),
                task.id.to_string(),
                u64::from(task.index),
            )),
            _ => None,
        })
        .await
    }
}

/// One parsed SSE message.
#[derive(Debug, Clone)]
pub struct SseMsg {
    pub id: Option<i64>,
    pub event: Option<String>,
    pub data: String,
}

impl SseMsg {
    /// One message's block (its lines without the blank line after); `None` for a comment.
    pub fn parse(block: &str) -> Option<SseMsg> {
        let mut msg = SseMsg {
            id: None,
            event: None,
            data: String::new(),
        };
        let mut any = false;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                msg.id = v.trim().parse().ok();
                any = true;
            } else if let Some(v) = line.strip_prefix("event:") {
                msg.event = Some(v.trim().to_string());
                any = true;
            } else if let Some(v) = line.strip_prefix("data:") {
                msg.data.push_str(v.trim_start());
                any = true;
            }
        }
        any.then_some(msg)
    }
}

/// A minimal SSE reader over a streaming HTTP response.
pub struct SseClient {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl SseClient {
    pub async fn connect(app: &TestApp, path: &str, last_event_id: Option<i64>) -> SseClient {
        let mut req = app.http.get(format!("{}{}", app.base, path));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let res = req.send().await.expect("SSE connects");
        SseClient::from_response(res)
    }

    pub fn from_response(res: reqwest::Response) -> SseClient {
        assert_eq!(res.status(), 200);
        assert!(res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        SseClient {
            body: Box::pin(res.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next message (not keep-alive comments), within `limit`.
    pub async fn next_within(&mut self, limit: Duration) -> Option<SseMsg> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                if let Some(msg) = SseMsg::parse(&block) {
                    return Some(msg);
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .ok()??;
            self.buf.push_str(&String::from_utf8_lossy(&chunk.ok()?));
        }
    }

    pub async fn next_event(&mut self) -> Value {
        let m = self
            .next_within(Duration::from_secs(10))
            .await
            .expect("an SSE message within 10 s");
        let v: Value = serde_json::from_str(&m.data).expect("event JSON");
        assert_eq!(m.id, v["id"].as_i64(), "the SSE id is the event id");
        v
    }
}
