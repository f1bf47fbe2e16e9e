//! The REST API, decoded into the `agora-shared` types.

use agora_shared::{
    vote_path, Agent, AgentListQuery, Approval, Approved, CancelJob, CommitInfo, CommitListQuery,
    Envelope, ErrorCode, Event, EventListQuery, Health, Job, JobListQuery, Page, Stage, Stats,
    StatsSeries, StatsSeriesQuery, SubmitJob, Task, TaskListQuery, VoteBody,
};
use gloo_net::http::{Request, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

/// What a failed call tells the user.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiFailure {
    pub status: u16,
    pub code: Option<ErrorCode>,
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "{} ({:?})", self.message, code),
            None => write!(f, "{}", self.message),
        }
    }
}

fn network(e: gloo_net::Error) -> ApiFailure {
    ApiFailure {
        status: 0,
        code: None,
        message: format!("the server did not answer: {e}"),
    }
}

async fn decode<T: DeserializeOwned>(res: Response) -> Result<T, ApiFailure> {
    let status = res.status();
    let env: Envelope<T> = res.json().await.map_err(|e| ApiFailure {
        status,
        code: None,
        message: format!("unexpected answer ({status}): {e}"),
    })?;
    match (env.error, env.data) {
        (Some(e), _) => Err(ApiFailure {
            status,
            code: Some(e.code),
            message: e.message,
        }),
        (None, Some(data)) => Ok(data),
        (None, None) => Err(ApiFailure {
            status,
            code: None,
            message: "the answer has no data".into(),
        }),
    }
}

/// `GET /api{path}`, with `query` encoded as its query string.
async fn get<T: DeserializeOwned>(path: &str, query: &impl Serialize) -> Result<T, ApiFailure> {
    let query = serde_urlencoded::to_string(query).map_err(|e| ApiFailure {
        status: 0,
        code: None,
        message: format!("could not encode the query: {e}"),
    })?;
    let url = match query.is_empty() {
        true => format!("/api{path}"),
        false => format!("/api{path}?{query}"),
    };
    let res = Request::get(&url).send().await.map_err(network)?;
    decode(res).await
}

/// `POST /api{path}` with a JSON body, and a bearer token when given.
async fn post<T: DeserializeOwned>(
    path: &str,
    body: &impl Serialize,
    token: Option<&str>,
) -> Result<T, ApiFailure> {
    let mut req: RequestBuilder = Request::post(&format!("/api{path}"));
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let res = req
        .json(body)
        .map_err(network)?
        .send()
        .await
        .map_err(network)?;
    decode(res).await
}

/// No query string.
const NONE: [(); 0] = [];

// One function per call the dashboard makes: the path and the types of each in one place.

pub async fn health() -> Result<Health, ApiFailure> {
    get("/health", &NONE).await
}

pub async fn stats() -> Result<Stats, ApiFailure> {
    get("/stats", &NONE).await
}

pub async fn stats_series(query: StatsSeriesQuery) -> Result<StatsSeries, ApiFailure> {
    get("/stats/series", &query).await
}

pub async fn jobs(query: JobListQuery) -> Result<Page<Job>, ApiFailure> {
    get("/jobs", &query).await
}

pub async fn job(id: Uuid) -> Result<Job, ApiFailure> {
    get(&format!("/jobs/{id}"), &NONE).await
}

pub async fn job_events(id: Uuid, query: EventListQuery) -> Result<Vec<Event>, ApiFailure> {
    get(&format!("/jobs/{id}/events"), &query).await
}

pub async fn approvals(id: Uuid) -> Result<Vec<Approval>, ApiFailure> {
    get(&format!("/jobs/{id}/approvals"), &NONE).await
}

pub async fn job_tasks(id: Uuid, query: TaskListQuery) -> Result<Page<Task>, ApiFailure> {
    get(&format!("/jobs/{id}/tasks"), &query).await
}

pub async fn commits(id: Uuid, query: CommitListQuery) -> Result<Page<CommitInfo>, ApiFailure> {
    get(&format!("/jobs/{id}/commits"), &query).await
}

/// Tasks of every job.
pub async fn tasks(query: TaskListQuery) -> Result<Page<Task>, ApiFailure> {
    get("/tasks", &query).await
}

pub async fn agent(id: Uuid) -> Result<Agent, ApiFailure> {
    get(&format!("/agents/{id}"), &NONE).await
}

pub async fn agents(query: AgentListQuery) -> Result<Page<Agent>, ApiFailure> {
    get("/agents", &query).await
}

pub async fn submit(job: &SubmitJob) -> Result<Job, ApiFailure> {
    post("/jobs", job, None).await
}

/// Cancels a job; `admin_token` when the server asks for one.
pub async fn cancel(
    id: Uuid,
    body: &CancelJob,
    admin_token: Option<&str>,
) -> Result<Job, ApiFailure> {
    post(&format!("/jobs/{id}/cancel"), body, admin_token).await
}

/// A vote on the job (or its plan), its path from the body's verdict; `admin_token` when the
/// server asks for one.
pub async fn vote(
    id: Uuid,
    stage: Stage,
    body: &VoteBody,
    admin_token: Option<&str>,
) -> Result<Approved, ApiFailure> {
    post(&vote_path(id, stage, body.verdict()), body, admin_token).await
}
