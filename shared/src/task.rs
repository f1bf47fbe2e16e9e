//! Tasks: the public view and the bodies of claim, start, progress, complete and fail.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::job::JobSummary;
use crate::task_rules::{TaskStatus, TaskType};
use crate::validate::{self, FieldError};
use chrono::{DateTime, Utc};

/// A task as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Task {
    pub id: Uuid,
    pub job_id: Uuid,
    /// 0 is the plan task; work tasks are 1..=n in plan order.
    pub index: u32,
    #[serde(rename = "type")]
    pub task_type: TaskType,
    pub task_spec: serde_json::Value,
    pub status: TaskStatus,
    /// Failed attempts so far (failures, timeouts, lost agents).
    pub attempts: u32,
    /// Deliveries so far: every REST claim and WebSocket offer, finished or not. At
    /// `MAX_DELIVERIES` without finishing the task fails for good (`delivery limit reached`).
    #[serde(default)]
    pub deliveries: u32,
    pub max_retries: u32,
    pub timeout_secs: u64,
    pub agent_id: Option<Uuid>,
    /// The name of `agent_id`, in the task lists (`GET /api/tasks`, `GET /api/jobs/:id/tasks`)
    /// so that people read names; absent elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    #[serde(default, with = "crate::wire_time::option")]
    pub claimed_at: Option<DateTime<Utc>>,
    #[serde(default, with = "crate::wire_time::option")]
    pub started_at: Option<DateTime<Utc>>,
    /// A claimed or running task past this counts as a failed attempt.
    #[serde(default, with = "crate::wire_time::option")]
    pub deadline: Option<DateTime<Utc>>,
    /// When the current delivery's lease runs out: an offer or an unstarted claim then goes back
    /// to pending; a started task counts a failed attempt (its running deadline, or sooner with
    /// `heartbeat_secs`).
    #[serde(default, with = "crate::wire_time::option")]
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Set at start: the lease of the running task lasts this long from each progress or heartbeat.
    #[serde(default)]
    pub heartbeat_secs: Option<u64>,
    /// A task waiting out its retry backoff is not claimable before this.
    #[serde(default, with = "crate::wire_time::option")]
    pub available_at: Option<DateTime<Utc>>,
    /// Its name in the plan (`depends_on` and `inputs` use it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The job's tasks (by `index`) that must complete before this one is claimable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<u32>,
    /// How many of `depends_on` have not completed yet (0: ready as far as they go).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unmet_dependencies: u32,
    /// Capabilities an agent needs all of to get this task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    /// Its exclusive key: at most one task per key (or `KEY_LIMITS`) is claimed or running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Why a pending task cannot be handed out now, when it is for want of an agent: "waiting
    /// for an agent with: rust" (no online agent has every capability of `requires`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    pub progress: u32,
    pub progress_message: Option<String>,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    #[serde(with = "crate::wire_time")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::wire_time")]
    pub updated_at: DateTime<Utc>,
    #[serde(default, with = "crate::wire_time::option")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// `POST /api/tasks/claim`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClaimTask {
    pub agent_id: Uuid,
    /// Long-poll: wait up to this many seconds (0 to 60) for a task when none is pending.
    #[serde(default)]
    pub wait_secs: Option<u32>,
    /// Makes the claim idempotent: the same id from the same agent while its lease lives answers
    /// the same task and lease, with no second delivery (for a retry after a lost answer).
    #[serde(default)]
    pub request_id: Option<String>,
}

pub const MAX_WAIT_SECS: u32 = 60;

impl ClaimTask {
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(w) = self.wait_secs {
            validate::range("wait_secs", w, 0, MAX_WAIT_SECS)?;
        }
        if let Some(r) = &self.request_id {
            validate::text("request_id", r, crate::lease::MAX_REQUEST_ID)?;
        }
        Ok(())
    }
}

/// A claimed task with its job's summary, so the agent has the context in one answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimedTask {
    pub task: Task,
    /// The job's id, title, status and priority (not its spec).
    pub job: JobSummary,
    /// This delivery. Name it in every report (`lease_id`): a report on a lease that has ended
    /// gets 409 `LEASE_LOST` and writes nothing. It runs out at `task.lease_expires_at` unless
    /// the task is started.
    pub lease_id: Uuid,
    /// The results of the tasks it depends on, by their names (or plan positions when unnamed),
    /// in `depends_on` order. Results past `MAX_SPEC_BYTES` in total are left out and named in
    /// `inputs_omitted` (read them with `GET /api/jobs/:id/tasks`).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub inputs: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs_omitted: Vec<String>,
}

/// The answer to `POST /api/tasks/:id/complete?next=true` (and `/fail?next=true`): the task
/// as it ended, and the agent's next task, claimed in the same commit (`null` when nothing is
/// pending for it). One round trip per task for a busy agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FinishedWithNext {
    pub task: Task,
    pub next: Option<ClaimedTask>,
}

/// `?next=true` on complete and fail.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct NextQuery {
    /// Claim the agent's next task in the same commit and answer with it.
    #[serde(default)]
    pub next: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// `POST /api/tasks/:id/start` (the body may be left out).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StartTask {
    /// The lease of the claim being started.
    #[serde(default)]
    pub lease_id: Option<Uuid>,
    /// Ask for faster rescue: the running task's lease lasts this many seconds (1 to 86400) from
    /// the start and from each progress or heartbeat; silence past it counts a failed attempt.
    /// Without it the lease is the task's running deadline, however long the agent is silent.
    #[serde(default)]
    pub heartbeat_secs: Option<u64>,
}

impl StartTask {
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(h) = self.heartbeat_secs {
            validate::range(
                "heartbeat_secs",
                h,
                crate::lease::MIN_HEARTBEAT_SECS,
                crate::lease::MAX_HEARTBEAT_SECS,
            )?;
        }
        Ok(())
    }
}

/// `POST /api/tasks/:id/progress`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProgressTask {
    /// 0 to 100.
    pub progress: u32,
    /// What is happening now, in a line (up to 2000 characters).
    #[serde(default)]
    pub message: Option<String>,
    /// Push the deadline to now + this many seconds (at most the task's `timeout_secs`).
    #[serde(default)]
    pub extend_secs: Option<u64>,
    /// The delivery this report belongs to (from the claim answer or the offer).
    #[serde(default)]
    pub lease_id: Option<Uuid>,
}

pub const MAX_MESSAGE: usize = 2000;
pub const MAX_ERROR: usize = 10_000;

impl ProgressTask {
    pub fn validate(&self) -> Result<(), FieldError> {
        validate::range("progress", self.progress, 0, 100)?;
        validate::optional_text("message", self.message.as_deref(), MAX_MESSAGE)?;
        if let Some(e) = self.extend_secs {
            validate::range("extend_secs", e, 1, u32::MAX as u64)?;
        }
        Ok(())
    }
}

/// `POST /api/tasks/:id/complete`. A plan task's result must hold `task_specs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CompleteTask {
    /// What the task produced: any JSON value (up to MAX_SPEC_BYTES).
    #[serde(default)]
    pub result: serde_json::Value,
    /// The delivery this report belongs to (from the claim answer or the offer).
    #[serde(default)]
    pub lease_id: Option<Uuid>,
}

/// `POST /api/tasks/:id/fail`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FailTask {
    /// What went wrong (1 to 10000 characters).
    pub error: String,
    /// `false` fails the task for good at once (default `true`).
    #[serde(default)]
    pub retryable: Option<bool>,
    /// The delivery this report belongs to (from the claim answer or the offer).
    #[serde(default)]
    pub lease_id: Option<Uuid>,
}

impl FailTask {
    pub fn validate(&self) -> Result<(), FieldError> {
        validate::text("error", &self.error, MAX_ERROR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn progress_bounds() {
        let p = ProgressTask {
            progress: 101,
            message: None,
            extend_secs: None,
            lease_id: None,
        };
        assert_eq!(p.validate().unwrap_err().field, "progress");
        let p = ProgressTask {
            progress: 50,
            message: None,
            extend_secs: Some(0),
            lease_id: None,
        };
        assert_eq!(p.validate().unwrap_err().field, "extend_secs");
    }

    #[test]
    fn claim_wait_bounds() {
        let c = ClaimTask {
            agent_id: Uuid::nil(),
            wait_secs: Some(61),
            request_id: None,
        };
        assert_eq!(c.validate().unwrap_err().field, "wait_secs");
        let c = ClaimTask {
            agent_id: Uuid::nil(),
            wait_secs: None,
            request_id: Some("r".repeat(129)),
        };
        assert_eq!(c.validate().unwrap_err().field, "request_id");
        let s = StartTask {
            lease_id: None,
            heartbeat_secs: Some(0),
        };
        assert_eq!(s.validate().unwrap_err().field, "heartbeat_secs");
    }

    #[test]
    fn task_type_is_named_type_on_the_wire() {
        let v = json!({"result": {"task_specs": []}});
        let c: CompleteTask = serde_json::from_value(v).unwrap();
        assert!(c.result.get("task_specs").is_some());
        let f: Result<FailTask, _> = serde_json::from_value(json!({"retryable": false}));
        assert!(f.is_err(), "error is required");
    }
}
