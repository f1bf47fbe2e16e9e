//! An event as its readers send it: the SSE message and the WebSocket `event` frame, encoded
//! once, when the first reader asks, and shared by every reader after it (500 SSE readers no
//! longer serialise the same event 500 times). The store publishes [`Published`] events; a
//! reader that needs the event itself reads through it (`Deref`).

use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use agora_shared::Event;
use axum::body::Bytes;
use axum::extract::ws::Utf8Bytes;

/// What the store's broadcast carries: a committed event, shared by its readers.
pub type Live = Arc<Published>;

/// An event on its way to live readers.
pub struct Published {
    event: Event,
    frames: OnceLock<(Bytes, Utf8Bytes)>,
}

impl Published {
    pub fn new(event: Event) -> Arc<Published> {
        Arc::new(Published {
            event,
            frames: OnceLock::new(),
        })
    }

    fn frames(&self) -> &(Bytes, Utf8Bytes) {
        self.frames.get_or_init(|| {
            let json = serde_json::to_string(&self.event).unwrap_or_default();
            let ws = format!("{{\"type\":\"event\",\"event\":{json}}}");
            (sse_message(self.event.id, &json), Utf8Bytes::from(ws))
        })
    }

    /// `id: <id>\ndata: <event JSON>\n\n`, shared.
    pub fn sse(&self) -> Bytes {
        self.frames().0.clone()
    }

    /// The WebSocket frame `{"type": "event", "event": …}`, shared.
    pub fn ws(&self) -> Utf8Bytes {
        self.frames().1.clone()
    }
}

impl Deref for Published {
    type Target = Event;

    fn deref(&self) -> &Event {
        &self.event
    }
}

/// The SSE message of an event read from the table (a replay: one reader, no sharing).
pub fn sse_event(e: &Event) -> Bytes {
    sse_message(e.id, &serde_json::to_string(e).unwrap_or_default())
}

/// An SSE message with an id and one line of JSON data (JSON text holds no raw newline).
fn sse_message(id: i64, json: &str) -> Bytes {
    Bytes::from(format!("id: {id}\ndata: {json}\n\n"))
}

/// A named SSE message without an id (`resync`).
pub fn sse_named(name: &str, json: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
}

/// An SSE comment: keeps an idle stream (and the proxies on its way) open.
pub const SSE_KEEP_ALIVE: &[u8] = b":\n\n";

#[cfg(test)]
mod tests {
    use super::*;
    use agora_shared::ws::ServerMsg;

    fn event() -> Event {
        serde_json::from_value(serde_json::json!({
            "id": 42, "job_id": null, "task_id": null, "agent_id": null,
            "kind": "agent.registered",
            "data": {"name": "line\nbreak \"quoted\"", "capabilities": ["z", "a"]},
            "at": "2026-11-28T12:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn the_shared_frames_are_what_each_reader_would_have_written() {
        let p = Published::new(event());
        let ws = ServerMsg::Event {
            event: Box::new(event()),
        };
        assert_eq!(p.ws().as_str(), serde_json::to_string(&ws).unwrap());
        let sse = p.sse();
        let text = std::str::from_utf8(&sse).unwrap();
        assert_eq!(text, sse_event(&event()));
        let data = text
            .strip_prefix("id: 42\ndata: ")
            .and_then(|t| t.strip_suffix("\n\n"))
            .unwrap();
        assert!(!data.contains('\n'), "one data line: {text:?}");
        assert_eq!(serde_json::from_str::<Event>(data).unwrap(), event());
        // Shared, not re-encoded: the same buffer each time.
        assert_eq!(p.sse().as_ptr(), sse.as_ptr());
        assert_eq!(p.ws().as_str().as_ptr(), p.ws().as_str().as_ptr());
    }
}
