//! `agora approve`, `agora reject` (a job or, with `--plan`, its plan; as the configured agent
//! or, with `--as`, as a person) and `agora roles`.

use agora_client::VoteAs;
use agora_shared::{Approval, Role, Stage, Verdict};
use uuid::Uuid;

use crate::ops::client;
use crate::profile;
use crate::render;
use crate::{Remote, VoteArgs};

/// Casts one vote; `text` is the approval's comment or the rejection's reason.
pub async fn cast(args: VoteArgs, verdict: Verdict, text: Option<String>) -> anyhow::Result<()> {
    let stage = if args.plan { Stage::Plan } else { Stage::Job };
    let mut c = client(&args.remote)?;
    let voter = match args.person.as_deref() {
        Some(name) => VoteAs::Person {
            name,
            admin_token: args.admin_token.as_deref(),
        },
        None => {
            let (id, token) = profile::agent(&args.identity)?;
            c = c.with_agent(id, token);
            VoteAs::Agent
        }
    };
    let voted = c
        .vote(args.job_id, stage, verdict, text.as_deref(), voter)
        .await?;
    if args.remote.json {
        return render::json(&voted);
    }
    let job = &voted.job;
    let what = match stage {
        Stage::Job => format!("job {}", job.id),
        Stage::Plan => format!("the plan of job {}", job.id),
    };
    let verb = match verdict {
        Verdict::Approve => "approved",
        Verdict::Reject => "rejected",
    };
    let count = match stage {
        Stage::Job => format!("{}/{} approvals", job.approvals, job.approvals_required),
        Stage::Plan => format!(
            "{}/{} plan approvals, {} plans rejected",
            job.plan_approvals, job.plan_approvals_required, job.plans_rejected
        ),
    };
    println!(
        "{verb} {what} as {}: {count}, {}",
        voter_name(&voted.approval),
        job.status
    );
    if let Some(e) = &job.error {
        println!("error: {e}");
    }
    Ok(())
}

/// `agora roles AGENT [ROLE...]`.
pub async fn roles(
    agent: Uuid,
    roles: Vec<Role>,
    admin_token: Option<String>,
    remote: &Remote,
) -> anyhow::Result<()> {
    let agent = client(remote)?
        .set_roles(agent, roles, admin_token.as_deref())
        .await?;
    if remote.json {
        return render::json(&agent);
    }
    let names: Vec<&str> = agent.roles.iter().map(|r| r.as_str()).collect();
    println!(
        "agent {} ({}) has roles: {}",
        agent.id,
        agent.name,
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    );
    Ok(())
}

fn voter_name(a: &Approval) -> String {
    if a.person {
        format!("{} (person)", a.agent_name)
    } else {
        a.agent_name.clone()
    }
}

/// The votes as `agora job` prints them: who approved the job, who approved each plan, and
/// every rejection with its reason.
pub fn vote_lines(votes: &[Approval]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut rounds: Vec<Option<u32>> = votes.iter().map(|a| a.plan_round).collect();
    rounds.sort_unstable();
    rounds.dedup();
    for round in rounds {
        let on = match round {
            Some(r) => format!("plan {r} "),
            None => String::new(),
        };
        let approvers: Vec<String> = votes
            .iter()
            .filter(|a| a.plan_round == round && a.verdict == Verdict::Approve)
            .map(voter_name)
            .collect();
        if !approvers.is_empty() {
            lines.push(format!("{on}approved by {}", approvers.join(", ")));
        }
        for a in votes
            .iter()
            .filter(|a| a.plan_round == round && a.verdict == Verdict::Reject)
        {
            let why = render::clip(a.reason.as_deref().unwrap_or(""), 80);
            lines.push(format!("{on}rejected by {}: {why}", voter_name(a)));
        }
    }
    lines
}
