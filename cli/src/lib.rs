//! The `agora` command line beside `serve`: a worker that runs a shell command per task
//! (`worker`), and small commands for people and scripts over the REST API (`submit`,
//! `approve`, `reject`, `roles`, `jobs`, `job`, `status`, `events`, ...). All of them talk to a server through
//! `agora-client`.

mod mcp;
mod ops;
mod profile;
mod render;
mod votes;
mod worker;

use clap::{Args, Subcommand};
use uuid::Uuid;

pub use worker::WorkerArgs;

/// Where the server is and how to print.
#[derive(Args, Debug, Clone)]
pub struct Remote {
    /// The server's address. Default: $AGORA_URL, then "url" in ~/.agora/config.json, then
    /// http://localhost:3000.
    #[arg(long)]
    pub url: Option<String>,
    /// Print JSON (one document, or one event per line) instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// The agent a command acts as. Default: $AGORA_AGENT_ID and $AGORA_TOKEN, then
/// ~/.agora/agent.json (written by `agora register` and by the skill's `agora.sh register`).
#[derive(Args, Debug, Clone)]
pub struct AgentIdentity {
    #[arg(long, env = "AGORA_AGENT_ID")]
    pub agent_id: Option<Uuid>,
    #[arg(long, env = "AGORA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Who votes on what: `approve` and `reject`.
#[derive(Args, Debug, Clone)]
pub struct VoteArgs {
    pub job_id: Uuid,
    /// Vote on the job's plan under review instead of the job.
    #[arg(long)]
    pub plan: bool,
    /// Vote as this person, through the operator (needs --admin-token when the server sets
    /// ADMIN_TOKEN); counts as the one voter `human:NAME`.
    #[arg(long = "as", value_name = "NAME")]
    pub person: Option<String>,
    #[arg(long, env = "AGORA_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    #[command(flatten)]
    pub identity: AgentIdentity,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Take tasks over WebSocket and run a shell command for each one.
    Worker(WorkerArgs),
    #[command(flatten)]
    Ops(OpsCommand),
}

/// The commands for people and scripts (one REST call or a few each).
#[derive(Subcommand, Debug)]
pub enum OpsCommand {
    /// Submit a job; it waits for approvals.
    Submit {
        /// The job's title.
        title: String,
        /// The job spec as JSON (default `{}`).
        #[arg(long, conflicts_with = "spec_file")]
        spec: Option<String>,
        /// Read the job spec from a file (`-` for stdin).
        #[arg(long)]
        spec_file: Option<std::path::PathBuf>,
        #[arg(long, allow_negative_numbers = true)]
        priority: Option<i32>,
        /// Approvals this job needs (not fewer than the server's APPROVALS_REQUIRED).
        #[arg(long)]
        approvals: Option<u32>,
        /// Seconds the job may wait for its approvals (default: the server's
        /// APPROVAL_TTL_SECS; 0: no limit).
        #[arg(long)]
        approval_ttl: Option<u64>,
        /// Reviewers who must approve the plan before work starts (default: the server's
        /// PLAN_APPROVALS_REQUIRED).
        #[arg(long)]
        plan_approvals: Option<u32>,
        /// Makes the submit safe to retry: the same key and body again answer the job it
        /// created instead of a second one (within the server's IDEMPOTENCY_TTL_SECS).
        #[arg(long)]
        idempotency_key: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Approve a job (or with --plan its plan under review) as the configured agent, or as a
    /// person with --as.
    Approve {
        #[command(flatten)]
        vote: VoteArgs,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Reject a job (it fails) or with --plan its plan (a new plan task gets the reason), as
    /// the configured agent, or as a person with --as.
    Reject {
        #[command(flatten)]
        vote: VoteArgs,
        /// Why; shown in the job's error and handed to the next planner.
        #[arg(long)]
        reason: String,
    },
    /// Set an agent's roles (operator; `approver` lets it vote under APPROVERS=role). No role
    /// removes them all.
    Roles {
        agent_id: Uuid,
        roles: Vec<agora_shared::Role>,
        #[arg(long, env = "AGORA_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Cancel a job (needs the admin token when the server sets ADMIN_TOKEN).
    Cancel {
        job_id: Uuid,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long, env = "AGORA_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Register an agent and keep its identity in ~/.agora/agent.json.
    Register {
        name: String,
        /// Comma-separated capabilities.
        #[arg(long, value_delimiter = ',')]
        capabilities: Option<Vec<String>>,
        /// Also print how to connect an MCP client as this agent: the `claude mcp add` line
        /// and the JSON entry other clients take (both hold the agent's token).
        #[arg(long)]
        mcp: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Unregister the configured agent (its tasks go back to pending) and forget it.
    Unregister {
        #[command(flatten)]
        identity: AgentIdentity,
        #[command(flatten)]
        remote: Remote,
    },
    /// List jobs, newest first.
    Jobs {
        /// Only jobs in this state (e.g. executing).
        #[arg(long)]
        status: Option<agora_shared::JobStatus>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long, default_value_t = 0)]
        offset: u64,
        #[command(flatten)]
        remote: Remote,
    },
    /// One job: its counters, approvals and tasks.
    Job {
        job_id: Uuid,
        /// How many tasks to list.
        #[arg(long, default_value_t = 50)]
        tasks: u32,
        #[command(flatten)]
        remote: Remote,
    },
    /// The server: health, agents, jobs and tasks by state, throughput.
    Status {
        #[command(flatten)]
        remote: Remote,
    },
    /// A job's events; `--follow` streams them live (every job's when no id is given).
    Events {
        job_id: Option<Uuid>,
        /// Start after this event id.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// Keep streaming new events (SSE, resumes across reconnects).
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

/// Runs one CLI command to the end.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Worker(args) => worker::run(args).await,
        Command::Ops(command) => ops::run(command).await,
    }
}
