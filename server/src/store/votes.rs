//! The approval gate: votes (approve or reject, by an agent or by a person through an operator)
//! on a job and on its plan, the expiry of jobs nobody approved in time, and the votes' list.
//! Who may vote and what a rejection leads to are rules of `agora_shared::review`.

use agora_shared::{
    approval_path, cooldown_ends, may_vote, plan_rejected, plans_exhausted_error, rejection_error,
    vote_takes_cooldown, voter_label, Approval, ApprovalAdded, ApprovalRejected, Approved,
    ApproverPolicy, EventData, JobEvent, JobStatus, PlanApproved, PlanRejected, Stage, TaskType,
    Verdict, Voter, APPROVAL_EXPIRED,
};
use uuid::Uuid;

use super::db::{Exec, ExecExt};
use super::error::{Result, StoreError};
use super::events::{event_insert, EventDraft};
use super::rows::{ts, u32_of, uuid, JobRow, TaskRow, VoteRow};
use super::sql::{for_update_skip_locked, APPROVABLE_JOBS, JOB_STATE_COLUMNS, VOTE_COLUMNS};
use super::steps::agents::{agent_fetch, agent_touch};
use super::steps::jobs::{job_fetch, job_transition};
use super::steps::plans::{plan_again, plan_latest, plan_release};
use super::steps::tasks::{tasks_insert, NewTask};
use super::{Store, WriteCtx};
use crate::args;

/// The gate's settings, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct GateRules {
    /// `APPROVERS`.
    pub policy: ApproverPolicy,
    /// `APPROVAL_COOLDOWN_SECS`.
    pub cooldown_secs: u64,
    /// `MAX_REPLANS`.
    pub max_replans: u32,
    /// Retries and timeout of the plan tasks the gate creates.
    pub plan_max_retries: u32,
    pub plan_timeout_secs: u64,
}

pub struct VoteParams {
    pub job_id: Uuid,
    pub voter: Voter,
    pub stage: Stage,
    pub verdict: Verdict,
    /// An approval's comment or a rejection's reason.
    pub text: Option<String>,
    pub rules: GateRules,
}

/// Who votes, as the gate needs them.
struct Ballot {
    /// What makes voters distinct: the agent's id or `human:<name>`.
    key: String,
    /// `None` for a person.
    agent: Option<Uuid>,
    /// The agent's name or the person's.
    name: String,
    roles: Vec<agora_shared::Role>,
    last_voted_at: Option<i64>,
}

impl Ballot {
    /// How errors and the next planner name the voter.
    fn label(&self) -> String {
        voter_label(&self.key, &self.name)
    }

    fn person(&self) -> bool {
        self.agent.is_none()
    }
}

async fn ballot(ctx: &mut WriteCtx, voter: &Voter) -> Result<Ballot> {
    Ok(match voter {
        Voter::Agent(id) => {
            let agent = agent_fetch(ctx, *id).await?;
            Ballot {
                key: voter.key(),
                agent: Some(*id),
                roles: agent.roles()?,
                name: agent.name,
                last_voted_at: agent.last_approved_at,
            }
        }
        Voter::Person(name) => Ballot {
            key: voter.key(),
            agent: None,
            name: name.clone(),
            roles: Vec::new(),
            last_voted_at: None,
        },
    })
}

/// What is under review: the job (round 0) or its current plan (round n, the n-th plan).
struct Subject {
    round: u32,
    /// Whose work it is: the submitter or the planner.
    author: Option<Uuid>,
    plan: Option<TaskRow>,
}

async fn subject(ctx: &mut WriteCtx, job: &JobRow, stage: Stage) -> Result<Subject> {
    let status = job.status()?;
    match stage {
        Stage::Job => {
            if !status.accepts_approvals() {
                return Err(StoreError::InvalidState(format!(
                    "job {} is '{status}': only committed or approving jobs take votes",
                    job.id
                )));
            }
            Ok(Subject {
                round: 0,
                author: job.submitted_by.as_deref().map(uuid).transpose()?,
                plan: None,
            })
        }
        Stage::Plan => {
            if !job.plan_under_review()? {
                let why = if job.plan_approvals_required == 0 {
                    "it asks for no plan review (plan_approvals_required is 0)".to_string()
                } else if status == JobStatus::Ready {
                    "its plan is approved already".to_string()
                } else {
                    format!("it is '{status}'; a plan waits for review while its job is 'ready'")
                };
                return Err(StoreError::InvalidState(format!(
                    "job {} has no plan waiting for review: {why}",
                    job.id
                )));
            }
            let plan = plan_latest(ctx, &job.id).await?;
            Ok(Subject {
                round: u32_of(job.plans_rejected).saturating_add(1),
                author: plan.agent_id.as_deref().map(uuid).transpose()?,
                plan: Some(plan),
            })
        }
    }
}

pub(crate) async fn vote(ctx: &mut WriteCtx, p: VoteParams) -> Result<Approved> {
    let voter = ballot(ctx, &p.voter).await?;
    let job = job_fetch(ctx, p.job_id).await?;
    // The spec, read once here: the write paths below read the job back without it.
    let spec = job.job_spec.clone().unwrap_or_default();
    let subject = subject(ctx, &job, p.stage).await?;
    may_vote(
        p.rules.policy,
        p.stage,
        &p.voter,
        &voter.roles,
        subject.author,
    )
    .map_err(StoreError::Refused)?;
    let already: Option<(String,)> = ctx
        .db
        .opt(
            "SELECT verdict FROM votes WHERE job_id = $1 AND round = $2 AND voter = $3",
            args![&job.id, i64::from(subject.round), &voter.key],
        )
        .await?;
    if let Some((verdict,)) = already {
        let what = match p.stage {
            Stage::Job => format!("job {}", p.job_id),
            Stage::Plan => format!("plan {} of job {}", subject.round, p.job_id),
        };
        return Err(StoreError::Conflict(format!(
            "{} has already voted ({verdict}) on {what}",
            voter.label()
        )));
    }
    let cooldown = vote_takes_cooldown(p.stage, &p.voter);
    if let (true, Some(last)) = (cooldown, voter.last_voted_at) {
        let next = cooldown_ends(last, p.rules.cooldown_secs);
        if ctx.now < next {
            return Err(StoreError::Cooldown(ts(next)));
        }
    }
    // Every check passed: from here on the operation only writes.
    if let Some(agent) = voter.agent {
        agent_touch(ctx, agent).await?;
    }
    let vote: VoteRow = ctx
        .db
        .one(
            &format!(
                "INSERT INTO votes (job_id, round, voter, agent_id, name, verdict, comment, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {VOTE_COLUMNS}"
            ),
            args![
                &job.id,
                i64::from(subject.round),
                &voter.key,
                voter.agent.map(|a| a.to_string()),
                &voter.name,
                p.verdict.as_str(),
                p.text.clone(),
                ctx.now
            ],
        )
        .await?;
    if let (true, Some(agent)) = (cooldown, voter.agent) {
        ctx.db
            .execute(
                "UPDATE agents SET last_approved_at = $2 WHERE id = $1",
                args![agent.to_string(), ctx.now],
            )
            .await?;
    }
    let draft = |data| EventDraft::new(data).job(p.job_id).agent(voter.agent);
    let reason = p.text.clone().unwrap_or_default();
    let mut job = match (p.stage, p.verdict) {
        (Stage::Job, Verdict::Approve) => {
            let job: JobRow = ctx.db.one(&format!(
                "UPDATE jobs SET approvals = approvals + 1, updated_at = $2 WHERE id = $1 RETURNING {JOB_STATE_COLUMNS}"
            ), args![&job.id, ctx.now])
            .await?;
            let approvals = u32_of(job.approvals);
            let required = u32_of(job.approvals_required);
            let data = EventData::ApprovalAdded(ApprovalAdded {
                agent_name: voter.name.clone(),
                approvals,
                approvals_required: required,
                person: voter.person(),
            });
            event_insert(ctx, draft(data)).await?;
            job_accept(ctx, job, approvals, required, &spec, &p.rules).await?
        }
        (Stage::Job, Verdict::Reject) => {
            let data = EventData::ApprovalRejected(ApprovalRejected {
                agent_name: voter.name.clone(),
                reason: reason.clone(),
                person: voter.person(),
            });
            event_insert(ctx, draft(data)).await?;
            let error = rejection_error(&voter.label(), &reason);
            job_transition(ctx, &job, JobEvent::Rejected, Some(error)).await?
        }
        (Stage::Plan, Verdict::Approve) => {
            let job: JobRow = ctx.db.one(&format!(
                "UPDATE jobs SET plan_approvals = plan_approvals + 1, updated_at = $2 WHERE id = $1 RETURNING {JOB_STATE_COLUMNS}"
            ), args![&job.id, ctx.now])
            .await?;
            let data = EventData::PlanApproved(PlanApproved {
                agent_name: voter.name.clone(),
                person: voter.person(),
                round: subject.round,
                plan_approvals: u32_of(job.plan_approvals),
                plan_approvals_required: u32_of(job.plan_approvals_required),
            });
            event_insert(ctx, draft(data)).await?;
            match &subject.plan {
                Some(plan) if job.plan_approvals >= job.plan_approvals_required => {
                    plan_release(ctx, &job, plan).await?
                }
                _ => job,
            }
        }
        (Stage::Plan, Verdict::Reject) => {
            let job: JobRow = ctx.db.one(&format!(
                "UPDATE jobs SET plans_rejected = plans_rejected + 1, plan_approvals = 0, updated_at = $2 \
                 WHERE id = $1 RETURNING {JOB_STATE_COLUMNS}"
            ), args![&job.id, ctx.now])
            .await?;
            let rejected = u32_of(job.plans_rejected);
            let event = plan_rejected(rejected, p.rules.max_replans);
            let replan = event == JobEvent::PlanRejected { replan: true };
            let data = EventData::PlanRejected(PlanRejected {
                agent_name: voter.name.clone(),
                person: voter.person(),
                round: subject.round,
                reason: reason.clone(),
                replan,
            });
            event_insert(ctx, draft(data)).await?;
            let error = (!replan).then(|| plans_exhausted_error(rejected, &voter.label(), &reason));
            let job = job_transition(ctx, &job, event, error).await?;
            match (&subject.plan, replan) {
                (Some(plan), true) => plan_again(ctx, &job, &spec, plan, subject.round).await?,
                _ => job,
            }
        }
    };
    job.job_spec = Some(spec);
    Ok(Approved {
        approval: vote.into_approval()?,
        job: job.into_job()?,
    })
}

/// The job moves along the approval path; at the quorum it is accepted and gets its plan task.
async fn job_accept(
    ctx: &mut WriteCtx,
    mut job: JobRow,
    approvals: u32,
    required: u32,
    spec: &str,
    rules: &GateRules,
) -> Result<JobRow> {
    for next in approval_path(job.status()?, approvals, required)? {
        let event = match next {
            JobStatus::Approving => JobEvent::FirstApproval,
            _ => JobEvent::QuorumReached,
        };
        job = job_transition(ctx, &job, event, None).await?;
        if next == JobStatus::Accepted {
            let plan = NewTask {
                task_type: TaskType::Plan,
                index: 0,
                spec: spec.to_string(),
                max_retries: rules.plan_max_retries,
                timeout_secs: rules.plan_timeout_secs,
                control: Default::default(),
            };
            job = tasks_insert(ctx, &job, vec![plan]).await?;
        }
    }
    Ok(job)
}

/// Scheduler: jobs still waiting for approvals past their deadline fail with `approval
/// expired`. Passes over jobs a vote holds; the next sweep takes them.
pub(crate) async fn jobs_expire_approvals(ctx: &mut WriteCtx) -> Result<usize> {
    let due: Vec<JobRow> = ctx
        .db
        .all(
            &format!(
                "SELECT {JOB_STATE_COLUMNS} FROM jobs WHERE status IN {APPROVABLE_JOBS} \
                 AND approval_expires_at <= $1 ORDER BY approval_expires_at{}",
                for_update_skip_locked(ctx.backend)
            ),
            args![ctx.now],
        )
        .await?;
    let count = due.len();
    for job in due {
        job_transition(
            ctx,
            &job,
            JobEvent::ApprovalExpired,
            Some(APPROVAL_EXPIRED.to_string()),
        )
        .await?;
    }
    Ok(count)
}

impl Store {
    /// Every vote on the job and its plans, in order.
    pub async fn approval_list(&self, job_id: Uuid) -> Result<Vec<Approval>> {
        self.job_get(job_id).await?;
        let rows: Vec<VoteRow> = self
            .read_all(
                &format!(
                    "SELECT {VOTE_COLUMNS} FROM votes WHERE job_id = $1 \
                     ORDER BY created_at, round, voter"
                ),
                args![job_id.to_string()],
            )
            .await?;
        rows.into_iter().map(VoteRow::into_approval).collect()
    }
}
