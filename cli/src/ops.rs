//! The commands for people and scripts: one REST call (or a few) each, printed as a table or,
//! with `--json`, as the API's own JSON.

use std::io::Read;

use agora_client::Client;
use agora_shared::{Event, Job, JobListQuery, SubmitJob, TaskListQuery, Verdict};
use anyhow::Context;
use serde_json::Value;
use uuid::Uuid;

use crate::profile::{self, SavedAgent};
use crate::render::{self, clip, short, time};
use crate::votes;
use crate::{OpsCommand, Remote};

pub(crate) fn client(remote: &Remote) -> anyhow::Result<Client> {
    Ok(Client::new(&profile::url(remote)?))
}

pub async fn run(command: OpsCommand) -> anyhow::Result<()> {
    match command {
        OpsCommand::Submit {
            title,
            spec,
            spec_file,
            priority,
            approvals,
            approval_ttl,
            plan_approvals,
            idempotency_key,
            remote,
        } => {
            let job_spec = read_spec(spec, spec_file)?;
            let job = client(&remote)?
                .submit(&SubmitJob {
                    title,
                    job_spec,
                    priority,
                    approvals_required: approvals,
                    submitted_by: None,
                    approval_ttl_secs: approval_ttl,
                    plan_approvals_required: plan_approvals,
                    idempotency_key,
                })
                .await?;
            if remote.json {
                return render::json(&job);
            }
            println!(
                "submitted job {} ({}); it needs {} approvals",
                job.id, job.status, job.approvals_required
            );
        }
        OpsCommand::Approve { vote, comment } => {
            votes::cast(vote, Verdict::Approve, comment).await?
        }
        OpsCommand::Reject { vote, reason } => {
            votes::cast(vote, Verdict::Reject, Some(reason)).await?
        }
        OpsCommand::Roles {
            agent_id,
            roles,
            admin_token,
            remote,
        } => votes::roles(agent_id, roles, admin_token, &remote).await?,
        OpsCommand::Cancel {
            job_id,
            reason,
            admin_token,
            remote,
        } => {
            let job = client(&remote)?
                .cancel(job_id, reason.as_deref(), admin_token.as_deref())
                .await?;
            if remote.json {
                return render::json(&job);
            }
            println!("job {} is {}", job.id, job.status);
        }
        OpsCommand::Register {
            name,
            capabilities,
            mcp,
            remote,
        } => {
            let mut c = client(&remote)?;
            let reg = c.register(&name, capabilities).await?;
            let path = profile::save_agent(&SavedAgent {
                agent_id: reg.agent_id,
                token: reg.token.clone(),
                name: Some(name),
            })?;
            if remote.json {
                return render::json(&reg);
            }
            println!(
                "registered agent {} (saved to {})",
                reg.agent_id,
                path.display()
            );
            if mcp {
                print!("{}", crate::mcp::setup(&c.mcp_url(), &reg.token));
            }
        }
        OpsCommand::Unregister { identity, remote } => {
            let (id, token) = profile::agent(&identity)?;
            let agent = client(&remote)?.with_agent(id, token).unregister().await?;
            profile::forget_agent()?;
            if remote.json {
                return render::json(&agent);
            }
            println!("unregistered agent {}", agent.id);
        }
        OpsCommand::Jobs {
            status,
            limit,
            offset,
            remote,
        } => {
            let query = JobListQuery {
                status,
                q: None,
                limit: Some(limit),
                offset: Some(offset),
            };
            let page = client(&remote)?.jobs(&query).await?;
            if remote.json {
                return render::json(&page);
            }
            jobs_table(&page.items);
            println!(
                "{} of {} jobs (offset {})",
                page.items.len(),
                page.total,
                page.offset
            );
        }
        OpsCommand::Job {
            job_id,
            tasks,
            remote,
        } => show_job(&remote, job_id, tasks).await?,
        OpsCommand::Status { remote } => show_status(&remote).await?,
        OpsCommand::Events {
            job_id,
            after,
            follow,
            remote,
        } => events(&client(&remote)?, job_id, after, follow, remote.json).await?,
    }
    Ok(())
}

/// `agora job ID`: the job's counters, who approved it, and its first tasks.
async fn show_job(remote: &Remote, job_id: Uuid, tasks: u32) -> anyhow::Result<()> {
    let c = client(remote)?;
    let job = c.job(job_id).await?;
    let approvals = c.approvals(job_id).await?;
    let query = TaskListQuery {
        limit: Some(tasks),
        ..TaskListQuery::default()
    };
    let tasks = c.tasks(job_id, &query).await?;
    if remote.json {
        return render::json(&serde_json::json!({
            "job": job, "approvals": approvals, "tasks": tasks,
        }));
    }
    println!("{}  {}", job.id, job.title);
    println!(
        "status {}   approvals {}/{}   tasks {} done, {} failed, {} running, {} in all",
        job.status,
        job.approvals,
        job.approvals_required,
        job.tasks_completed,
        job.tasks_failed,
        job.tasks_running,
        job.tasks_total
    );
    if let Some(e) = &job.error {
        println!("error: {e}");
    }
    if job.plan_approvals_required > 0 {
        println!(
            "plan review {}/{}{}   plans rejected {}",
            job.plan_approvals,
            job.plan_approvals_required,
            if job.plan_under_review() {
                " (waiting)"
            } else {
                ""
            },
            job.plans_rejected
        );
    }
    for line in votes::vote_lines(&approvals) {
        println!("{line}");
    }
    render::table(
        &[
            "#", "TASK", "TYPE", "STATUS", "AGENT", "PROGRESS", "ATTEMPTS",
        ],
        tasks.items.iter().map(|t| {
            vec![
                t.index.to_string(),
                short(&t.id),
                t.task_type.as_str().into(),
                t.status.to_string(),
                t.agent_id.as_ref().map(short).unwrap_or_default(),
                format!(
                    "{}% {}",
                    t.progress,
                    clip(t.progress_message.as_deref().unwrap_or(""), 30)
                ),
                t.attempts.to_string(),
            ]
        }),
    );
    if tasks.total > tasks.items.len() as u64 {
        println!("{} of {} tasks shown", tasks.items.len(), tasks.total);
    }
    Ok(())
}

/// `agora status`: the server's health and the counts of everything.
async fn show_status(remote: &Remote) -> anyhow::Result<()> {
    let c = client(remote)?;
    let health = c.health().await;
    let stats = c.stats().await?;
    if remote.json {
        return render::json(&serde_json::json!({
            "health": health.as_ref().ok(), "stats": stats,
        }));
    }
    match health {
        Ok(h) => println!(
            "server {} ({} on {}, version {})",
            h.status, h.database, h.backend, h.version
        ),
        Err(e) => println!("server unhealthy: {e}"),
    }
    println!(
        "agents {} online of {}; {} tasks completed in the last minute; last event #{}",
        stats.agents_online,
        stats.agents_total,
        stats.tasks_completed_last_minute,
        stats.last_event_id
    );
    let counts = |m: &std::collections::BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("jobs:  {}", counts(&stats.jobs));
    println!("tasks: {}", counts(&stats.tasks));
    Ok(())
}

fn read_spec(spec: Option<String>, file: Option<std::path::PathBuf>) -> anyhow::Result<Value> {
    let text = match (spec, file) {
        (Some(s), _) => s,
        (None, Some(f)) if f.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        }
        (None, Some(f)) => {
            std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?
        }
        (None, None) => return Ok(Value::Object(Default::default())),
    };
    serde_json::from_str(&text).context("the job spec is not valid JSON")
}

fn jobs_table(jobs: &[Job]) {
    render::table(
        &["JOB", "STATUS", "TITLE", "APPROVALS", "TASKS", "CREATED"],
        jobs.iter().map(|j| {
            vec![
                j.id.to_string(),
                j.status.to_string(),
                clip(&j.title, 40),
                format!("{}/{}", j.approvals, j.approvals_required),
                format!("{}/{}", j.tasks_completed, j.tasks_total),
                time(&j.created_at),
            ]
        }),
    );
}

fn print_event(e: &Event, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(e)?);
    } else {
        println!(
            "#{:<6} {}  {:<16} job {} task {} {}",
            e.id,
            time(&e.at),
            e.kind().as_str(),
            e.job_id.as_ref().map(short).unwrap_or_else(|| "-".into()),
            e.task_id.as_ref().map(short).unwrap_or_else(|| "-".into()),
            clip(&e.payload.data_json(), 80)
        );
    }
    Ok(())
}

async fn events(
    c: &Client,
    job: Option<Uuid>,
    after: i64,
    follow: bool,
    json: bool,
) -> anyhow::Result<()> {
    if follow {
        let mut stream = c.event_stream(job, after);
        loop {
            let e = stream.next().await?;
            print_event(&e, json)?;
        }
    }
    let job = job.context("without a job id, use --follow to stream every job's events")?;
    let mut after = after;
    loop {
        let page = c.events(job, after).await?;
        for e in &page {
            print_event(e, json)?;
        }
        match page.last() {
            Some(last) => after = last.id,
            None => return Ok(()),
        }
    }
}
