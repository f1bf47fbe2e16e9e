//! The approval gate's votes: a checked ballot, cast through the store's one vote operation.

use agora_shared::{Approved, Stage, Verdict, VoteBody, Voter};
use uuid::Uuid;

use crate::error::Result;
use crate::state::AppState;
use crate::store::VoteParams;

/// A checked vote: who, on which stage, which way, and its comment or reason.
pub struct Ballot {
    pub voter: Voter,
    pub stage: Stage,
    pub verdict: Verdict,
    pub text: Option<String>,
}

impl Ballot {
    /// An approval's or a rejection's body, checked, on `stage`.
    pub fn new(body: VoteBody, stage: Stage) -> Result<Ballot> {
        let voter = body.validate()?;
        let verdict = body.verdict();
        let text = match body {
            VoteBody::Approve(b) => b.comment,
            VoteBody::Reject(b) => Some(b.reason),
        };
        Ok(Ballot {
            voter,
            stage,
            verdict,
            text,
        })
    }
}

/// Cast a ballot whose voter the transport has checked against the caller.
pub async fn cast(state: &AppState, job_id: Uuid, ballot: Ballot) -> Result<Approved> {
    let approved = state
        .store
        .vote(VoteParams {
            job_id,
            voter: ballot.voter,
            stage: ballot.stage,
            verdict: ballot.verdict,
            text: ballot.text,
            rules: state.config.gate_rules(),
        })
        .await?;
    Ok(approved)
}
