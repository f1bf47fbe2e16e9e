//! Runs the release server as a child process on a free loopback port and a temporary database.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

pub struct Server {
    child: Child,
    pub base: String,
    pub backend: String,
    _dir: tempfile::TempDir,
}

impl Server {
    pub async fn start(
        bin: &Path,
        extra_env: &[String],
        database_url: Option<&str>,
    ) -> anyhow::Result<Server> {
        if !bin.exists() {
            bail!(
                "{} not found: run `cargo build --release -p agora-cli` first",
                bin.display()
            );
        }
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("DB_PATH", dir.path().join("agora.db"))
            .env("REPOS_DIR", dir.path().join("repos"))
            .env("APPROVALS_REQUIRED", "1")
            .env("APPROVAL_COOLDOWN_SECS", "0")
            // The bench registers thousands of agents from one address.
            .env("REGISTRATION_RATE_PER_MIN", "0")
            .env("ANON_WRITE_RATE_PER_MIN", "0")
            .env("TASK_MAX_RETRIES", "100")
            .env("MAX_BODY_BYTES", "16777216")
            // A plan of 100,000 tasks (the graph part) is a result of a few MB.
            .env("MAX_SPEC_BYTES", "8388608")
            .env("RUST_LOG", "warn")
            // The load part holds 10,000 WebSocket agents and 500 SSE readers at once, past the
            // safe default (10,000 connections); its REST calls need room beside them.
            .env("MAX_CONNECTIONS", "20000")
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(url) = database_url {
            cmd.env("DATABASE_URL", url);
        }
        for kv in extra_env {
            let (k, v) = kv.split_once('=').context("--env takes KEY=VALUE")?;
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("starting the server")?;
        let base = format!("http://127.0.0.1:{port}/api");
        let api = agora_client::Client::new(&base);
        let mut backend = String::new();
        for _ in 0..200 {
            if let Ok(health) = api.health().await {
                backend = health.backend;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if backend.is_empty() {
            bail!("the server did not become healthy within 10 s");
        }
        Ok(Server {
            child,
            base,
            backend,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Resident memory of the server process, from /proc.
    pub fn rss_mb(&self) -> f64 {
        self.status_mb("VmRSS")
    }

    /// A size from `/proc/PID/status` in MB (`VmRSS`, `RssAnon`: the heap and stacks,
    /// `RssFile`: the binary's code and other mapped files).
    pub fn status_mb(&self, field: &str) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    }

    /// CPU time the server process has used (user + system), from /proc: a figure that does
    /// not depend on what else the machine is doing, unlike wall-clock throughput.
    pub fn cpu_secs(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // The fields after the command name (which may hold spaces), from field 3 on.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // utime and stime are fields 14 and 15 (1-based), in clock ticks of 1/100 s.
        (ticks(11) + ticks(12)) / 100.0
    }

    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// A fresh PostgreSQL database for one bench run, on the server of `admin_url`.
pub struct BenchDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl BenchDatabase {
    pub async fn create(admin_url: &str) -> anyhow::Result<BenchDatabase> {
        use sqlx::Connection;
        let name = format!("agora_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .context("connecting to PostgreSQL")?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b)
            .unwrap_or(admin_url);
        Ok(BenchDatabase {
            admin_url: admin_url.to_string(),
            url: format!("{base}/{name}"),
            name,
        })
    }

    pub async fn drop_it(self) {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn)
            .await;
        }
    }
}
