//! The approval gate's rules: who may vote on a job or on its plan, what a vote is, what a
//! rejected plan leads to, and what the next planner is told. Pure functions; the store asks
//! them and writes what they answer.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

use crate::agent::MAX_AGENT_NAME;
use crate::job::MAX_COMMENT;
use crate::lifecycle::{JobEvent, JobStatus};
use crate::validate::{self, FieldError};

/// What an operator may grant an agent (`PUT /api/agents/:id/roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May approve and reject jobs and plans when `APPROVERS=role`.
    Approver,
}

impl Role {
    pub const ALL: [Role; 1] = [Role::Approver];

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Approver => "approver",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role '{s}'; the roles are: approver"))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `APPROVERS`: who may vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ApproverPolicy {
    /// Any registered agent (but never the author of what is reviewed).
    #[default]
    Any,
    /// Only agents holding the `approver` role.
    Role,
}

/// The approval gate's settings on this server, as `GET /api/health` and the MCP `whoami` tool
/// report them (a job may ask its own `approvals_required`, `approval_ttl_secs` and
/// `plan_approvals_required`; the job shows what it asked).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GateSettings {
    /// Distinct approvals a job needs (`APPROVALS_REQUIRED`, also the least a job may ask).
    pub approvals_required: u32,
    /// Plan approvals a plan needs before its work is created (`PLAN_APPROVALS_REQUIRED`; 0:
    /// no plan review).
    pub plan_approvals_required: u32,
    /// Who may vote (`APPROVERS`).
    pub approvers: ApproverPolicy,
    /// Seconds an agent waits between two votes on jobs (`APPROVAL_COOLDOWN_SECS`).
    pub approval_cooldown_secs: u64,
    /// Seconds a job may wait for its approvals (`APPROVAL_TTL_SECS`; 0: no limit).
    pub approval_ttl_secs: u64,
    /// Rejected plans after which a job fails (`MAX_REPLANS`).
    pub max_replans: u32,
}

impl FromStr for ApproverPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "any" => Ok(ApproverPolicy::Any),
            "role" => Ok(ApproverPolicy::Role),
            other => Err(format!("APPROVERS must be 'any' or 'role', got '{other}'")),
        }
    }
}

/// What a vote is about: the job itself (the approval gate) or the plan written for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    #[default]
    Job,
    Plan,
}

impl Stage {
    /// What the author of the reviewed thing is called in messages.
    fn author(self) -> &'static str {
        match self {
            Stage::Job => "the job's submitter",
            Stage::Plan => "the plan's author",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Stage::Job => "job",
            Stage::Plan => "plan",
        }
    }
}

/// Approve or reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    #[default]
    Approve,
    Reject,
}

impl Verdict {
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Reject => "reject",
        }
    }
}

impl FromStr for Verdict {
    type Err = crate::UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "approve" => Ok(Verdict::Approve),
            "reject" => Ok(Verdict::Reject),
            other => Err(crate::UnknownStatus(other.to_string())),
        }
    }
}

/// Who votes: an agent (with its token) or a person (through an operator's `ADMIN_TOKEN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Voter {
    Agent(Uuid),
    Person(String),
}

/// The prefix of a person's voter key.
pub const PERSON_PREFIX: &str = "human:";

impl Voter {
    /// The key that makes voters distinct: the agent's id, or `human:<name>`.
    pub fn key(&self) -> String {
        match self {
            Voter::Agent(id) => id.to_string(),
            Voter::Person(name) => format!("{PERSON_PREFIX}{name}"),
        }
    }

    pub fn agent(&self) -> Option<Uuid> {
        match self {
            Voter::Agent(id) => Some(*id),
            Voter::Person(_) => None,
        }
    }
}

/// How a voter is named in errors and in what the next planner reads: an agent by its name, a
/// person by its voter key `human:<name>` (so a person is never mistaken for an agent).
pub fn voter_label(voter_key: &str, name: &str) -> String {
    if voter_key.starts_with(PERSON_PREFIX) {
        voter_key.to_string()
    } else {
        name.to_string()
    }
}

/// The voter of a vote body: exactly one of `agent_id` and `person`.
fn voter_of(agent_id: Option<Uuid>, person: Option<&str>) -> Result<Voter, FieldError> {
    match (agent_id, person) {
        (Some(id), None) => Ok(Voter::Agent(id)),
        (None, Some(name)) => {
            validate::text("person", name, MAX_AGENT_NAME)?;
            Ok(Voter::Person(name.trim().to_string()))
        }
        (Some(_), Some(_)) => Err(FieldError::new(
            "person",
            "give agent_id (an agent votes with its token) or person (an operator votes as a \
             named person with ADMIN_TOKEN), not both",
        )),
        (None, None) => Err(FieldError::new(
            "agent_id",
            "is required: the voting agent's id (or 'person' for an operator voting as a person)",
        )),
    }
}

/// `POST /api/jobs/:id/approve` and `POST /api/jobs/:id/plan/approve`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApproveJob {
    /// The approving agent; needs its token.
    #[serde(default)]
    pub agent_id: Option<Uuid>,
    /// A person approving through an operator (needs `ADMIN_TOKEN` when it is set); counts as
    /// the one voter `human:<person>`.
    #[serde(default)]
    pub person: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
}

impl ApproveJob {
    /// Checks the body and names its voter.
    pub fn validate(&self) -> Result<Voter, FieldError> {
        validate::optional_text("comment", self.comment.as_deref(), MAX_COMMENT)?;
        voter_of(self.agent_id, self.person.as_deref())
    }
}

/// `POST /api/jobs/:id/reject` and `POST /api/jobs/:id/plan/reject`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RejectJob {
    /// The rejecting agent; needs its token.
    #[serde(default)]
    pub agent_id: Option<Uuid>,
    /// A person rejecting through an operator (needs `ADMIN_TOKEN` when it is set).
    #[serde(default)]
    pub person: Option<String>,
    /// Why: shown in the job's error, the event and the approvals list (and, for a plan, handed
    /// to the next planner).
    pub reason: String,
}

impl RejectJob {
    /// Checks the body and names its voter.
    pub fn validate(&self) -> Result<Voter, FieldError> {
        validate::text("reason", &self.reason, MAX_COMMENT)?;
        voter_of(self.agent_id, self.person.as_deref())
    }
}

/// Where a vote is cast, under `/api`: `/jobs/:id/approve`, `/jobs/:id/reject`,
/// `/jobs/:id/plan/approve` or `/jobs/:id/plan/reject`.
pub fn vote_path(job: Uuid, stage: Stage, verdict: Verdict) -> String {
    let stage = match stage {
        Stage::Job => "",
        Stage::Plan => "plan/",
    };
    format!("/jobs/{job}/{stage}{}", verdict.as_str())
}

/// A vote as a client sends it (the SDK, the dashboard): the body of an approval or of a
/// rejection, whichever the verdict is, built from one set of inputs.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum VoteBody {
    Approve(ApproveJob),
    Reject(RejectJob),
}

impl VoteBody {
    /// `text` is the approval's comment or the rejection's reason (a rejection without one is
    /// refused by [`VoteBody::validate`]).
    pub fn new(
        verdict: Verdict,
        agent_id: Option<Uuid>,
        person: Option<String>,
        text: Option<String>,
    ) -> VoteBody {
        match verdict {
            Verdict::Approve => VoteBody::Approve(ApproveJob {
                agent_id,
                person,
                comment: text,
            }),
            Verdict::Reject => VoteBody::Reject(RejectJob {
                agent_id,
                person,
                reason: text.unwrap_or_default(),
            }),
        }
    }

    pub fn verdict(&self) -> Verdict {
        match self {
            VoteBody::Approve(_) => Verdict::Approve,
            VoteBody::Reject(_) => Verdict::Reject,
        }
    }

    /// Checks the body as the server will, and names its voter.
    pub fn validate(&self) -> Result<Voter, FieldError> {
        match self {
            VoteBody::Approve(b) => b.validate(),
            VoteBody::Reject(b) => b.validate(),
        }
    }
}

/// `PUT /api/agents/:id/roles`: the agent's whole set of roles (an empty list removes them).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetRoles {
    pub roles: Vec<Role>,
}

/// Why a voter may not vote (HTTP 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoteRefused {
    #[error("APPROVERS=role: agent {0} does not hold the 'approver' role; an operator grants it with PUT /api/agents/{0}/roles")]
    NotAnApprover(Uuid),
    #[error("{} may not vote on its own {}", .0.author(), .0.noun())]
    SelfApproval(Stage),
}

/// Whether `voter` may vote at `stage`: the policy's role (agents only: a person votes through
/// an operator, who is trusted), and never the author (the job's submitter, or the plan's
/// planner).
pub fn may_vote(
    policy: ApproverPolicy,
    stage: Stage,
    voter: &Voter,
    roles: &[Role],
    author: Option<Uuid>,
) -> Result<(), VoteRefused> {
    let Voter::Agent(id) = voter else {
        return Ok(());
    };
    if author == Some(*id) {
        return Err(VoteRefused::SelfApproval(stage));
    }
    if policy == ApproverPolicy::Role && !roles.contains(&Role::Approver) {
        return Err(VoteRefused::NotAnApprover(*id));
    }
    Ok(())
}

/// Whether a job's plan waits for its reviewers: the job is `ready` (its plan landed) and the
/// plan has fewer approvals than it needs. Its work tasks do not exist until it has them.
pub fn plan_under_review(status: JobStatus, approvals: u32, required: u32) -> bool {
    status == JobStatus::Ready && approvals < required
}

/// When an agent that last voted at `last_ms` may vote again (ms), after `cooldown_secs`.
pub fn cooldown_ends(last_ms: i64, cooldown_secs: u64) -> i64 {
    last_ms.saturating_add(
        i64::try_from(cooldown_secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000),
    )
}

/// Whether an agent's vote at `stage` waits out and restarts the approval cooldown. Votes on
/// the job do (approvals and rejections alike: the cooldown bounds how many jobs one agent can
/// push through or stop); plan reviews and people's votes do not.
pub fn vote_takes_cooldown(stage: Stage, voter: &Voter) -> bool {
    stage == Stage::Job && matches!(voter, Voter::Agent(_))
}

/// The job event a rejected plan causes: back to `accepted` for a new plan while fewer than
/// `max_replans` plans were rejected before, failure after that. `rejected` counts this one.
pub fn plan_rejected(rejected: u32, max_replans: u32) -> JobEvent {
    JobEvent::PlanRejected {
        replan: rejected <= max_replans,
    }
}

/// One person's or agent's reason for rejecting a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RejectionReason {
    /// The reviewer's name (`human:<name>` for a person).
    pub by: String,
    pub reason: String,
}

/// A plan that reviewers rejected, as the next planner sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RejectedPlan {
    /// 1 for the first plan.
    pub round: u32,
    /// The planner's name.
    pub planner: Option<String>,
    /// The plan task's result, as it was submitted.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub plan: serde_json::Value,
    pub reasons: Vec<RejectionReason>,
}

/// The `task_spec` of a plan task after a rejected plan: the job's spec, and every rejected
/// plan with its reasons, so the next planner can do better. (The first plan task's spec is the
/// job's spec itself.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplanSpec {
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub job_spec: serde_json::Value,
    /// Which plan this is: 2 after the first rejection.
    pub round: u32,
    /// Oldest first.
    pub rejected_plans: Vec<RejectedPlan>,
}

impl ReplanSpec {
    /// The spec of plan `round`'s task from every earlier plan (`(round, planner, result)`) and
    /// every rejection of them (`(round, reason)`), in any order.
    pub fn build(
        job_spec: serde_json::Value,
        round: u32,
        plans: Vec<(u32, Option<String>, serde_json::Value)>,
        rejections: Vec<(u32, RejectionReason)>,
    ) -> ReplanSpec {
        let mut rejected_plans: Vec<RejectedPlan> = plans
            .into_iter()
            .filter(|(r, _, _)| *r < round)
            .map(|(round, planner, plan)| RejectedPlan {
                round,
                planner,
                plan,
                reasons: Vec::new(),
            })
            .collect();
        rejected_plans.sort_by_key(|p| p.round);
        for (r, reason) in rejections {
            if let Some(p) = rejected_plans.iter_mut().find(|p| p.round == r) {
                p.reasons.push(reason);
            }
        }
        ReplanSpec {
            job_spec,
            round,
            rejected_plans,
        }
    }
}

/// The reason a rejection writes into a failed job: `rejected by <name>: <reason>`.
pub fn rejection_error(by: &str, reason: &str) -> String {
    format!("rejected by {by}: {reason}")
}

/// The error of a job whose last allowed plan was rejected.
pub fn plans_exhausted_error(rejected: u32, by: &str, reason: &str) -> String {
    format!("plan rejected {rejected} times; the last by {by}: {reason}")
}

/// The error of a job whose approval window ran out.
pub const APPROVAL_EXPIRED: &str = "approval expired";

/// When a job submitted at `created_ms` stops taking approvals (`None`: never). The job's own
/// TTL wins over the server's; 0 means none.
pub fn approval_deadline(created_ms: i64, job_ttl: Option<u64>, server_ttl: u64) -> Option<i64> {
    let ttl = job_ttl.unwrap_or(server_ttl);
    (ttl > 0).then(|| {
        created_ms.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX).saturating_mul(1000))
    })
}

/// Longest approval TTL a job may ask: a year.
pub const MAX_APPROVAL_TTL_SECS: u64 = 31_536_000;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn agent(n: u128) -> Voter {
        Voter::Agent(Uuid::from_u128(n))
    }

    #[test]
    fn voters_are_agents_or_people_never_both() {
        let a = Uuid::from_u128(1);
        let body = |agent_id, person: Option<&str>| ApproveJob {
            agent_id,
            person: person.map(String::from),
            comment: None,
        };
        assert_eq!(body(Some(a), None).validate(), Ok(Voter::Agent(a)));
        assert_eq!(
            body(None, Some(" Ada ")).validate(),
            Ok(Voter::Person("Ada".into()))
        );
        assert_eq!(
            body(Some(a), Some("Ada")).validate().unwrap_err().field,
            "person"
        );
        assert_eq!(body(None, None).validate().unwrap_err().field, "agent_id");
        assert_eq!(
            body(None, Some("  ")).validate().unwrap_err().field,
            "person"
        );
        assert_eq!(Voter::Person("Ada".into()).key(), "human:Ada");
        assert_eq!(agent(1).key(), a.to_string());
    }

    #[test]
    fn vote_paths() {
        let j = Uuid::nil();
        assert_eq!(
            vote_path(j, Stage::Plan, Verdict::Reject),
            format!("/jobs/{j}/plan/reject")
        );
        assert_eq!(
            vote_path(j, Stage::Job, Verdict::Approve),
            format!("/jobs/{j}/approve")
        );
    }

    #[test]
    fn a_vote_body_is_the_verdicts_own() {
        let ada = || Some("ada".to_string());
        let approve = VoteBody::new(Verdict::Approve, None, ada(), Some("ok".into()));
        assert_eq!(
            serde_json::to_value(&approve).unwrap(),
            json!({"agent_id": null, "person": "ada", "comment": "ok"})
        );
        let reject = VoteBody::new(Verdict::Reject, None, ada(), None);
        assert_eq!(reject.verdict(), Verdict::Reject);
        assert_eq!(reject.validate().unwrap_err().field, "reason");
        let reject = VoteBody::new(Verdict::Reject, None, ada(), Some("no".into()));
        assert_eq!(
            serde_json::to_value(&reject).unwrap(),
            json!({"agent_id": null, "person": "ada", "reason": "no"})
        );
        assert_eq!(reject.validate(), Ok(Voter::Person("ada".into())));
    }

    #[test]
    fn plans_wait_for_review_only_while_ready_and_short_of_approvals() {
        assert!(plan_under_review(JobStatus::Ready, 1, 2));
        assert!(!plan_under_review(JobStatus::Ready, 2, 2));
        assert!(!plan_under_review(JobStatus::Ready, 0, 0));
        assert!(!plan_under_review(JobStatus::Executing, 0, 2));
        assert_eq!(cooldown_ends(1_000, 60), 61_000);
        assert_eq!(cooldown_ends(1_000, u64::MAX), i64::MAX);
    }

    #[test]
    fn a_rejection_needs_a_reason() {
        let r = RejectJob {
            agent_id: Some(Uuid::from_u128(1)),
            person: None,
            reason: " ".into(),
        };
        assert_eq!(r.validate().unwrap_err().field, "reason");
        let r: Result<RejectJob, _> = serde_json::from_value(json!({"agent_id": Uuid::nil()}));
        assert!(r.unwrap_err().to_string().contains("reason"));
    }

    #[test]
    fn who_may_vote() {
        let (any, role) = (ApproverPolicy::Any, ApproverPolicy::Role);
        let me = Uuid::from_u128(7);
        let other = Some(Uuid::from_u128(8));
        // Anyone but the author under `any`.
        assert_eq!(may_vote(any, Stage::Job, &agent(7), &[], other), Ok(()));
        assert_eq!(
            may_vote(any, Stage::Job, &agent(7), &[], Some(me)),
            Err(VoteRefused::SelfApproval(Stage::Job))
        );
        assert_eq!(
            may_vote(role, Stage::Plan, &agent(7), &[Role::Approver], Some(me)),
            Err(VoteRefused::SelfApproval(Stage::Plan))
        );
        // Only approvers under `role`.
        assert_eq!(
            may_vote(role, Stage::Job, &agent(7), &[], other),
            Err(VoteRefused::NotAnApprover(me))
        );
        assert_eq!(
            may_vote(role, Stage::Job, &agent(7), &[Role::Approver], other),
            Ok(())
        );
        // A person through an operator may always vote.
        let ada = Voter::Person("ada".into());
        assert_eq!(may_vote(role, Stage::Plan, &ada, &[], other), Ok(()));
        assert!(VoteRefused::SelfApproval(Stage::Plan)
            .to_string()
            .contains("plan's author"));
    }

    #[test]
    fn cooldown_applies_to_agents_voting_on_jobs() {
        assert!(vote_takes_cooldown(Stage::Job, &agent(1)));
        assert!(!vote_takes_cooldown(Stage::Plan, &agent(1)));
        assert!(!vote_takes_cooldown(
            Stage::Job,
            &Voter::Person("ada".into())
        ));
    }

    #[test]
    fn rejected_plans_replan_until_the_limit() {
        // MAX_REPLANS=2: the first two rejections ask for a new plan, the third fails the job.
        let to = |n| JobStatus::Ready.transition(plan_rejected(n, 2));
        assert_eq!(to(1), Ok(JobStatus::Accepted));
        assert_eq!(to(2), Ok(JobStatus::Accepted));
        assert_eq!(to(3), Ok(JobStatus::Failed));
        // MAX_REPLANS=0: any rejection fails.
        assert_eq!(
            JobStatus::Ready.transition(plan_rejected(1, 0)),
            Ok(JobStatus::Failed)
        );
    }

    #[test]
    fn the_next_planner_sees_every_rejected_plan_with_its_reasons() {
        let why = |by: &str, reason: &str| RejectionReason {
            by: by.into(),
            reason: reason.into(),
        };
        let spec = ReplanSpec::build(
            json!({"goal": "port the parser"}),
            3,
            vec![
                (2, Some("p2".into()), json!({"task_specs": ["b"]})),
                (1, Some("p1".into()), json!({"task_specs": ["a"]})),
                (3, None, json!({"task_specs": ["not yet"]})),
            ],
            vec![
                (2, why("rev", "too coarse")),
                (1, why("human:ada", "no tests")),
            ],
        );
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["job_spec"]["goal"], "port the parser");
        assert_eq!(v["round"], 3);
        assert_eq!(v["rejected_plans"].as_array().unwrap().len(), 2);
        assert_eq!(v["rejected_plans"][0]["round"], 1);
        assert_eq!(v["rejected_plans"][0]["plan"]["task_specs"][0], "a");
        assert_eq!(v["rejected_plans"][0]["reasons"][0]["by"], "human:ada");
        assert_eq!(v["rejected_plans"][1]["reasons"][0]["reason"], "too coarse");
        assert_eq!(serde_json::from_value::<ReplanSpec>(v).unwrap(), spec);
    }

    #[test]
    fn approval_deadlines() {
        assert_eq!(approval_deadline(1_000, None, 0), None);
        assert_eq!(approval_deadline(1_000, None, 2), Some(3_000));
        assert_eq!(approval_deadline(1_000, Some(5), 2), Some(6_000));
        assert_eq!(approval_deadline(1_000, Some(0), 2), None);
        assert_eq!(approval_deadline(1_000, Some(u64::MAX), 0), Some(i64::MAX));
    }

    #[test]
    fn names_round_trip() {
        for v in [Verdict::Approve, Verdict::Reject] {
            assert_eq!(v.as_str().parse::<Verdict>(), Ok(v));
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
        }
        for r in Role::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        assert!(serde_json::from_value::<SetRoles>(json!({"roles": ["root"]})).is_err());
        assert_eq!("role".parse::<ApproverPolicy>(), Ok(ApproverPolicy::Role));
        assert!("all".parse::<ApproverPolicy>().is_err());
    }
}
