//! Jobs and approvals: submission, the public view with counters, approving.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::lifecycle::JobStatus;
use crate::review::{Stage, Verdict};
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
    /// When a job still waiting for approvals fails with `approval expired`; `null`: never.
    #[serde(default)]
    pub approval_expires_at: Option<DateTime<Utc>>,
    /// Distinct reviewers (other than the planner) who must approve a plan before its work
    /// tasks are created; 0: no plan review.
    #[serde(default)]
    pub plan_approvals_required: u32,
    /// Approvals of the current plan so far.
    #[serde(default)]
    pub plan_approvals: u32,
    /// Plans rejected so far (each sent the job back to `accepted` for a new plan).
    #[serde(default)]
    pub plans_rejected: u32,
}

impl Job {
    /// A plan has landed and waits for its reviewers: the job is `ready` but has no work tasks
    /// yet.
    pub fn plan_under_review(&self) -> bool {
        crate::review::plan_under_review(
            self.status,
            self.plan_approvals,
            self.plan_approvals_required,
        )
    }
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
    /// Seconds the job may wait for its approvals before it fails with `approval expired`
    /// (default: the server's `APPROVAL_TTL_SECS`; 0: never).
    #[serde(default)]
    pub approval_ttl_secs: Option<u64>,
    /// Reviewers who must approve the plan before work starts (default: the server's
    /// `PLAN_APPROVALS_REQUIRED`; at most 100).
    #[serde(default)]
    pub plan_approvals_required: Option<u32>,
    /// Makes the submit safe to retry: the same key within `IDEMPOTENCY_TTL_SECS` answers the
    /// job it first created (200) instead of creating another; the same key with a different
    /// body is 409 `IDEMPOTENCY_CONFLICT`. 1 to 200 characters.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

pub const MAX_IDEMPOTENCY_KEY: usize = 200;

pub const MAX_COMMENT: usize = 2000;
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
        if let Some(k) = &self.idempotency_key {
            validate::text("idempotency_key", k, MAX_IDEMPOTENCY_KEY)?;
        }
        if let Some(t) = self.approval_ttl_secs {
            validate::range("approval_ttl_secs", t, 0, crate::MAX_APPROVAL_TTL_SECS)?;
        }
        if let Some(p) = self.plan_approvals_required {
            validate::range("plan_approvals_required", p, 0, MAX_APPROVALS_REQUIRED)?;
        }
        Ok(())
    }
}

/// One vote on a job or on its plan: an approval (with an optional comment) or a rejection
/// (with its reason), by an agent or by a person through an operator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Approval {
    pub job_id: Uuid,
    /// The voting agent; `null` for a person.
    pub agent_id: Option<Uuid>,
    /// The agent's name, or the person's.
    pub agent_name: String,
    /// What makes voters distinct: the agent's id, or `human:<name>` for a person.
    #[serde(default)]
    pub voter: String,
    /// A person voting through an operator, not an agent.
    #[serde(default)]
    pub person: bool,
    #[serde(default)]
    pub verdict: Verdict,
    /// The job itself, or its plan.
    #[serde(default)]
    pub stage: Stage,
    /// Plan review: which plan (1 for the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_round: Option<u32>,
    /// An approval's comment.
    pub comment: Option<String>,
    /// A rejection's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The answer to a vote (approve or reject, job or plan): the vote and the job after it.
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
            approval_ttl_secs: None,
            idempotency_key: None,
            plan_approvals_required: None,
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
        let mut b = body();
        b.approval_ttl_secs = Some(crate::MAX_APPROVAL_TTL_SECS + 1);
        assert_eq!(b.validate(5).unwrap_err().field, "approval_ttl_secs");
        let mut b = body();
        b.plan_approvals_required = Some(101);
        assert_eq!(b.validate(5).unwrap_err().field, "plan_approvals_required");
        b.plan_approvals_required = Some(2);
        assert!(b.validate(5).is_ok());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<SubmitJob, _> =
            serde_json::from_value(json!({"title": "t", "job_spec": 1, "x": 1}));
        assert!(r.is_err());
    }
}
