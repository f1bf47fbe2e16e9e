//! The WebSocket protocol between agents and the server (`GET /api/agents/:id/ws`): JSON text
//! frames tagged by `type`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use chrono::{DateTime, Utc};

use crate::api::ApiErrorBody;
use crate::event::Event;
use crate::job::JobSummary;
use crate::tag_first::{self, tag_first_enum};
use crate::task::Task;

/// The protocol version the server speaks, sent in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// A frame from the agent: a message and an optional `ref` the server echoes in its `ack`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClientFrame {
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(flatten)]
    pub msg: ClientMsg,
}

tag_first_enum! {
/// Agent → server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// I can hold this many tasks at once (offers and accepted tasks together). With
    /// `auto_start`, offers arrive already started (`started: true`, no `accept`), and the
    /// answer to `complete` or `fail` is followed at once by the next task, claimed and started
    /// in the same commit: one round trip per task.
    Ready {
        slots: u32,
        #[serde(default)]
        auto_start: bool,
    },
    /// Take the offered task: it starts (`running`).
    Accept { offer_id: Uuid },
    /// Refuse the offered task (a started one too, with `auto_start`): it goes back to
    /// pending, no attempt counted.
    Decline {
        offer_id: Uuid,
        #[serde(default)]
        reason: Option<String>,
    },
    /// Progress on a held task. `lease_id` (from the offer) makes a report of an ended delivery
    /// fail with `LEASE_LOST` instead of touching a newer one; without it the agent's current
    /// lease applies. The same holds for `complete` and `fail`.
    Progress {
        task_id: Uuid,
        progress: u32,
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        extend_secs: Option<u64>,
        #[serde(default)]
        lease_id: Option<Uuid>,
    },
    Complete {
        task_id: Uuid,
        #[serde(default)]
        result: serde_json::Value,
        #[serde(default)]
        lease_id: Option<Uuid>,
    },
    Fail {
        task_id: Uuid,
        error: String,
        #[serde(default)]
        retryable: Option<bool>,
        #[serde(default)]
        lease_id: Option<Uuid>,
    },
    /// Receive events: of one job, or of everything when `job_id` is left out.
    Subscribe {
        #[serde(default)]
        job_id: Option<Uuid>,
    },
}
twin ClientMsgTwin = "ClientMsg",
#[serde(rename_all = "snake_case", deny_unknown_fields)]
}

impl ClientFrame {
    /// Reads a frame in one pass when it is written as the SDK writes it (`ref`, if any, then
    /// `type`, then the message's own fields and nothing else). `None` for anything else,
    /// well formed or not: read that with serde's derived reader, which takes the fields in
    /// any order, and look for [`unknown_field`](Self::unknown_field).
    pub fn read_plain(text: &str) -> Option<ClientFrame> {
        let (reference, msg) = tag_first::read_str(text, true).ok()?;
        Some(ClientFrame { reference, msg })
    }

    /// A field of `raw` (the frame as received) that the parsed frame does not have: serde
    /// cannot refuse unknown fields through `flatten`, so this does it, as REST bodies do. A
    /// misspelt optional field (`extend_sec`) would otherwise be ignored without a word.
    pub fn unknown_field(&self, raw: &serde_json::Value) -> Option<String> {
        let known = serde_json::to_value(self).ok()?;
        let (raw, known) = (raw.as_object()?, known.as_object()?);
        raw.keys()
            .find(|k| k.as_str() != "ref" && !known.contains_key(k.as_str()))
            .cloned()
    }
}

impl ClientMsg {
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMsg::Ready { .. } => "ready",
            ClientMsg::Accept { .. } => "accept",
            ClientMsg::Decline { .. } => "decline",
            ClientMsg::Progress { .. } => "progress",
            ClientMsg::Complete { .. } => "complete",
            ClientMsg::Fail { .. } => "fail",
            ClientMsg::Subscribe { .. } => "subscribe",
        }
    }
}

tag_first_enum! {
/// Server → agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    Hello {
        agent_id: Uuid,
        protocol: u32,
        /// How often the server pings; answer pongs or be disconnected after two.
        ping_interval_secs: f64,
        /// How long an offer waits for `accept`.
        offer_ttl_secs: f64,
    },
    /// A task claimed for this agent; `accept` or `decline` it before `expires_at`. `lease_id`
    /// names this delivery in reports. With `started` (the agent asked for `auto_start`) the
    /// task is already running: there is nothing to accept, and `expires_at` is its deadline.
    TaskOffer {
        offer_id: Uuid,
        task: Box<Task>,
        /// The job's id, title, status and priority (not its spec).
        job: Box<JobSummary>,
        #[serde(with = "crate::wire_time")]
        expires_at: DateTime<Utc>,
        lease_id: Uuid,
        /// The results of the tasks it depends on, by name (see `ClaimedTask::inputs`).
        #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
        inputs: serde_json::Map<String, serde_json::Value>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        inputs_omitted: Vec<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        started: bool,
    },
    /// The answer to a client frame: `ref` echoes the frame's, `kind` names its type.
    Ack {
        #[serde(rename = "ref")]
        reference: Option<String>,
        kind: String,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ApiErrorBody>,
        /// The task after the change, when there is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<Box<Task>>,
    },
    Event {
        event: Box<Event>,
    },
    /// A task this agent held or was offered was taken away (cancelled, timed out, recovered).
    TaskRevoked {
        task_id: Uuid,
        reason: String,
    },
}
twin ServerMsgTwin = "ServerMsg",
#[serde(rename_all = "snake_case")]
}

impl ServerMsg {
    /// Reads a frame from the server: in one pass when `type` comes first (the server always
    /// writes it first), else the derived way, with the same result and the same errors.
    pub fn from_json(text: &str) -> serde_json::Result<ServerMsg> {
        match tag_first::read_str(text, false) {
            Ok((_, msg)) => Ok(msg),
            Err(_) => serde_json::from_str(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn client_frames_parse_with_and_without_ref() {
        let f: ClientFrame = serde_json::from_value(json!({"type": "ready", "slots": 2})).unwrap();
        assert_eq!(
            f,
            ClientFrame {
                reference: None,
                msg: ClientMsg::Ready {
                    slots: 2,
                    auto_start: false
                }
            }
        );
        let id = Uuid::new_v4();
        let f: ClientFrame =
            serde_json::from_value(json!({"type": "accept", "offer_id": id, "ref": "a1"})).unwrap();
        assert_eq!(f.reference.as_deref(), Some("a1"));
        assert_eq!(f.msg, ClientMsg::Accept { offer_id: id });
        assert!(serde_json::from_value::<ClientFrame>(json!({"type": "dance"})).is_err());
        assert!(serde_json::from_value::<ClientFrame>(json!({"type": "ready"})).is_err());
    }

    #[test]
    fn unknown_fields_are_found_whatever_the_message() {
        let id = Uuid::new_v4();
        for (raw, unknown) in [
            (json!({"type": "ready", "slots": 1}), None),
            (json!({"type": "ready", "slots": 1, "ref": "r"}), None),
            (
                json!({"type": "ready", "slots": 1, "auto_start": true}),
                None,
            ),
            (
                json!({"type": "ready", "slots": 1, "auto_start": false}),
                None,
            ),
            (
                json!({"type": "ready", "slots": 1, "autostart": true}),
                Some("autostart"),
            ),
            (json!({"type": "ready", "slots": 1, "ref": null}), None),
            (
                json!({"type": "progress", "task_id": id, "progress": 5}),
                None,
            ),
            (
                json!({"type": "progress", "task_id": id, "progress": 5, "extend_sec": 9}),
                Some("extend_sec"),
            ),
            (
                json!({"type": "decline", "offer_id": id, "reason": null}),
                None,
            ),
            (
                json!({"type": "ready", "slots": 1, "hint": true}),
                Some("hint"),
            ),
        ] {
            let frame: ClientFrame = serde_json::from_value(raw.clone()).unwrap();
            assert_eq!(frame.unknown_field(&raw).as_deref(), unknown, "{raw}");
            // The one-pass reader gives the same frame or leaves it to the derived one, and
            // never takes a frame with a field the message lacks.
            let plain = ClientFrame::read_plain(&raw.to_string());
            if unknown.is_some() || raw.get("ref").is_some() {
                assert_eq!(plain, None, "{raw}");
            } else {
                assert_eq!(plain.as_ref(), Some(&frame), "{raw}");
            }
        }
    }

    #[test]
    fn frames_as_the_sdk_writes_them_are_read_in_one_pass() {
        let id = Uuid::new_v4();
        let msgs = [
            ClientMsg::Ready {
                slots: 3,
                auto_start: true,
            },
            ClientMsg::Accept { offer_id: id },
            ClientMsg::Decline {
                offer_id: id,
                reason: Some("busy".into()),
            },
            ClientMsg::Progress {
                task_id: id,
                progress: 40,
                message: None,
                extend_secs: Some(9),
                lease_id: Some(id),
            },
            ClientMsg::Complete {
                task_id: id,
                result: json!({"files": ["a", "b"], "n": 1.5, "type": "x"}),
                lease_id: None,
            },
            ClientMsg::Fail {
                task_id: id,
                error: "boom".into(),
                retryable: Some(false),
                lease_id: None,
            },
            ClientMsg::Subscribe { job_id: None },
        ];
        for msg in msgs {
            for reference in [None, Some("r1".to_string())] {
                let frame = ClientFrame {
                    reference,
                    msg: msg.clone(),
                };
                let text = serde_json::to_string(&frame).unwrap();
                assert_eq!(
                    ClientFrame::read_plain(&text).as_ref(),
                    Some(&frame),
                    "{text}"
                );
            }
        }
        // Out of order, misspelt, two tags, trailing text, not an object: left to serde.
        for text in [
            r#"{"slots": 1, "type": "ready"}"#,
            r#"{"type": "ready", "ref": "a", "slots": 1}"#,
            r#"{"type": "ready", "slots": 1, "type": "ready"}"#,
            r#"{"type": "ready", "slots": 1, "slots": 2}"#,
            r#"{"type": "ready", "slot": 1}"#,
            r#"{"type": "dance"}"#,
            r#"{"type": "ready", "slots": 1} x"#,
            r#"{"ref": 5, "type": "ready", "slots": 1}"#,
            r#"[1]"#,
            r#"{"#,
        ] {
            assert_eq!(ClientFrame::read_plain(text), None, "{text}");
        }
    }

    #[test]
    fn server_messages_are_tagged() {
        let m = ServerMsg::TaskRevoked {
            task_id: Uuid::nil(),
            reason: "x".into(),
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["type"], "task_revoked");
        let back: ServerMsg = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn server_messages_read_in_one_pass_as_the_derived_reader_reads_them() {
        let id = Uuid::new_v4();
        let task: Task = serde_json::from_value(json!({
            "id": id, "job_id": Uuid::nil(), "index": 2, "type": "work",
            "task_spec": {"type": "nested", "n": [1, 2]}, "status": "running", "attempts": 1,
            "max_retries": 3, "timeout_secs": 60, "agent_id": id,
            "claimed_at": "2026-12-07T10:00:00.123Z", "started_at": "2026-12-07T10:00:00Z",
            "deadline": null, "progress": 0, "progress_message": null, "result": null,
            "error": null, "created_at": "2026-12-07T09:00:00Z",
            "updated_at": "2026-12-07T10:00:00.123456Z", "finished_at": null, "depends_on": [1],
        }))
        .unwrap();
        let job: JobSummary = serde_json::from_value(json!({
            "id": id, "title": "t", "status": "executing", "priority": 0
        }))
        .unwrap();
        let msgs = [
            ServerMsg::Hello {
                agent_id: id,
                protocol: PROTOCOL_VERSION,
                ping_interval_secs: 20.0,
                offer_ttl_secs: 30.5,
            },
            ServerMsg::TaskOffer {
                offer_id: id,
                task: Box::new(task.clone()),
                job: Box::new(job),
                expires_at: task.created_at,
                lease_id: id,
                inputs: [("a".to_string(), json!({"x": 1}))].into_iter().collect(),
                inputs_omitted: vec!["b".into()],
                started: true,
            },
            ServerMsg::Ack {
                reference: Some("c1".into()),
                kind: "complete".into(),
                ok: true,
                error: None,
                task: Some(Box::new(task)),
            },
            ServerMsg::Ack {
                reference: None,
                kind: "unknown".into(),
                ok: false,
                error: Some(ApiErrorBody {
                    code: crate::api::ErrorCode::ValidationError,
                    message: "m".into(),
                    field: Some("slots".into()),
                    details: None,
                }),
                task: None,
            },
            ServerMsg::TaskRevoked {
                task_id: id,
                reason: "timed out".into(),
            },
        ];
        for m in msgs {
            let text = serde_json::to_string(&m).unwrap();
            let (_, fast): (_, ServerMsg) = tag_first::read_str(&text, false).unwrap();
            assert_eq!(fast, m, "{text}");
            assert_eq!(ServerMsg::from_json(&text).unwrap(), m);
            // With `type` last, the derived reader takes it.
            let mut v: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&text).unwrap();
            let tag = v.shift_remove("type").unwrap();
            v.insert("type".into(), tag);
            let moved = serde_json::to_string(&v).unwrap();
            assert!(tag_first::read_str::<ServerMsg>(&moved, false).is_err());
            assert_eq!(ServerMsg::from_json(&moved).unwrap(), m);
        }
        assert!(ServerMsg::from_json(r#"{"type": "task_revoked", "task_id": 1}"#).is_err());
    }
}
