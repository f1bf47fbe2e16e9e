//! The bench's agents, all on the SDK (`agora-client`): REST agents are SDK clients, and
//! WebSocket agents are SDK sessions whose messages are timestamped the moment they arrive.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_client::Client;
use agora_shared::ws::{ClientMsg, ServerMsg};
use agora_shared::{ClaimedTask, SubmitJob};
use anyhow::{anyhow, Context};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use uuid::Uuid;

/// A new agent registered through `api`, acting as itself (sharing `api`'s connections).
pub async fn agent(api: &Client, name: &str) -> anyhow::Result<Client> {
    let mut agent = api.clone();
    agent.register(name, None).await?;
    Ok(agent)
}

/// Submits a job with `spec`.
pub async fn submit(api: &Client, title: &str, spec: Value) -> anyhow::Result<Uuid> {
    submit_at(api, title, spec, None).await
}

/// Submits a job with `spec` at `priority`.
pub async fn submit_at(
    api: &Client,
    title: &str,
    spec: Value,
    priority: Option<i32>,
) -> anyhow::Result<Uuid> {
    let job = api
        .submit(&SubmitJob {
            title: title.into(),
            job_spec: spec,
            priority,
            approvals_required: None,
            submitted_by: None,
            approval_ttl_secs: None,
            plan_approvals_required: None,
            idempotency_key: None,
        })
        .await?;
    Ok(job.id)
}

/// Completes a claimed plan task with an empty plan (which completes its job).
pub async fn finish_plan(agent: &Client, claimed: &ClaimedTask) -> anyhow::Result<()> {
    agent
        .complete(claimed.task.id, json!({ "task_specs": [] }))
        .await?;
    Ok(())
}

/// A job with `spec` whose plan landed with `n` work tasks, all pending.
pub async fn planned_job(planner: &Client, n: usize, spec: Value) -> anyhow::Result<Uuid> {
    let job = submit(planner, "bench", spec).await?;
    planner.approve(job, None).await?;
    let plan = planner.claim(Some(5)).await?.context("the plan task")?;
    let specs: Vec<Value> = (0..n).map(|i| json!(i)).collect();
    planner
        .complete(plan.task.id, json!({ "task_specs": specs }))
        .await?;
    Ok(job)
}

/// A WebSocket agent: an SDK session driven by a task of its own, which timestamps each
/// message on arrival (a test waiting on something else does not delay the reading).
pub struct WsAgent {
    out: mpsc::UnboundedSender<ClientMsg>,
    pub rx: mpsc::UnboundedReceiver<(Instant, ServerMsg)>,
}

impl WsAgent {
    pub async fn connect(agent: &Client) -> anyhow::Result<WsAgent> {
        let mut session = agent.session().await?;
        let (out, mut to_send) = mpsc::unbounded_channel::<ClientMsg>();
        let (arrived, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let went_on = tokio::select! {
                    msg = session.next() => match msg {
                        Ok(m) => arrived.send((Instant::now(), m)).is_ok(),
                        Err(_) => false,
                    },
                    msg = to_send.recv() => match msg {
                        Some(m) => session.send(m).await.is_ok(),
                        None => false,
                    },
                };
                if !went_on {
                    break;
                }
            }
        });
        Ok(WsAgent { out, rx })
    }

    pub fn send(&self, msg: ClientMsg) -> anyhow::Result<()> {
        self.out.send(msg).map_err(|_| anyhow!("socket closed"))
    }

    pub fn ready(&self, slots: u32) -> anyhow::Result<()> {
        self.ready_with(slots, false)
    }

    pub fn ready_with(&self, slots: u32, auto_start: bool) -> anyhow::Result<()> {
        self.send(ClientMsg::Ready { slots, auto_start })
    }

    pub fn accept(&self, offer_id: Uuid) -> anyhow::Result<()> {
        self.send(ClientMsg::Accept { offer_id })
    }

    pub fn complete(&self, task_id: Uuid, result: Value) -> anyhow::Result<()> {
        self.send(ClientMsg::Complete {
            task_id,
            result,
            lease_id: None,
        })
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
    api: Client,
    /// Every replica's API; throughput agents are spread over them.
    replicas: Vec<Client>,
}

impl Bench {
    pub fn new(replicas: Vec<Client>) -> Bench {
        Bench {
            api: replicas[0].clone(),
            replicas,
        }
    }

    /// Approve a job (its plan task becomes pending) and time the offer to an idle agent.
    pub async fn ws_wake(&self, samples: usize) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
        let agent = agent(&self.api, "wake-ws").await?;
        let mut ws = WsAgent::connect(&agent).await?;
        ws.ready(1)?;
        ws.acked("ready").await?;
        let (mut from_commit, mut from_request) = (Vec::new(), Vec::new());
        for _ in 0..samples {
            let job = submit(&self.api, "wake", json!({})).await?;
            let sent = Instant::now();
            agent.approve(job, None).await?;
            let committed = Instant::now();
            let (at, offer_id, task) = ws.offer().await?;
            from_commit.push(at.saturating_duration_since(committed));
            from_request.push(at.saturating_duration_since(sent));
            ws.accept(offer_id)?;
            ws.acked("accept").await?;
            ws.complete(task, json!({ "task_specs": [] }))?;
            ws.acked("complete").await?;
        }
        Ok((from_commit, from_request))
    }

    pub async fn long_poll_wake(
        &self,
        samples: usize,
    ) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
        let agent = agent(&self.api, "wake-lp").await?;
        let (mut from_commit, mut from_request) = (Vec::new(), Vec::new());
        for _ in 0..samples {
            let job = submit(&self.api, "wake", json!({})).await?;
            let poller = {
                let agent = agent.clone();
                tokio::spawn(async move {
                    let r = agent.claim(Some(30)).await;
                    (Instant::now(), r)
                })
            };
            tokio::time::sleep(Duration::from_millis(20)).await;
            let sent = Instant::now();
            agent.approve(job, None).await?;
            let committed = Instant::now();
            let (at, claimed) = poller.await?;
            let claimed = claimed?.context("long-poll answered without a task")?;
            from_commit.push(at.saturating_duration_since(committed));
            from_request.push(at.saturating_duration_since(sent));
            finish_plan(&agent, &claimed).await?;
        }
        Ok((from_commit, from_request))
    }

    /// A curl agent that claims every `every` without waiting.
    pub async fn polling_wake(
        &self,
        samples: usize,
        every: Duration,
    ) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
        let agent = agent(&self.api, "wake-poll").await?;
        let mut lat = Vec::new();
        for i in 0..samples {
            let job = submit(&self.api, "wake", json!({})).await?;
            let poller = {
                let agent = agent.clone();
                tokio::spawn(async move {
                    loop {
                        match agent.claim(None).await {
                            Ok(Some(c)) => return Ok((Instant::now(), c)),
                            Ok(None) => tokio::time::sleep(every).await,
                            Err(e) => return Err(anyhow::Error::from(e)),
                        }
                    }
                })
            };
            // Land the task at a spread of phases of the poll cycle.
            tokio::time::sleep(
                every.mul_f64(((i * 7919) % samples.max(1)) as f64 / samples.max(1) as f64),
            )
            .await;
            agent.approve(job, None).await?;
            let committed = Instant::now();
            let (at, claimed) = poller.await??;
            lat.push(at.saturating_duration_since(committed));
            finish_plan(&agent, &claimed).await?;
        }
        Ok((lat, Vec::new()))
    }

    /// `agents` WebSocket agents drain a job of `tasks` pending tasks; the time from their
    /// first `ready` to the last completion. With `auto_start` the agents take offers started
    /// and their next task with each completion (one round trip per task); without, they
    /// accept each offer (three). Also the server CPU seconds (`cpu`) the run took.
    pub async fn throughput(
        &self,
        agents: usize,
        tasks: usize,
        auto_start: bool,
        cpu: &dyn Fn() -> f64,
    ) -> anyhow::Result<(Duration, f64)> {
        let planner = agent(&self.api, "planner").await?;
        planned_job(&planner, tasks, json!({})).await?;
        let mut sockets = Vec::new();
        for i in 0..agents {
            let api = &self.replicas[i % self.replicas.len()];
            let a = agent(api, &format!("tp-{i}")).await?;
            sockets.push(WsAgent::connect(&a).await?);
        }
        let done = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let cpu_before = cpu();
        let mut workers = Vec::new();
        for mut ws in sockets {
            let done = done.clone();
            workers.push(tokio::spawn(async move {
                ws.ready_with(4, auto_start)?;
                let mut finished = None;
                while done.load(Ordering::Relaxed) < tasks {
                    let msg = match tokio::time::timeout(Duration::from_millis(200), ws.rx.recv())
                        .await
                    {
                        Ok(Some((_, m))) => m,
                        Ok(None) => break,
                        Err(_) => continue,
                    };
                    match msg {
                        ServerMsg::TaskOffer {
                            started: true,
                            task,
                            ..
                        } => ws.complete(task.id, json!({ "ok": true }))?,
                        ServerMsg::TaskOffer { offer_id, .. } => ws.accept(offer_id)?,
                        ServerMsg::Ack {
                            kind,
                            ok: true,
                            task: Some(t),
                            ..
                        } if kind == "accept" => {
                            ws.complete(t.id, json!({ "ok": true }))?;
                        }
                        ServerMsg::Ack { kind, ok: true, .. } if kind == "complete" => {
                            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                            finished = finished.or((n == tasks).then(Instant::now));
                        }
                        ServerMsg::Ack {
                            ok: false,
                            error,
                            kind,
                            ..
                        } => return Err(anyhow!("{kind} refused: {error:?}")),
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
        Ok((last.duration_since(started), cpu() - cpu_before))
    }

    /// The mean time of a REST claim (then completed) on a job with `spec`, over `n` tasks.
    pub async fn claim_cost(&self, spec: Value, n: usize) -> anyhow::Result<Duration> {
        let agent = agent(&self.api, "claimer").await?;
        planned_job(&agent, n, spec).await?;
        let mut spent = Duration::ZERO;
        for _ in 0..n {
            let started = Instant::now();
            let claimed = agent.claim(None).await?.context("a pending task")?;
            spent += started.elapsed();
            agent.complete(claimed.task.id, json!(null)).await?;
        }
        Ok(spent / u32::try_from(n.max(1)).unwrap_or(u32::MAX))
    }

    /// Connects `n` agents that announce one slot and wait.
    pub async fn idle_sockets(&self, n: usize) -> anyhow::Result<Vec<WsAgent>> {
        let mut held = Vec::with_capacity(n);
        for i in 0..n {
            let a = agent(&self.api, &format!("idle-{i}")).await?;
            let ws = WsAgent::connect(&a).await?;
            ws.ready(1)?;
            held.push(ws);
        }
        Ok(held)
    }
}
