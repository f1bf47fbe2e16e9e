//! An agent's WebSocket session: task offers pushed by the server, answers with acks, and a
//! reconnect with backoff when the socket drops (announcing the same slots again).

use std::collections::HashMap;
use std::time::Duration;

use agora_shared::ws::{ClientFrame, ClientMsg, ServerMsg};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::{Client, ClientError, Result};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A connected agent.
pub struct Session {
    url: String,
    socket: Option<Socket>,
    /// Slots last announced, re-announced after a reconnect.
    slots: Option<(u32, bool)>,
    backoff: Duration,
    /// Task id → the lease of its offer, filled into reports that do not name one.
    leases: HashMap<Uuid, Uuid>,
}

impl Client {
    /// Opens the agent's WebSocket (`/api/agents/:id/ws`) and reads the `hello`.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), agora_client::ClientError> {
    /// use agora_client::Client;
    /// use agora_shared::ws::ServerMsg;
    ///
    /// let mut agent = Client::new("http://localhost:3000");
    /// agent.register("pushed-worker", None).await?;
    /// let mut session = agent.session().await?;
    /// session.ready(2).await?;                        // up to two tasks at once
    /// loop {
    ///     match session.next().await? {
    ///         ServerMsg::TaskOffer { offer_id, task, .. } => {
    ///             session.accept(offer_id).await?;   // the task is running now
    ///             session.progress(task.id, 50, Some("half way".into())).await?;
    ///             session.complete(task.id, serde_json::json!({ "ok": true })).await?;
    ///         }
    ///         ServerMsg::TaskRevoked { task_id, reason } => eprintln!("{task_id}: {reason}"),
    ///         _ => {}                                 // acks, events
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn session(&self) -> Result<Session> {
        let (id, token) = self.agent.clone().ok_or(ClientError::NoAgent)?;
        let url = format!(
            "{}/agents/{id}/ws?token={token}",
            self.base.replacen("http", "ws", 1)
        );
        let mut s = Session {
            url,
            socket: None,
            slots: None,
            backoff: Duration::from_millis(100),
            leases: HashMap::new(),
        };
        s.reconnect().await?;
        Ok(s)
    }
}

fn ws_error(e: impl std::fmt::Display) -> ClientError {
    ClientError::Unexpected {
        status: 0,
        body: format!("websocket: {e}"),
    }
}

impl Session {
    async fn reconnect(&mut self) -> Result<()> {
        // Small buffers (a larger message still arrives whole): one process may hold many
        // sessions (the bench holds 10,000). Every frame is written at once, no Nagle delay.
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (mut socket, _) =
            tokio_tungstenite::connect_async_with_config(self.url.as_str(), Some(config), true)
                .await
                .map_err(ws_error)?;
        // The first message is the hello.
        match socket.next().await {
            Some(Ok(Message::Text(t))) if t.as_str().contains("\"hello\"") => {}
            other => return Err(ws_error(format!("expected hello, got {other:?}"))),
        }
        if let Some((slots, auto_start)) = self.slots {
            let frame = serde_json::to_string(&ClientFrame {
                reference: None,
                msg: ClientMsg::Ready { slots, auto_start },
            })
            .map_err(ws_error)?;
            socket
                .send(Message::Text(frame.into()))
                .await
                .map_err(ws_error)?;
        }
        self.socket = Some(socket);
        self.backoff = Duration::from_millis(100);
        Ok(())
    }

    /// Sends a message (reconnecting first if the socket is down).
    pub async fn send(&mut self, msg: ClientMsg) -> Result<()> {
        self.send_with_ref(msg, None).await
    }

    /// Sends a message whose `ack` will echo `reference`. A report (progress, complete, fail)
    /// that names no lease is sent with the lease of the task's offer.
    pub async fn send_with_ref(
        &mut self,
        mut msg: ClientMsg,
        reference: Option<String>,
    ) -> Result<()> {
        match &mut msg {
            ClientMsg::Ready { slots, auto_start } => self.slots = Some((*slots, *auto_start)),
            ClientMsg::Progress {
                task_id, lease_id, ..
            } => *lease_id = lease_id.or_else(|| self.leases.get(task_id).copied()),
            ClientMsg::Complete {
                task_id, lease_id, ..
            }
            | ClientMsg::Fail {
                task_id, lease_id, ..
            } => {
                let known = self.leases.remove(task_id);
                *lease_id = lease_id.or(known);
            }
            _ => {}
        }
        let frame = serde_json::to_string(&ClientFrame { reference, msg }).map_err(ws_error)?;
        loop {
            if self.socket.is_none() {
                self.reconnect_with_backoff().await;
                continue;
            }
            if let Some(s) = self.socket.as_mut() {
                if s.send(Message::Text(frame.clone().into())).await.is_ok() {
                    return Ok(());
                }
            }
            self.socket = None;
        }
    }

    async fn reconnect_with_backoff(&mut self) {
        if self.reconnect().await.is_err() {
            tokio::time::sleep(self.backoff).await;
            self.backoff = (self.backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// The next message from the server (offers, acks, revocations, events); reconnects with
    /// backoff when the socket drops.
    pub async fn next(&mut self) -> Result<ServerMsg> {
        loop {
            let Some(socket) = self.socket.as_mut() else {
                self.reconnect_with_backoff().await;
                continue;
            };
            match socket.next().await {
                Some(Ok(Message::Text(t))) => {
                    let msg = ServerMsg::from_json(t.as_str()).map_err(ws_error)?;
                    match &msg {
                        ServerMsg::TaskOffer { task, lease_id, .. } => {
                            self.leases.insert(task.id, *lease_id);
                        }
                        ServerMsg::TaskRevoked { task_id, .. } => {
                            self.leases.remove(task_id);
                        }
                        _ => {}
                    }
                    return Ok(msg);
                }
                Some(Ok(_)) => continue,
                _ => self.socket = None,
            }
        }
    }

    pub async fn ready(&mut self, slots: u32) -> Result<()> {
        self.send(ClientMsg::Ready {
            slots,
            auto_start: false,
        })
        .await
    }

    /// `ready` with `auto_start`: offers arrive started (`started: true`, no `accept`), and
    /// each `complete` or `fail` is answered by the next started offer from the same commit.
    pub async fn ready_auto_start(&mut self, slots: u32) -> Result<()> {
        self.send(ClientMsg::Ready {
            slots,
            auto_start: true,
        })
        .await
    }

    pub async fn accept(&mut self, offer_id: Uuid) -> Result<()> {
        self.send(ClientMsg::Accept { offer_id }).await
    }

    pub async fn decline(&mut self, offer_id: Uuid, reason: Option<String>) -> Result<()> {
        self.send(ClientMsg::Decline { offer_id, reason }).await
    }

    pub async fn progress(
        &mut self,
        task_id: Uuid,
        progress: u32,
        message: Option<String>,
    ) -> Result<()> {
        self.send(ClientMsg::Progress {
            task_id,
            progress,
            message,
            extend_secs: None,
            lease_id: None,
        })
        .await
    }

    pub async fn complete(&mut self, task_id: Uuid, result: serde_json::Value) -> Result<()> {
        self.send(ClientMsg::Complete {
            task_id,
            result,
            lease_id: None,
        })
        .await
    }

    pub async fn fail(&mut self, task_id: Uuid, error: String, retryable: bool) -> Result<()> {
        self.send(ClientMsg::Fail {
            task_id,
            error,
            retryable: Some(retryable),
            lease_id: None,
        })
        .await
    }
}
