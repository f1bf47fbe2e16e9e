//! Jobs and approvals: submission, the public view with counters, approving.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::lifecycle::JobStatus;
use crate::validate::{self, FieldError};
use chrono::{DateTime, Utc};

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Job {
    pub id: Uuid,
    pub title: String,
    /// Whatever the submitter wants the planner to see.
    pub job_spec: serde_json::Value,
    pub status: JobStatus,
    pub submitted_by: Option<Uuid>,
    pub approvals_required: u32,
    /// Distinct agents that approved so far.
    pub approvals: u32,
    pub priority: i32,
    /// Counters over all of the job's tasks, the plan task included. `running` counts claimed
    /// and running tasks; pending is `total - completed - failed - running`.
    pub tasks_total: u32,
    pub tasks_completed: u32,
    pub tasks_failed: u32,
    pub tasks_running: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// The job as a claim answer and a task offer carry it: what it is and where it stands, without
/// its spec (a plan task's `task_spec` is the job's spec; `GET /api/jobs/:id` has the whole job).
/// Offers fanned out to many sockets then cost the same whatever the size of the spec.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobSummary {
    pub id: Uuid,
    pub title: String,
    pub status: JobStatus,
    pub priority: i32,
}

/// `POST /api/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    /// 1 to 200 characters.
    pub title: String,
    /// Any JSON but `null`: becomes the plan task's `task_spec`.
    pub job_spec: serde_json::Value,
    /// Higher runs first (default 0).
    #[serde(default)]
    pub priority: Option<i32>,
    /// At least the server's `APPROVALS_REQUIRED`, at most 100.
    #[serde(default)]
    pub approvals_required: Option<u32>,
    /// The submitting agent; needs that agent's token.
    #[serde(default)]
    pub submitted_by: Option<Uuid>,
}

pub const MAX_TITLE: usize = 200;
pub const MAX_APPROVALS_REQUIRED: u32 = 100;
pub const MAX_PRIORITY: i32 = 1_000_000;

impl SubmitJob {
    /// Checks the body; `min_approvals` is the server's `APPROVALS_REQUIRED`.
    pub fn validate(&self, min_approvals: u32) -> Result<(), FieldError> {
        validate::text("title", &self.title, MAX_TITLE)?;
        if self.job_spec.is_null() {
            return Err(FieldError::new(
                "job_spec",
                "must be a JSON value, not null",
            ));
        }
        if let Some(p) = self.priority {
            validate::range("priority", p, -MAX_PRIORITY, MAX_PRIORITY)?;
        }
        if let Some(a) = self.approvals_required {
            validate::range(
                "approvals_required",
                a,
                min_approvals.max(1),
                MAX_APPROVALS_REQUIRED.max(min_approvals),
            )?;
        }
        Ok(())
    }
}

/// `POST /api/jobs/:id/approve`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApproveJob {
    pub agent_id: Uuid,
    #[serde(default)]
    pub comment: Option<String>,
}

pub const MAX_COMMENT: usize = 2000;

impl ApproveJob {
    pub fn validate(&self) -> Result<(), FieldError> {
        validate::optional_text("comment", self.comment.as_deref(), MAX_COMMENT)
    }
}

/// One agent's approval of one job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Approval {
    pub job_id: Uuid,
    pub agent_id: Uuid,
    pub agent_name: String,
    pub comment: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The answer to an approval: the approval and the job after it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Approved {
    pub approval: Approval,
    pub job: Job,
}

/// `POST /api/jobs/:id/cancel` (body optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CancelJob {
    #[serde(default)]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body() -> SubmitJob {
        SubmitJob {
            title: "t".into(),
            job_spec: json!({"goal": "x"}),
            priority: None,
            approvals_required: None,
            submitted_by: None,
        }
    }

    #[test]
    fn submit_validation() {
        assert!(body().validate(5).is_ok());
        let mut b = body();
        b.job_spec = serde_json::Value::Null;
        assert_eq!(b.validate(5).unwrap_err().field, "job_spec");
        let mut b = body();
        b.approvals_required = Some(2);
        assert_eq!(b.validate(5).unwrap_err().field, "approvals_required");
        b.approvals_required = Some(7);
        assert!(b.validate(5).is_ok());
        let mut b = body();
        b.title = "x".repeat(201);
        assert_eq!(b.validate(5).unwrap_err().field, "title");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<SubmitJob, _> =
            serde_json::from_value(json!({"title": "t", "job_spec": 1, "x": 1}));
        assert!(r.is_err());
    }
}
