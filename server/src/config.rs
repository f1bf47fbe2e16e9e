//! Configuration: every setting of the README's Configuration table, from a CLI flag of
//! `agora serve` or the environment, with the documented defaults.

use std::path::PathBuf;
use std::time::Duration;

use clap::ArgAction;

#[derive(clap::Parser, Debug, Clone)]
#[command(about = "Run the Agora server")]
pub struct Config {
    /// TCP port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,
    /// Address to bind. Loopback by default; any other address needs REGISTRATION_TOKEN and
    /// ADMIN_TOKEN, or ALLOW_OPEN.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Listen beyond loopback without REGISTRATION_TOKEN or ADMIN_TOKEN: anyone who reaches the
    /// server may register, approve and cancel. Logs a warning; the dashboard shows a banner.
    #[arg(long, env = "ALLOW_OPEN", default_value_t = false, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub allow_open: bool,
    /// Browser origins (e.g. `https://ops.example.com`) allowed to make writes and to read the
    /// API cross-origin (CORS); comma-separated. The server's own origin is always allowed.
    #[arg(long, env = "ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Host names (besides loopback names) a loopback-bound server answers to, comma-separated;
    /// any other `Host` is refused (DNS rebinding).
    #[arg(long, env = "ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// SQLite database file (WAL mode); used unless DATABASE_URL is set.
    #[arg(long, env = "DB_PATH", default_value = "data/agora.db")]
    pub db_path: PathBuf,
    /// postgres://… switches the store to PostgreSQL.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// PostgreSQL: write batches one replica runs at once (each in its own transaction, side by
    /// side). Across all replicas, about what the database's cores can run.
    #[arg(long, env = "DB_WRITERS", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub db_writers: u8,
    /// Where per-job git repositories live.
    #[arg(long, env = "REPOS_DIR", default_value = "data/repos")]
    pub repos_dir: PathBuf,
    /// Default task timeout in seconds.
    #[arg(long, env = "TASK_TIMEOUT", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub task_timeout: u64,
    /// Default retries per task (attempts allowed = retries + 1).
    #[arg(long, env = "TASK_MAX_RETRIES", default_value_t = 3)]
    pub task_max_retries: u32,
    /// Distinct approvals a job needs before it is accepted (also the floor a submitter may ask).
    #[arg(long, env = "APPROVALS_REQUIRED", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub approvals_required: u32,
    /// An agent may approve at most once per this many seconds, across all jobs.
    #[arg(long, env = "APPROVAL_COOLDOWN_SECS", default_value_t = 3600)]
    pub approval_cooldown_secs: u64,
    /// Who may vote on jobs and plans: `any` registered agent, or only agents an operator gave
    /// the `approver` role (`role`). Never the job's submitter nor the plan's author.
    #[arg(long, env = "APPROVERS", default_value = "any")]
    pub approvers: agora_shared::ApproverPolicy,
    /// A job not accepted within this many seconds of its submission fails with `approval
    /// expired` (a job may ask its own `approval_ttl_secs`); 0: no limit.
    #[arg(long, env = "APPROVAL_TTL_SECS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=agora_shared::MAX_APPROVAL_TTL_SECS))]
    pub approval_ttl_secs: u64,
    /// Reviewers (other than the planner) who must approve a plan before its work tasks are
    /// created, unless the job asks its own `plan_approvals_required`; 0: no plan review.
    #[arg(long, env = "PLAN_APPROVALS_REQUIRED", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub plan_approvals_required: u32,
    /// Rejected plans after which the job gets a new plan task; one more rejection fails it.
    #[arg(long, env = "MAX_REPLANS", default_value_t = 2)]
    pub max_replans: u32,
    /// An agent not heard from for this long goes offline and its tasks go back to pending.
    #[arg(long, env = "AGENT_STALE_SECS", default_value_t = 90.0)]
    pub agent_stale_secs: f64,
    /// How long a WebSocket task offer waits for accept before it is released.
    #[arg(long, env = "OFFER_TTL_SECS", default_value_t = 15.0)]
    pub offer_ttl_secs: f64,
    /// A REST claim not started (nor reported on) within this many seconds goes back to pending.
    #[arg(long, env = "CLAIM_LEASE_SECS", default_value_t = agora_shared::DEFAULT_CLAIM_LEASE_SECS as f64)]
    pub claim_lease_secs: f64,
    /// A task delivered (claimed or offered) this many times without finishing fails for good
    /// with `delivery limit reached`; 0 means no limit.
    #[arg(long, env = "MAX_DELIVERIES", default_value_t = agora_shared::DEFAULT_MAX_DELIVERIES)]
    pub max_deliveries: u32,
    /// A failed attempt waits this many seconds, doubled per attempt (with jitter, at most 10
    /// minutes), before it is claimable again; 0 retries at once.
    #[arg(long, env = "RETRY_BACKOFF_SECS", default_value_t = agora_shared::DEFAULT_RETRY_BACKOFF_SECS)]
    pub retry_backoff_secs: f64,
    /// How many tasks holding an exclusive key may be claimed or running at once, per key, as
    /// `key=limit` pairs, comma-separated (e.g. `db=4,deploy=1`); every other key allows one.
    /// A task takes its key's limit when its plan lands.
    #[arg(long, env = "KEY_LIMITS", value_delimiter = ',', value_parser = parse_key_limit)]
    pub key_limits: Vec<(String, u32)>,
    /// How long an `idempotency_key` of `POST /api/jobs` answers the job it created; after
    /// that the same key creates a new job.
    #[arg(long, env = "IDEMPOTENCY_TTL_SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub idempotency_ttl_secs: u64,
    /// Bytes of frames a WebSocket may have waiting to be written; a client that stops reading
    /// past this is disconnected and its offers go back to pending.
    #[arg(long, env = "WS_OUTBOX_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub ws_outbox_bytes: usize,
    /// How often the server pings each WebSocket; a socket silent for two intervals is closed.
    #[arg(long, env = "WS_PING_SECS", default_value_t = 10.0)]
    pub ws_ping_secs: f64,
    /// When set, registration needs `Authorization: Bearer <this>`.
    #[arg(long, env = "REGISTRATION_TOKEN")]
    pub registration_token: Option<String>,
    /// Registrations a client address may make per minute (sustained); 0 turns the limit off.
    #[arg(long, env = "REGISTRATION_RATE_PER_MIN", default_value_t = 100)]
    pub registration_rate_per_min: u32,
    /// Registrations a client address may make at once before the rate applies.
    #[arg(long, env = "REGISTRATION_BURST", default_value_t = 100)]
    pub registration_burst: u32,
    /// Writes without any token (a submit without `submitted_by`, an operator call while
    /// ADMIN_TOKEN is unset) a client address may make per minute (sustained); 0 turns the limit
    /// off.
    #[arg(long, env = "ANON_WRITE_RATE_PER_MIN", default_value_t = 300)]
    pub anon_write_rate_per_min: u32,
    /// Anonymous writes a client address may make at once before the rate applies.
    #[arg(long, env = "ANON_WRITE_BURST", default_value_t = 100)]
    pub anon_write_burst: u32,
    /// When set, operator calls (cancel, roles, votes as a person) need `Authorization: Bearer <this>`.
    #[arg(long, env = "ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// A job spec, a task spec or a result larger than this many bytes of JSON gets 413 naming
    /// the field.
    #[arg(long, env = "MAX_SPEC_BYTES", default_value_t = agora_shared::DEFAULT_MAX_SPEC_BYTES)]
    pub max_spec_bytes: usize,
    /// Larger request bodies get 413.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// A client that has not sent a request's headers within this many seconds is disconnected
    /// (an idle keep-alive connection too).
    #[arg(long, env = "HEADER_TIMEOUT_SECS", default_value_t = 30.0)]
    pub header_timeout_secs: f64,
    /// A request body that stops arriving for this many seconds gets 408 and the connection
    /// closes.
    #[arg(long, env = "BODY_TIMEOUT_SECS", default_value_t = 30.0)]
    pub body_timeout_secs: f64,
    /// Connections served at once (HTTP, WebSocket and SSE alike); past it, new ones wait in
    /// the kernel's queue until one closes.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// How often the scheduler sweeps deadlines, stale agents and job counters (fractions allowed).
    #[arg(long, env = "SCHEDULER_INTERVAL_SECS", default_value_t = 5.0)]
    pub scheduler_interval_secs: f64,
    /// Keep a git repository per job.
    #[arg(long, env = "GIT_ENABLED", default_value_t = true, action = ArgAction::Set)]
    pub git_enabled: bool,
    /// Serve the dashboard from this directory (a Trunk or scripts/build-dashboard.sh build)
    /// instead of the build embedded in the binary.
    #[arg(long, env = "FRONTEND_DIR")]
    pub frontend_dir: Option<PathBuf>,
    /// On SIGTERM, how long running WebSocket tasks may take to finish before they are released.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 30.0)]
    pub shutdown_grace_secs: f64,
    /// `text` or `json` log lines.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

impl Config {
    /// The documented defaults (and whatever the environment overrides).
    pub fn from_defaults() -> anyhow::Result<Config> {
        Ok(<Config as clap::Parser>::try_parse_from(["agora"])?)
    }

    pub fn scheduler_interval(&self) -> Duration {
        secs(self.scheduler_interval_secs)
    }

    pub fn agent_stale(&self) -> Duration {
        secs(self.agent_stale_secs)
    }

    pub fn offer_ttl(&self) -> Duration {
        secs(self.offer_ttl_secs)
    }

    pub fn ws_ping(&self) -> Duration {
        secs(self.ws_ping_secs)
    }

    /// The largest body (or WebSocket frame) read: `MAX_BODY_BYTES`, but no more than twice
    /// `MAX_SPEC_BYTES` and some room, since no call needs more. A spec over MAX_SPEC_BYTES
    /// within it gets 413 naming its field; a body past it is refused while it streams in,
    /// before it is buffered or parsed.
    pub fn body_limit(&self) -> usize {
        self.max_body_bytes.min(
            self.max_spec_bytes
                .saturating_mul(2)
                .saturating_add(64 * 1024),
        )
    }

    /// The queue's clocks and limits, as the store applies them.
    pub fn queue_rules(&self) -> crate::store::QueueRules {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        crate::store::QueueRules {
            claim_lease_ms: ms(secs(self.claim_lease_secs)),
            offer_lease_ms: ms(self.offer_ttl())
                .saturating_add(crate::store::OFFER_LEASE_MARGIN_MS),
            max_deliveries: self.max_deliveries,
            retry_backoff_ms: ms(Duration::from_secs_f64(self.retry_backoff_secs.max(0.0))),
            key_limits: std::sync::Arc::new(self.key_limits.iter().cloned().collect()),
            idempotency_ttl_ms: ms(Duration::from_secs(self.idempotency_ttl_secs)),
            max_inputs_bytes: self.max_spec_bytes,
            writers: usize::from(self.db_writers),
        }
    }

    /// The gate's settings as clients see them (`/api/health`, MCP `whoami`).
    pub fn gate_settings(&self) -> agora_shared::GateSettings {
        agora_shared::GateSettings {
            approvals_required: self.approvals_required,
            plan_approvals_required: self.plan_approvals_required,
            approvers: self.approvers,
            approval_cooldown_secs: self.approval_cooldown_secs,
            approval_ttl_secs: self.approval_ttl_secs,
            max_replans: self.max_replans,
        }
    }

    /// The approval gate's settings, as the store applies them.
    pub fn gate_rules(&self) -> crate::store::GateRules {
        crate::store::GateRules {
            policy: self.approvers,
            cooldown_secs: self.approval_cooldown_secs,
            max_replans: self.max_replans,
            plan_max_retries: self.task_max_retries,
            plan_timeout_secs: self.task_timeout,
        }
    }

    pub fn header_timeout(&self) -> Duration {
        secs(self.header_timeout_secs)
    }

    pub fn body_timeout(&self) -> Duration {
        secs(self.body_timeout_secs)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs_f64(self.shutdown_grace_secs.max(0.0))
    }

    /// Whether the bind address is a loopback one (127.0.0.0/8, ::1, localhost).
    pub fn binds_loopback(&self) -> bool {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// Whether anyone who reaches the server may register agents or make operator calls.
    pub fn open_access(&self) -> bool {
        !self.binds_loopback() && (self.registration_token.is_none() || self.admin_token.is_none())
    }

    /// Protected mode: beyond loopback, both tokens or an explicit ALLOW_OPEN. The error is
    /// one line that says what to set.
    pub fn check_protected_mode(&self) -> anyhow::Result<()> {
        if !self.open_access() || self.allow_open {
            return Ok(());
        }
        let missing: Vec<&str> = [
            ("REGISTRATION_TOKEN", self.registration_token.is_none()),
            ("ADMIN_TOKEN", self.admin_token.is_none()),
        ]
        .into_iter()
        .filter_map(|(name, unset)| unset.then_some(name))
        .collect();
        anyhow::bail!(
            "refusing to listen on {} with {} unset: anyone who reaches it could register agents, approve and cancel jobs; set {}, bind HOST=127.0.0.1, or pass --allow-open (ALLOW_OPEN=true) to run an open server on purpose",
            self.host,
            missing.join(" and "),
            missing.join(" and ")
        )
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, v) in [
            ("SCHEDULER_INTERVAL_SECS", self.scheduler_interval_secs),
            ("AGENT_STALE_SECS", self.agent_stale_secs),
            ("OFFER_TTL_SECS", self.offer_ttl_secs),
            ("WS_PING_SECS", self.ws_ping_secs),
            ("CLAIM_LEASE_SECS", self.claim_lease_secs),
            ("HEADER_TIMEOUT_SECS", self.header_timeout_secs),
            ("BODY_TIMEOUT_SECS", self.body_timeout_secs),
        ] {
            anyhow::ensure!(
                v.is_finite() && v > 0.0,
                "{name} must be a positive number of seconds, got {v}"
            );
        }
        anyhow::ensure!(
            self.shutdown_grace_secs.is_finite() && self.shutdown_grace_secs >= 0.0,
            "SHUTDOWN_GRACE_SECS must be zero or a positive number of seconds"
        );
        anyhow::ensure!(
            self.retry_backoff_secs.is_finite() && (0.0..=600.0).contains(&self.retry_backoff_secs),
            "RETRY_BACKOFF_SECS must be between 0 and 600 seconds"
        );
        anyhow::ensure!(
            self.max_connections >= 1,
            "MAX_CONNECTIONS must be at least 1"
        );
        anyhow::ensure!(
            self.max_spec_bytes >= 1024,
            "MAX_SPEC_BYTES must be at least 1024"
        );
        anyhow::ensure!(
            self.max_body_bytes >= 1024,
            "MAX_BODY_BYTES must be at least 1024"
        );
        anyhow::ensure!(
            matches!(self.log_format.as_str(), "text" | "json"),
            "LOG_FORMAT must be text or json"
        );
        Ok(())
    }
}

fn secs(v: f64) -> Duration {
    Duration::from_secs_f64(v.max(0.001))
}

/// One `key=limit` of `KEY_LIMITS` (the key may itself hold `=`: the last one separates).
fn parse_key_limit(s: &str) -> Result<(String, u32), String> {
    let (key, limit) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("'{s}' is not key=limit"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("'{s}' names no key"));
    }
    let limit: u32 = limit
        .trim()
        .parse()
        .ok()
        .filter(|l| *l >= 1)
        .ok_or_else(|| {
            format!("the limit of '{key}' must be a whole number of at least 1, got '{limit}'")
        })?;
    Ok((key.to_string(), limit))
}
