//! `spawn_app()`: the real server on a random port with a fresh SQLite database in a temp dir,
//! plus small typed helpers over its HTTP API.

use std::sync::Once;

use agora_client::Client;
use agora_server::{store::Store, Application, Config};
use agora_shared::SubmitJob;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub store: Store,
    pub config: Config,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// Dropped after the server: the database goes with the test.
    _pg: Option<PgDatabase>,
    _dir: tempfile::TempDir,
}

#[derive(Clone, Debug)]
pub struct TestAgent {
    pub id: Uuid,
    pub token: String,
    pub name: String,
}

/// A response: status and JSON body.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub body: Value,
}

impl Resp {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    #[track_caller]
    pub fn ok(self) -> Value {
        assert!(
            self.status.is_success(),
            "expected success, got {} {}",
            self.status,
            self.body
        );
        assert_eq!(self.body["success"], true);
        self.body["data"].clone()
    }

    #[track_caller]
    pub fn err(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.code(), code, "body: {}", self.body);
        assert_eq!(self.body["success"], false);
    }
}

fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter("info,agora_server=debug")
                .init();
        }
    });
}

/// Test defaults: loopback, port 0, scheduler effectively off (tests that need it shorten it).
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config::from_defaults().expect("default config");
    c.host = "127.0.0.1".into();
    c.port = 0;
    c.db_path = dir.join("agora.db");
    c.database_url = None;
    c.repos_dir = dir.join("repos");
    c.scheduler_interval_secs = 3600.0;
    c.git_enabled = false;
    c.registration_token = None;
    c.admin_token = None;
    // A failed attempt is retried at once unless a test asks for backoff (the lease tests do).
    c.retry_backoff_secs = 0.0;
    c
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Which store the suite runs against: `TEST_BACKEND=postgres` for PostgreSQL (a fresh database
/// per test on `PG_TEST_URL`, default the machine's `postgres://postgres@127.0.0.1:5432/test`),
/// SQLite otherwise.
pub fn test_backend() -> &'static str {
    match std::env::var("TEST_BACKEND").as_deref() {
        Ok("postgres") => "postgres",
        _ => "sqlite",
    }
}

/// A fresh PostgreSQL database for one test, dropped when the test's app is dropped.
pub struct PgDatabase {
    pub url: String,
    name: String,
    admin_url: String,
}

impl PgDatabase {
    pub async fn create() -> PgDatabase {
        use sqlx::Connection;
        let admin_url = std::env::var("PG_TEST_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let name = format!("agora_t_{}", uuid::Uuid::new_v4().simple());
        // Under CI (and whenever TEST_BACKEND=postgres is asked for) a missing server fails the test.
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!("TEST_BACKEND=postgres but PostgreSQL at {admin_url} is unreachable: {e}")
            });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b)
            .unwrap_or(&admin_url);
        PgDatabase {
            url: format!("{base}/{name}"),
            name,
            admin_url,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime: do the cleanup on a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// Several servers (replicas) on one fresh PostgreSQL database. The database lives as long as
/// the returned handle.
pub async fn spawn_replicas(n: usize, tweak: impl Fn(&mut Config)) -> (Vec<TestApp>, PgDatabase) {
    let db = PgDatabase::create().await;
    let mut apps = Vec::new();
    for _ in 0..n {
        let url = db.url.clone();
        apps.push(
            spawn_app_inner(false, |c| {
                c.database_url = Some(url);
                tweak(c);
            })
            .await,
        );
    }
    (apps, db)
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_inner(test_backend() == "postgres", tweak).await
}

async fn spawn_app_inner(own_pg_database: bool, tweak: impl FnOnce(&mut Config)) -> TestApp {
    init_tracing();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(dir.path());
    let pg = if own_pg_database {
        let db = PgDatabase::create().await;
        config.database_url = Some(db.url.clone());
        Some(db)
    } else {
        None
    };
    tweak(&mut config);
    let app = Application::build(config.clone())
        .await
        .expect("server builds");
    let base = format!("http://127.0.0.1:{}/api", app.port());
    let store = app.store();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let app = TestApp {
        base,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .expect("client"),
        store,
        config,
        stop: Some(stop),
        server: Some(server),
        _pg: pg,
        _dir: dir,
    };
    let health = app.get("/health").await.ok();
    let expected = if app.config.database_url.is_some() {
        "postgres"
    } else {
        test_backend()
    };
    assert_eq!(
        health["backend"], expected,
        "the suite runs on the store it was asked for"
    );
    app
}

impl TestApp {
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::finish(req, token).await
    }

    /// A request with a raw body (not necessarily JSON).
    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> Resp {
        let req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .body(body);
        Self::finish(req, token).await
    }

    async fn finish(mut req: reqwest::RequestBuilder, token: Option<&str>) -> Resp {
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let text = res.text().await.expect("body read");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("non-JSON body ({status}): {text}"));
        Resp { status, body }
    }

    /// `GET /metrics` (outside `/api`): the Prometheus text.
    pub async fn metrics_text(&self) -> String {
        let root = self.base.trim_end_matches("/api");
        self.http
            .get(format!("{root}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(reqwest::Method::GET, path, None, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.send(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    /// The SDK, as nobody in particular.
    pub fn client(&self) -> Client {
        Client::new(&self.base)
    }

    /// The SDK, acting as `agent`.
    pub fn as_agent(&self, agent: &TestAgent) -> Client {
        self.client().with_agent(agent.id, agent.token.clone())
    }

    pub async fn register(&self, name: &str) -> TestAgent {
        let r = self.client().register(name, None).await.expect("register");
        TestAgent {
            id: r.agent_id,
            token: r.token,
            name: name.to_string(),
        }
    }

    pub async fn register_many(&self, prefix: &str, n: usize) -> Vec<TestAgent> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            out.push(self.register(&format!("{prefix}-{i}")).await);
        }
        out
    }

    pub async fn submit(&self, title: &str, spec: Value) -> Uuid {
        self.client()
            .submit(&job_body(title, spec))
            .await
            .expect("submit")
            .id
    }

    pub async fn approve(&self, job: Uuid, agent: &TestAgent) -> Resp {
        self.post(
            &format!("/jobs/{job}/approve"),
            Some(&agent.token),
            json!({ "agent_id": agent.id }),
        )
        .await
    }

    /// The job as JSON, to assert on fields by name.
    pub async fn job(&self, job: Uuid) -> Value {
        json_of(self.client().job(job).await.expect("job"))
    }

    /// Claims once; `None` when nothing is pending.
    pub async fn claim(&self, agent: &TestAgent) -> Option<Value> {
        let claimed = self.as_agent(agent).claim(None).await.expect("claim");
        claimed.map(json_of)
    }

    pub async fn task_call(
        &self,
        agent: &TestAgent,
        task: &str,
        action: &str,
        body: Value,
    ) -> Resp {
        self.post(&format!("/tasks/{task}/{action}"), Some(&agent.token), body)
            .await
    }

    /// Submits a job, approves it with the first `approvals_required` agents, claims the plan
    /// with `planner` and completes it with `specs`. Returns the job id.
    pub async fn planned_job(
        &self,
        agents: &[TestAgent],
        planner: &TestAgent,
        specs: Vec<Value>,
    ) -> Uuid {
        let job = self.submit("planned", json!({ "goal": "test" })).await;
        for a in agents.iter().take(self.config.approvals_required as usize) {
            self.approve(job, a).await.ok();
        }
        let claimed = self.claim(planner).await.expect("the plan task is pending");
        assert_eq!(claimed["task"]["type"], "plan");
        let task = claimed["task"]["id"].as_str().expect("task id").to_string();
        self.task_call(
            planner,
            &task,
            "complete",
            json!({ "result": { "task_specs": specs } }),
        )
        .await
        .ok();
        job
    }

    /// The kinds of a job's events, in order.
    pub async fn event_kinds(&self, job: Uuid) -> Vec<String> {
        let events = self.events(job).await;
        events
            .iter()
            .filter_map(|e| e["kind"].as_str().map(str::to_string))
            .collect()
    }

    /// A job's work tasks (not its plan task), in index order, up to 1,000.
    pub async fn work_tasks(&self, job: Uuid) -> Vec<agora_shared::Task> {
        let all = agora_shared::TaskListQuery {
            limit: Some(1000),
            ..Default::default()
        };
        let page = self.client().tasks(job, &all).await.expect("tasks");
        page.items.into_iter().filter(|t| t.index > 0).collect()
    }

    /// Every event of a job, paging through `/jobs/:id/events`.
    pub async fn all_events(&self, job: Uuid) -> Vec<Value> {
        let client = self.client();
        let mut out = Vec::new();
        loop {
            let after = out.last().map_or(0, |e: &agora_shared::Event| e.id);
            let page = client.events(job, after).await.expect("events");
            if page.is_empty() {
                return out.into_iter().map(json_of).collect();
            }
            out.extend(page);
        }
    }

    /// The first page of a job's events.
    pub async fn events(&self, job: Uuid) -> Vec<Value> {
        let page = self.client().events(job, 0).await.expect("events");
        page.into_iter().map(json_of).collect()
    }

    /// Replays the job's events in id order (commit order): no key ever has two holders (each
    /// key of the job has limit one), and each of its `tasks` keyed tasks was completed once.
    pub async fn assert_keys_held_once(&self, job: Uuid, tasks: usize) {
        let key_of: std::collections::HashMap<String, String> = self
            .work_tasks(job)
            .await
            .into_iter()
            .filter_map(|t| Some((t.id.to_string(), t.key?)))
            .collect();
        assert_eq!(key_of.len(), tasks);
        let mut held: std::collections::HashMap<&str, i32> = Default::default();
        let mut completed: std::collections::HashMap<&str, u32> = Default::default();
        let events = self.all_events(job).await;
        for e in &events {
            let Some(key) = e["task_id"].as_str().and_then(|t| key_of.get(t)) else {
                continue;
            };
            match e["kind"].as_str().expect("kind") {
                "task.claimed" => {
                    let n = held.entry(key).or_default();
                    *n += 1;
                    assert!(*n <= 1, "two holders of {key} at event {}", e["id"]);
                }
                "task.completed" | "task.failed" | "task.released" => {
                    *held.entry(key).or_default() -= 1;
                    if e["kind"] == "task.completed" {
                        let task = e["task_id"].as_str().expect("task id");
                        *completed.entry(task).or_default() += 1;
                    }
                }
                _ => {}
            }
        }
        assert_eq!(completed.len(), tasks);
        assert!(
            completed.values().all(|n| *n == 1),
            "every task completed once"
        );
    }

    /// A REST agent that reports with `?next=true` (one round trip a task), long-polling when
    /// the queue is empty, until `done` reaches `total`; the ids of the tasks it completed.
    pub async fn rest_next_worker(
        &self,
        agent: &TestAgent,
        done: &std::sync::atomic::AtomicUsize,
        total: usize,
    ) -> Vec<Uuid> {
        use std::sync::atomic::Ordering;
        let client = self.as_agent(agent);
        let mut mine = Vec::new();
        let mut task = None;
        while done.load(Ordering::SeqCst) < total {
            let c = match task.take() {
                Some(c) => c,
                None => match client.claim(Some(1)).await.expect("claim") {
                    Some(c) => c,
                    None => continue,
                },
            };
            let finished = client
                .complete_next(c.task.id, json!({ "by": agent.name }))
                .await
                .expect("complete");
            mine.push(finished.task.id);
            done.fetch_add(1, Ordering::SeqCst);
            task = finished.next;
        }
        assert!(task.is_none(), "no task left claimed");
        mine
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.server.take() {
            h.await.expect("server task").expect("server ran cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A typed answer as JSON, for tests that assert on field names as the wire has them.
pub fn json_of(v: impl serde::Serialize) -> Value {
    serde_json::to_value(v).expect("serialisable")
}

pub fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

/// The `agora` binary of this build (`target/<profile>/agora`, beside the test's `deps/`).
/// `scripts/test.sh` builds it first; `cargo build -p agora-cli` does too.
pub fn agora_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("agora"))
        .expect("target/<profile>/");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p agora-cli` (scripts/test.sh does) first",
        bin.display()
    );
    bin
}

/// Whether an external tool is on PATH. Under CI (`CI=true`) a missing tool fails the test;
/// elsewhere the test says loudly that it skipped.
pub fn require_tool(name: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is not installed; CI must install it (see .ci/run)"
        );
        eprintln!("SKIPPED: {name} is not installed");
    }
    found
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `agora serve` of this build on loopback `port`, with its SQLite database and repositories
/// in `data` (DATABASE_URL from the test's environment is not passed on); killed when dropped.
pub fn serve_command(port: u16, data: &std::path::Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(agora_bin());
    cmd.args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--db-path")
        .arg(data.join("agora.db"))
        .arg("--repos-dir")
        .arg(data.join("repos"))
        .env_remove("DATABASE_URL")
        .kill_on_drop(true);
    cmd
}

/// The real `agora serve` on a fixed port and data folder, so it can be restarted in place.
pub struct RealServer {
    pub port: u16,
    pub data: std::path::PathBuf,
    pub child: Option<tokio::process::Child>,
}

impl RealServer {
    /// Starts the binary on SQLite in `data` with `env` on top of the defaults, and waits for
    /// its health.
    pub async fn start(port: u16, data: &std::path::Path, env: &[(&str, &str)]) -> RealServer {
        let child = serve_command(port, data)
            .env("RUST_LOG", "warn")
            .env("GIT_ENABLED", "false")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start agora serve");
        let server = RealServer {
            port,
            data: data.to_path_buf(),
            child: Some(child),
        };
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while http.get(server.url("/api/health")).send().await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not come up"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// SIGKILL, like a crash.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// SIGTERM, then the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("the server is running");
        let pid = c.id().expect("pid") as i32;
        // SAFETY: kill(2) sends a signal to our child; no memory is involved.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        c.wait().await.expect("wait for the server")
    }
}

/// The value of the first line of Prometheus text that starts with `prefix`.
pub fn metric_sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `f` until it returns `Some`, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within {secs} s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

pub async fn task(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/tasks/{id}")).await.ok()
}

/// A submit body with only a title and a spec (the rest left to the server).
pub fn job_body(title: &str, spec: Value) -> SubmitJob {
    SubmitJob {
        title: title.into(),
        job_spec: spec,
        priority: None,
        approvals_required: None,
        submitted_by: None,
        approval_ttl_secs: None,
        plan_approvals_required: None,
        idempotency_key: None,
    }
}

/// Registers an agent with these capabilities.
pub async fn register_with(app: &TestApp, name: &str, caps: &[&str]) -> TestAgent {
    let r = app
        .client()
        .register(name, Some(caps.iter().map(|c| c.to_string()).collect()))
        .await
        .expect("register");
    TestAgent {
        id: r.agent_id,
        token: r.token,
        name: name.to_string(),
    }
}
