//! A server-sent event feed that survives disconnects: it remembers the last event id and
//! reconnects with `Last-Event-ID`, so the caller sees every event once, in order.

use std::pin::Pin;
use std::time::Duration;

use agora_shared::Event;
use futures::{Stream, StreamExt};
use uuid::Uuid;

use crate::{Client, ClientError, Result};

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// Events of one job (or of everything), resumable across reconnects.
pub struct EventStream {
    client: Client,
    job: Option<Uuid>,
    last_id: i64,
    body: Option<Body>,
    buf: String,
    /// Reconnect delay, doubled on each failure up to 5 s and reset by a message.
    backoff: Duration,
}

impl Client {
    /// Follows events after `after` (0 replays everything) for one job or, with `None`, all.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), agora_client::ClientError> {
    /// let client = agora_client::Client::new("http://localhost:3000");
    /// let mut feed = client.event_stream(None, 0);
    /// loop {
    ///     let event = feed.next().await?;             // each event once, in id order
    ///     println!("#{} {}", event.id, event.kind().as_str());
    /// }
    /// # }
    /// ```
    pub fn event_stream(&self, job: Option<Uuid>, after: i64) -> EventStream {
        EventStream {
            client: self.clone(),
            job,
            last_id: after,
            body: None,
            buf: String::new(),
            backoff: Duration::from_millis(100),
        }
    }
}

impl EventStream {
    /// The id of the last event handed out.
    pub fn last_id(&self) -> i64 {
        self.last_id
    }

    async fn connect(&mut self) -> Result<()> {
        let path = match self.job {
            Some(j) => format!("/jobs/{j}/stream"),
            None => "/events".to_string(),
        };
        let res = self
            .client
            .http
            .get(format!("{}{path}", self.client.base))
            .header("Last-Event-ID", self.last_id.to_string())
            .send()
            .await?;
        let status = res.status().as_u16();
        if status != 200 {
            let body = res.text().await.unwrap_or_default();
            return Err(ClientError::Unexpected { status, body });
        }
        self.body = Some(Box::pin(res.bytes_stream()));
        self.buf.clear();
        Ok(())
    }

    /// The next event. Reconnects (with backoff) when the stream ends or breaks, resuming after
    /// the last event handed out; fails only when the server refuses the stream.
    pub async fn next(&mut self) -> Result<Event> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut data = String::new();
                let mut named = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    } else if line.starts_with("event:") {
                        named = true;
                    }
                }
                // `resync` (and keep-alive comments) carry no event: the reconnect repairs.
                if named {
                    self.body = None;
                    continue;
                }
                if data.is_empty() {
                    continue;
                }
                let event: Event =
                    serde_json::from_str(&data).map_err(|_| ClientError::Unexpected {
                        status: 200,
                        body: data.clone(),
                    })?;
                if event.id <= self.last_id {
                    continue;
                }
                self.last_id = event.id;
                self.backoff = Duration::from_millis(100);
                return Ok(event);
            }
            match self.body.as_mut() {
                Some(body) => match body.next().await {
                    Some(Ok(chunk)) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                    _ => self.body = None,
                },
                None => match self.connect().await {
                    Ok(()) => {}
                    Err(e @ ClientError::Unexpected { .. }) => return Err(e),
                    Err(_) => {
                        tokio::time::sleep(self.backoff).await;
                        self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
                    }
                },
            }
        }
    }
}
