//! Agora's Rust SDK: one typed method per REST endpoint, returning `agora-shared` types, and
//! one error type that carries the server's stable error code.
//!
//! ```no_run
//! # async fn demo() -> Result<(), agora_client::ClientError> {
//! use agora_client::Client;
//! use agora_shared::SubmitJob;
//!
//! let mut agent = Client::new("http://localhost:3000");
//! agent.register("worker-1", None).await?;            // keeps the token
//! let job = Client::new("http://localhost:3000")
//!     .submit(&SubmitJob {
//!         title: "Refactor".into(),
//!         job_spec: serde_json::json!({ "repo": "x" }),
//!         priority: None,
//!         approvals_required: None,
//!         submitted_by: None,
//!         approval_ttl_secs: None,
//!         plan_approvals_required: None,
//!         idempotency_key: None,
//!     })
//!     .await?;
//! agent.approve(job.id, None).await?;
//! if let Some(claimed) = agent.claim(Some(30)).await? {  // long-poll up to 30 s
//!     agent.start(claimed.task.id).await?;
//!     agent.progress(claimed.task.id, 50, Some("half way")).await?;
//!     agent.complete(claimed.task.id, serde_json::json!({ "ok": true })).await?;
//! }
//! agent.unregister().await?;
//! # Ok(()) }
//! ```
//!
//! [`Client::event_stream`] follows the SSE feed and resumes from its last id across reconnects.
//!
//! [`Client::session`] opens the agent's WebSocket: offers pushed by the server, reconnecting
//! with backoff.
//!
//! The `agora` CLI (`agora worker`, `agora submit`, ...) is built on this crate.

mod events;
mod session;
pub use events::EventStream;
pub use session::Session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use agora_shared::{
    vote_path, Agent, AgentListQuery, Approval, Approved, CanApprove, CancelJob, ClaimTask,
    ClaimedTask, CompleteTask, Envelope, ErrorCode, Event, EventListQuery, FailTask,
    FinishedWithNext, Health, Job, JobListQuery, Page, ProgressTask, RegisterAgent, Registered,
    Role, SetRoles, Stage, StartTask, Stats, SubmitJob, Task, TaskListQuery, Verdict, VoteBody,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// What can go wrong with a call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error envelope.
    #[error("{status} {code:?}: {message}")]
    Api {
        status: u16,
        code: ErrorCode,
        message: String,
        field: Option<String>,
    },
    /// The request did not get an answer (connection refused, timeout, ...).
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The answer was not the JSON the API promises.
    #[error("unexpected answer ({status}): {body}")]
    Unexpected { status: u16, body: String },
    /// The call needs an agent identity: register first (or use `with_agent`).
    #[error("this call needs an agent: register first")]
    NoAgent,
}

impl ClientError {
    /// The server's error code, when the server answered.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// Who casts a vote: the client's own agent, or a named person through the operator (with
/// `ADMIN_TOKEN` when the server sets one).
#[derive(Debug, Clone, Copy)]
pub enum VoteAs<'a> {
    Agent,
    Person {
        name: &'a str,
        admin_token: Option<&'a str>,
    },
}

/// A connection to one Agora server, optionally acting as one agent.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    agent: Option<(Uuid, String)>,
    /// Task id → the lease of the delivery this client claimed, sent with every report on the
    /// task so that a report on a delivery that has ended is refused (`LEASE_LOST`).
    leases: Arc<Mutex<HashMap<Uuid, Uuid>>>,
}

impl Client {
    /// `base` is the server's address, e.g. `http://localhost:3000` (with or without `/api`).
    pub fn new(base: &str) -> Client {
        let base = base
            .trim_end_matches('/')
            .trim_end_matches("/api")
            .to_string();
        Client {
            base: format!("{base}/api"),
            http: reqwest::Client::new(),
            agent: None,
            leases: Arc::default(),
        }
    }

    /// The server's MCP endpoint (`<server>/mcp`), for MCP clients.
    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.base.trim_end_matches("/api"))
    }

    /// Acts as an agent registered earlier.
    pub fn with_agent(mut self, agent_id: Uuid, token: impl Into<String>) -> Client {
        self.agent = Some((agent_id, token.into()));
        self
    }

    /// The agent this client acts as.
    pub fn agent_id(&self) -> Option<Uuid> {
        self.agent.as_ref().map(|(id, _)| *id)
    }

    /// The agent's token, to hand to another process.
    pub fn token(&self) -> Option<&str> {
        self.agent.as_ref().map(|(_, t)| t.as_str())
    }

    fn me(&self) -> Result<Uuid> {
        self.agent_id().ok_or(ClientError::NoAgent)
    }

    /// The lease this client holds on `task`, from its claim.
    pub fn lease_of(&self, task: Uuid) -> Option<Uuid> {
        self.leases.lock().ok()?.get(&task).copied()
    }

    fn remember_lease(&self, task: Uuid, lease: Uuid) {
        if let Ok(mut m) = self.leases.lock() {
            m.insert(task, lease);
        }
    }

    fn forget_lease(&self, task: Uuid) {
        if let Ok(mut m) = self.leases.lock() {
            m.remove(&task);
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<Option<T>> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token.or(self.agent.as_ref().map(|(_, t)| t.as_str())) {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        let text = res.text().await?;
        let env: Envelope<T> =
            serde_json::from_str(&text).map_err(|_| ClientError::Unexpected {
                status,
                body: text.clone(),
            })?;
        match env.error {
            Some(e) => Err(ClientError::Api {
                status,
                code: e.code,
                message: e.message,
                field: e.field,
            }),
            None => Ok(env.data),
        }
    }

    /// A call whose answer must carry data.
    async fn call_data<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T> {
        self.call(method, path, token, body)
            .await?
            .ok_or(ClientError::Unexpected {
                status: 200,
                body: format!("{path}: the answer has no data"),
            })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call_data(reqwest::Method::GET, path, None, None::<&Value>)
            .await
    }

    /// A GET with a query string, encoded from one of the shared query types.
    async fn get_query<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &impl Serialize,
    ) -> Result<T> {
        let encoded = serde_urlencoded::to_string(query).map_err(|e| ClientError::Unexpected {
            status: 0,
            body: format!("{path}: the query could not be encoded: {e}"),
        })?;
        if encoded.is_empty() {
            return self.get(path).await;
        }
        self.get(&format!("{path}?{encoded}")).await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &(impl Serialize + ?Sized),
    ) -> Result<T> {
        self.call_data(reqwest::Method::POST, path, None, Some(body))
            .await
    }

    /// Registers a new agent and acts as it from now on (the token is kept in the client).
    pub async fn register(
        &mut self,
        name: &str,
        capabilities: Option<Vec<String>>,
    ) -> Result<Registered> {
        let body = RegisterAgent {
            name: name.into(),
            capabilities,
        };
        let r: Registered = self.post("/agents/register", &body).await?;
        self.agent = Some((r.agent_id, r.token.clone()));
        Ok(r)
    }

    pub async fn heartbeat(&self) -> Result<Agent> {
        self.call_data(
            reqwest::Method::POST,
            &format!("/agents/{}/heartbeat", self.me()?),
            None,
            None::<&Value>,
        )
        .await
    }

    /// Unregisters: the token stops working and the agent's tasks go back to pending.
    pub async fn unregister(&self) -> Result<Agent> {
        self.call_data(
            reqwest::Method::DELETE,
            &format!("/agents/{}", self.me()?),
            None,
            None::<&Value>,
        )
        .await
    }

    /// Registered agents, online first, then the most recently seen.
    pub async fn agents(&self, query: &AgentListQuery) -> Result<Page<Agent>> {
        self.get_query("/agents", query).await
    }

    pub async fn can_approve(&self, agent: Uuid) -> Result<CanApprove> {
        self.get(&format!("/agents/{agent}/can-approve")).await
    }

    pub async fn submit(&self, job: &SubmitJob) -> Result<Job> {
        self.post("/jobs", job).await
    }

    pub async fn job(&self, id: Uuid) -> Result<Job> {
        self.get(&format!("/jobs/{id}")).await
    }

    /// Jobs, newest first: a state, a title search, a page.
    pub async fn jobs(&self, query: &JobListQuery) -> Result<Page<Job>> {
        self.get_query("/jobs", query).await
    }

    /// A job's tasks in index order (0 is the plan task), a page at a time.
    pub async fn tasks(&self, job: Uuid, query: &TaskListQuery) -> Result<Page<Task>> {
        self.get_query(&format!("/jobs/{job}/tasks"), query).await
    }

    /// The tasks an agent holds or held, newest first (`GET /api/tasks?agent_id=`, first 1,000).
    pub async fn tasks_of_agent(&self, agent: Uuid) -> Result<Vec<Task>> {
        let query = TaskListQuery {
            agent_id: Some(agent),
            limit: Some(1000),
            ..TaskListQuery::default()
        };
        let page: Page<Task> = self.get_query("/tasks", &query).await?;
        Ok(page.items)
    }

    /// Every vote on the job and its plans, in order.
    pub async fn approvals(&self, job: Uuid) -> Result<Vec<Approval>> {
        self.get(&format!("/jobs/{job}/approvals")).await
    }

    /// A job's events after `after`, oldest first (up to 1,000).
    pub async fn events(&self, job: Uuid, after: i64) -> Result<Vec<Event>> {
        let query = EventListQuery {
            after: Some(after),
            order: None,
            limit: Some(1000),
        };
        self.get_query(&format!("/jobs/{job}/events"), &query).await
    }

    /// Approves a job as this client's agent.
    pub async fn approve(&self, job: Uuid, comment: Option<&str>) -> Result<Approved> {
        self.vote(job, Stage::Job, Verdict::Approve, comment, VoteAs::Agent)
            .await
    }

    /// Rejects a job as this client's agent: it fails with the reason.
    pub async fn reject(&self, job: Uuid, reason: &str) -> Result<Approved> {
        self.vote(
            job,
            Stage::Job,
            Verdict::Reject,
            Some(reason),
            VoteAs::Agent,
        )
        .await
    }

    /// Approves the plan under review as this client's agent.
    pub async fn approve_plan(&self, job: Uuid, comment: Option<&str>) -> Result<Approved> {
        self.vote(job, Stage::Plan, Verdict::Approve, comment, VoteAs::Agent)
            .await
    }

    /// Rejects the plan under review as this client's agent: a new plan task carries the reason.
    pub async fn reject_plan(&self, job: Uuid, reason: &str) -> Result<Approved> {
        self.vote(
            job,
            Stage::Plan,
            Verdict::Reject,
            Some(reason),
            VoteAs::Agent,
        )
        .await
    }

    /// A vote on a job or its plan: `text` is an approval's comment or a rejection's reason.
    pub async fn vote(
        &self,
        job: Uuid,
        stage: Stage,
        verdict: Verdict,
        text: Option<&str>,
        voter: VoteAs<'_>,
    ) -> Result<Approved> {
        let (agent_id, person, token) = match voter {
            VoteAs::Agent => (Some(self.me()?), None, None),
            VoteAs::Person { name, admin_token } => (None, Some(name.to_string()), admin_token),
        };
        let body = VoteBody::new(verdict, agent_id, person, text.map(str::to_string));
        let path = vote_path(job, stage, verdict);
        self.call_data(reqwest::Method::POST, &path, token, Some(&body))
            .await
    }

    /// Operator: sets an agent's roles; `admin_token` when the server sets ADMIN_TOKEN.
    pub async fn set_roles(
        &self,
        agent: Uuid,
        roles: Vec<Role>,
        admin_token: Option<&str>,
    ) -> Result<Agent> {
        self.call_data(
            reqwest::Method::PUT,
            &format!("/agents/{agent}/roles"),
            admin_token,
            Some(&SetRoles { roles }),
        )
        .await
    }

    /// Operator cancel; `admin_token` when the server sets ADMIN_TOKEN.
    pub async fn cancel(
        &self,
        job: Uuid,
        reason: Option<&str>,
        admin_token: Option<&str>,
    ) -> Result<Job> {
        self.call_data(
            reqwest::Method::POST,
            &format!("/jobs/{job}/cancel"),
            admin_token,
            Some(&CancelJob {
                reason: reason.map(str::to_string),
            }),
        )
        .await
    }

    /// Claims the next task; with `wait_secs` the server holds the call until one is pending.
    /// The claim's lease is remembered and sent with every report on the task.
    pub async fn claim(&self, wait_secs: Option<u32>) -> Result<Option<ClaimedTask>> {
        self.claim_with(wait_secs, None).await
    }

    /// A claim with a `request_id`: calling again with the same id (after a lost answer) gets
    /// the same task and lease back while the lease lives, not a second task.
    pub async fn claim_with(
        &self,
        wait_secs: Option<u32>,
        request_id: Option<&str>,
    ) -> Result<Option<ClaimedTask>> {
        let body = ClaimTask {
            agent_id: self.me()?,
            wait_secs,
            request_id: request_id.map(str::to_string),
        };
        let claimed: Option<ClaimedTask> = self
            .call(reqwest::Method::POST, "/tasks/claim", None, Some(&body))
            .await?;
        if let Some(c) = &claimed {
            self.remember_lease(c.task.id, c.lease_id);
        }
        Ok(claimed)
    }

    pub async fn start(&self, task: Uuid) -> Result<Task> {
        self.start_with(task, None).await
    }

    /// Starts with `heartbeat_secs`: the task is taken back (a failed attempt) when no progress
    /// or heartbeat comes within that many seconds, instead of at its deadline.
    pub async fn start_with(&self, task: Uuid, heartbeat_secs: Option<u64>) -> Result<Task> {
        let body = StartTask {
            lease_id: self.lease_of(task),
            heartbeat_secs,
        };
        self.post(&format!("/tasks/{task}/start"), &body).await
    }

    pub async fn progress(&self, task: Uuid, progress: u32, message: Option<&str>) -> Result<Task> {
        let body = ProgressTask {
            progress,
            message: message.map(str::to_string),
            extend_secs: None,
            lease_id: self.lease_of(task),
        };
        self.post(&format!("/tasks/{task}/progress"), &body).await
    }

    pub async fn complete(&self, task: Uuid, result: Value) -> Result<Task> {
        let body = CompleteTask {
            result,
            lease_id: self.lease_of(task),
        };
        let done = self.post(&format!("/tasks/{task}/complete"), &body).await;
        self.forget_finished(task, &done);
        done
    }

    pub async fn fail(&self, task: Uuid, error: &str, retryable: bool) -> Result<Task> {
        let body = FailTask {
            error: error.to_string(),
            retryable: Some(retryable),
            lease_id: self.lease_of(task),
        };
        let done = self.post(&format!("/tasks/{task}/fail"), &body).await;
        self.forget_finished(task, &done);
        done
    }

    /// Completes and claims the agent's next task in the same commit (`?next=true`): one round
    /// trip per task. `next` is `None` when nothing is pending for the agent.
    pub async fn complete_next(&self, task: Uuid, result: Value) -> Result<FinishedWithNext> {
        let body = CompleteTask {
            result,
            lease_id: self.lease_of(task),
        };
        let done = self
            .post(&format!("/tasks/{task}/complete?next=true"), &body)
            .await;
        self.after_next(task, done)
    }

    /// A failed attempt, and the agent's next task claimed in the same commit.
    pub async fn fail_next(
        &self,
        task: Uuid,
        error: &str,
        retryable: bool,
    ) -> Result<FinishedWithNext> {
        let body = FailTask {
            error: error.to_string(),
            retryable: Some(retryable),
            lease_id: self.lease_of(task),
        };
        let done = self
            .post(&format!("/tasks/{task}/fail?next=true"), &body)
            .await;
        self.after_next(task, done)
    }

    fn after_next(&self, task: Uuid, done: Result<FinishedWithNext>) -> Result<FinishedWithNext> {
        self.forget_finished(task, &done);
        if let Ok(FinishedWithNext { next: Some(c), .. }) = &done {
            self.remember_lease(c.task.id, c.lease_id);
        }
        done
    }

    /// The delivery ended (reported, or lost): its lease is of no further use.
    fn forget_finished<T>(&self, task: Uuid, done: &Result<T>) {
        let ended = match done {
            Ok(_) => true,
            Err(e) => matches!(e.code(), Some(ErrorCode::LeaseLost)),
        };
        if ended {
            self.forget_lease(task);
        }
    }

    /// Database reachability; an error when the server is not healthy.
    pub async fn health(&self) -> Result<Health> {
        self.get("/health").await
    }

    pub async fn stats(&self) -> Result<Stats> {
        self.get("/stats").await
    }
}
