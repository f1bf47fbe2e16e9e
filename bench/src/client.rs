//! The bench's agents: a small REST client and WebSocket agents that timestamp what arrives.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_shared::ws::ServerMsg;
use anyhow::{anyhow, Context};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

#[derive(Clone)]
pub struct Agent {
    pub id: Uuid,
    pub token: String,
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(128)
                .build()
                .expect("client"),
            base: base.to_string(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await?.json().await?;
        if v["success"] != true {
            return Err(anyhow!("{path}: {}", v["error"]));
        }
        Ok(v["data"].clone())
    }

    pub async fn register(&self, name: &str) -> anyhow::Result<Agent> {
        let d = self
            .call(
                reqwest::Method::POST,
                "/agents/register",
                None,
                Some(json!({ "name": name })),
            )
            .await?;
        Ok(Agent {
            id: d["agent_id"].as_str().context("agent_id")?.parse()?,
            token: d["token"].as_str().context("token")?.into(),
        })
    }

    /// `register` for a name the caller no longer needs.
    pub async fn register_owned(&self, name: String) -> anyhow::Result<Agent> {
        self.register(&name).await
    }

    pub async fn submit_spec(&self, title: &str, spec: Value) -> anyhow::Result<Uuid> {
        let d = self
            .call(
                reqwest::Method::POST,
                "/jobs",
                None,
                Some(json!({ "title": title, "job_spec": spec })),
            )
            .await?;
        Ok(d["id"].as_str().context("id")?.parse()?)
    }

    pub async fn submit(&self, title: &str) -> anyhow::Result<Uuid> {
        let d = self
            .call(
                reqwest::Method::POST,
                "/jobs",
                None,
                Some(json!({ "title": title, "job_spec": {} })),
            )
            .await?;
        Ok(d["id"].as_str().context("id")?.parse()?)
    }

    pub async fn approve(&self, job: Uuid, a: &Agent) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::POST,
            &format!("/jobs/{job}/approve"),
            Some(&a.token),
            Some(json!({ "agent_id": a.id })),
        )
        .await
        .map(|_| ())
    }

    pub async fn claim(&self, a: &Agent, wait_secs: u32) -> anyhow::Result<Option<Value>> {
        let d = self
            .call(
                reqwest::Method::POST,
                "/tasks/claim",
                Some(&a.token),
                Some(json!({ "agent_id": a.id, "wait_secs": wait_secs })),
            )
            .await?;
        Ok((!d.is_null()).then_some(d))
    }

    pub async fn complete(&self, a: &Agent, task: &str, result: Value) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::POST,
            &format!("/tasks/{task}/complete"),
            Some(&a.token),
            Some(json!({ "result": result })),
        )
        .await
        .map(|_| ())
    }

    /// Completes a claimed plan task with an empty plan (which completes its job).
    pub async fn finish_plan(&self, a: &Agent, claimed: &Value) -> anyhow::Result<()> {
        let id = claimed["task"]["id"]
            .as_str()
            .context("task id")?
            .to_string();
        self.complete(a, &id, json!({ "task_specs": [] })).await
    }

    /// A job whose plan landed with `n` work tasks, all pending.
    pub async fn planned_job(&self, planner: &Agent, n: usize) -> anyhow::Result<Uuid> {
        self.planned_job_with_spec(planner, n, json!({})).await
    }

    /// The same, for a job with `spec`.
    pub async fn planned_job_with_spec(
        &self,
        planner: &Agent,
        n: usize,
        spec: Value,
    ) -> anyhow::Result<Uuid> {
        let job = self.submit_spec("bench", spec).await?;
        self.approve(job, planner).await?;
        let plan = self.claim(planner, 5).await?.context("the plan task")?;
        let id = plan["task"]["id"].as_str().context("plan id")?.to_string();
        let specs: Vec<Value> = (0..n).map(|i| json!(i)).collect();
        self.complete(planner, &id, json!({ "task_specs": specs }))
            .await?;
        Ok(job)
    }
}

type Sink = futures::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;

/// A WebSocket agent whose reader timestamps each message on arrival.
pub struct WsAgent {
    sink: Sink,
    pub rx: mpsc::UnboundedReceiver<(Instant, ServerMsg)>,
}

impl WsAgent {
    pub async fn connect(ws_base: &str, a: &Agent) -> anyhow::Result<WsAgent> {
        let url = format!("{ws_base}/agents/{}/ws?token={}", a.id, a.token);
        let (socket, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
        let (sink, mut stream) = socket.split();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                if let Message::Text(t) = m {
                    if let Ok(msg) = serde_json::from_str::<ServerMsg>(t.as_str()) {
                        if tx.send((Instant::now(), msg)).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Ok(WsAgent { sink, rx })
    }

    pub async fn send(&mut self, v: Value) -> anyhow::Result<()> {
        self.sink.send(Message::Text(v.to_string().into())).await?;
        Ok(())
    }

    pub async fn next(&mut self) -> anyhow::Result<(Instant, ServerMsg)> {
        tokio::time::timeout(Duration::from_secs(30), self.rx.recv())
            .await
            .map_err(|_| anyhow!("no message within 30 s"))?
            .ok_or_else(|| anyhow!("socket closed"))
    }

    /// The next offer: (arrival, offer id, task id).
    pub async fn offer(&mut self) -> anyhow::Result<(Instant, Uuid, Uuid)> {
        loop {
            if let (at, ServerMsg::TaskOffer { offer_id, task, .. }) = self.next().await? {
                return Ok((at, offer_id, task.id));
            }
        }
    }

    pub async fn acked(&mut self, kind: &str) -> anyhow::Result<()> {
        loop {
            if let (
                _,
                ServerMsg::Ack {
                    kind: k, ok, error, ..
                },
            ) = self.next().await?
            {
                if k == kind {
                    return if ok {
                        Ok(())
                    } else {
                        Err(anyhow!("{kind} refused: {error:?}"))
                    };
                }
            }
        }
    }
}

pub struct Bench {
    api: Api,
    ws_base: String,
    /// Every replica's API and WebSocket base; throughput agents are spread over them.
    replicas: Vec<(Api, String)>,
}

impl Bench {
    pub fn new(replicas: Vec<(Api, String)>) -> Bench {
        let (api, ws_base) = replicas[0].clone();
        Bench {
            api,
            ws_base,
            replicas,
        }
    }

    /// Approve a job (its plan task becomes pending) and time the offer to an idle agent.
    pub async fn ws_wake(&self, samples: usize) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
        let agent = self.api.register("wake-ws").await?;
        let mut ws = WsAgent::connect(&self.ws_base, &agent).await?;
        ws.send(json!({ "type": "ready", "slots": 1 })).await?;
        ws.acked("ready").await?;
        let (mut from_commit, mut from_request) = (Vec::new(), Vec::new());
        for _ in 0..samples {
            let job = self.api.submit("wake").await?;
            let sent = Instant::now();
            self.api.approve(job, &agent).await?;
            let committed = Instant::now();
            let (at, offer_id, task) = ws.offer().await?;
            from_commit.push(at.saturating_duration_since(committed));
            from_request.push(at.saturating_duration_since(sent));
            ws.send(json!({ "type": "accept", "offer_id": offer_id }))
                .await?;
            ws.acked("accept").await?;
            ws.send(json!({ "type": "complete", "task_id": task, "result": { "task_specs": [] } }))
                .await?;
            ws.acked("complete").await?;
        }
        Ok((from_commit, from_request))
    }

    pub async fn long_poll_wake(
        &self,
        samples: usize,
    ) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
        let agent = self.api.register("wake-lp").await?;
        let (mut from_commit, mut from_request) = (Vec::new(), Vec::new());
        for _ in 0..samples {
            let job = self.api.submit("wake").await?;
            let poller = {
                let (api, agent) = (self.api.clone(), agent.clone());
                tokio::spawn(async move {
                    let r = api.claim(&agent, 30).await;
                    (Instant::now(), r)
                })
            };
            tokio::time::sleep(Duration::from_millis(20)).await;
            let sent = Instant::now();
            self.api.approve(job, &agent).await?;
            let committed = Instant::now();
            let (at, claimed) = poller.await?;
            let claimed = claimed?.context("long-poll answered without a task")?;
            from_commit.push(at.saturating_duration_since(committed));
            from_request.push(at.saturating_duration_since(sent));
            self.api.finish_plan(&agent, &claimed).await?;
        }
        Ok((from_commit, from_request))
    }

    /// A curl agent that claims every `every` without waiting.
    pub async fn polling_wake(
        &self,
        samples: usize,
        every: Duration,
    ) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
        let agent = self.api.register("wake-poll").await?;
        let mut lat = Vec::new();
        for i in 0..samples {
            let job = self.api.submit("wake").await?;
            let poller = {
                let (api, agent) = (self.api.clone(), agent.clone());
                tokio::spawn(async move {
                    loop {
                        match api.claim(&agent, 0).await {
                            Ok(Some(c)) => return Ok((Instant::now(), c)),
                            Ok(None) => tokio::time::sleep(every).await,
                            Err(e) => return Err(e),
                        }
                    }
                })
            };
            // Land the task at a spread of phases of the poll cycle.
            tokio::time::sleep(
                every.mul_f64(((i * 7919) % samples.max(1)) as f64 / samples.max(1) as f64),
            )
            .await;
            self.api.approve(job, &agent).await?;
            let committed = Instant::now();
            let (at, claimed) = poller.await??;
            lat.push(at.saturating_duration_since(committed));
            self.api.finish_plan(&agent, &claimed).await?;
        }
        Ok((lat, Vec::new()))
    }

    /// `agents` WebSocket agents drain a job of `tasks` pending tasks; the time from their
    /// first `ready` to the last completion.
    pub async fn throughput(&self, agents: usize, tasks: usize) -> anyhow::Result<Duration> {
        let planner = self.api.register("planner").await?;
        self.api.planned_job(&planner, tasks).await?;
        let mut sockets = Vec::new();
        for i in 0..agents {
            let (api, ws_base) = &self.replicas[i % self.replicas.len()];
            let a = api.register(&format!("tp-{i}")).await?;
            sockets.push(WsAgent::connect(ws_base, &a).await?);
        }
        let done = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut workers = Vec::new();
        for mut ws in sockets {
            let done = done.clone();
            workers.push(tokio::spawn(async move {
                ws.send(json!({ "type": "ready", "slots": 4 })).await?;
                let mut finished = None;
                while done.load(Ordering::Relaxed) < tasks {
                    let msg = match tokio::time::timeout(Duration::from_millis(200), ws.rx.recv()).await {
                        Ok(Some((_, m))) => m,
                        Ok(None) => break,
                        Err(_) => continue,
                    };
                    match msg {
                        ServerMsg::TaskOffer { offer_id, .. } => {
                            ws.send(json!({ "type": "accept", "offer_id": offer_id })).await?;
                        }
                        ServerMsg::Ack { kind, ok: true, task: Some(t), .. } if kind == "accept" => {
                            ws.send(json!({ "type": "complete", "task_id": t.id, "result": { "ok": true } })).await?;
                        }
                        ServerMsg::Ack { kind, ok: true, .. } if kind == "complete" => {
                            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                            finished = finished.or((n == tasks).then(Instant::now));
                        }
                        ServerMsg::Ack { ok: false, error, kind, .. } => return Err(anyhow!("{kind} refused: {error:?}")),
                        _ => {}
                    }
                }
                anyhow::Ok(finished)
            }));
        }
        let mut last = None;
        for w in workers {
            last = last.max(w.await??);
        }
        let last = last.context("the run did not finish")?;
        Ok(last.duration_since(started))
    }

    /// The mean time of a REST claim (then completed) on a job with `spec`, over `n` tasks.
    pub async fn claim_cost(&self, spec: Value, n: usize) -> anyhow::Result<Duration> {
        let agent = self.api.register("claimer").await?;
        self.api.planned_job_with_spec(&agent, n, spec).await?;
        let mut spent = Duration::ZERO;
        for _ in 0..n {
            let started = Instant::now();
            let claimed = self.api.claim(&agent, 0).await?.context("a pending task")?;
            spent += started.elapsed();
            let id = claimed["task"]["id"]
                .as_str()
                .context("task id")?
                .to_string();
            self.api.complete(&agent, &id, json!(null)).await?;
        }
        Ok(spent / u32::try_from(n.max(1)).unwrap_or(u32::MAX))
    }

    /// Connects `n` agents that announce one slot and wait.
    pub async fn idle_sockets(&self, n: usize) -> anyhow::Result<Vec<WsAgent>> {
        let mut held = Vec::with_capacity(n);
        for i in 0..n {
            let a = self.api.register(&format!("idle-{i}")).await?;
            let mut ws = WsAgent::connect(&self.ws_base, &a).await?;
            ws.send(json!({ "type": "ready", "slots": 1 })).await?;
            held.push(ws);
        }
        Ok(held)
    }
}
