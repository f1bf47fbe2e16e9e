//! `agora worker --exec CMD`: an agent that takes task offers over its WebSocket and runs a
//! shell command for each task.
//!
//! Per task, CMD runs under `sh -c` with the task spec as JSON on stdin and `AGORA_TASK_ID`,
//! `AGORA_JOB_ID`, `AGORA_TASK_INDEX`, `AGORA_TASK_TYPE`, `AGORA_ATTEMPT` and `AGORA_URL` in its
//! environment, plus `AGORA_TASK_NAME` (its name in its plan, or its position there when the
//! plan gave none), and for a task with dependencies `AGORA_INPUTS`, the path of a JSON file
//! holding their results by name, and `AGORA_INPUTS_OMITTED`, the names of those too large to
//! send (comma-separated; read them from `GET /api/jobs/:id/tasks`). A stdout line `PROGRESS 40 message` reports progress; the rest of stdout is the
//! result (JSON, or else a JSON string). A non-zero exit fails the task (retryable) with the
//! tail of stderr. CMD is killed, with its process group, at the task's timeout or when the
//! server revokes the task. Plan tasks go to `--planner` (declined without one).
//!
//! The first Ctrl-C (or SIGTERM) stops taking offers and lets running tasks finish; the second
//! kills them. Then the worker unregisters, which hands anything unfinished back to pending.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use agora_client::Client;
use agora_shared::ws::{ClientMsg, ServerMsg};
use agora_shared::{Task, TaskType};
use anyhow::Context;
use clap::Args;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::{profile, Remote};

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The shell command run for each work task.
    #[arg(long)]
    pub exec: String,
    /// The shell command run for plan tasks; its stdout must be `{"task_specs": [...]}`.
    #[arg(long)]
    pub planner: Option<String>,
    /// Tasks run at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub slots: u32,
    /// The agent's name (default: worker-<host>-<pid>).
    #[arg(long)]
    pub name: Option<String>,
    /// Comma-separated capabilities to register with.
    #[arg(long, value_delimiter = ',')]
    pub capabilities: Option<Vec<String>>,
    #[command(flatten)]
    pub remote: Remote,
}

/// What a running command reports back to the loop that owns the socket.
enum Report {
    Progress(Uuid, u32, Option<String>),
    Done(Uuid, Value),
    Failed(Uuid, String),
}

/// Kept stderr bytes of a failed command.
const STDERR_TAIL: usize = 2000;
/// How long the worker waits for the server to acknowledge its last results before leaving.
const ACK_WAIT: Duration = Duration::from_secs(10);

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let url = profile::url(&args.remote)?;
    let mut client = Client::new(&url);
    let name = args.name.clone().unwrap_or_else(default_name);
    let reg = client
        .register(&name, args.capabilities.clone())
        .await
        .with_context(|| format!("cannot register at {url}"))?;
    eprintln!(
        "agora worker: {name} is agent {} at {url}, {} slot(s)",
        reg.agent_id, args.slots
    );
    let result = serve(&args, &client, &url).await;
    client.unregister().await.context("unregister")?;
    eprintln!("agora worker: unregistered");
    result
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    format!("worker-{}-{}", host.trim(), std::process::id())
}

async fn serve(args: &WorkerArgs, client: &Client, url: &str) -> anyhow::Result<()> {
    let mut session = client.session().await?;
    // Offers arrive started and each result's answer brings the next task: one round trip per
    // task. A task this worker cannot run (a plan without --planner) is declined all the same.
    session.ready_auto_start(args.slots).await?;
    let (tx, mut rx) = mpsc::channel::<Report>(256);
    let mut worker = Worker {
        args,
        url,
        session,
        tx,
        running: HashMap::new(),
        accepting: HashMap::new(),
        unacked: 0,
        draining: false,
    };
    let mut drained_at = None;
    let mut signals = Signals::new()?;
    loop {
        if worker.draining && worker.running.is_empty() && worker.accepting.is_empty() {
            let waited = drained_at.get_or_insert_with(tokio::time::Instant::now);
            if worker.unacked == 0 || waited.elapsed() > ACK_WAIT {
                return Ok(());
            }
        }
        tokio::select! {
            msg = worker.session.next() => worker.on_message(msg?).await?,
            Some(report) = rx.recv() => worker.on_report(report).await?,
            _ = signals.next() => worker.on_signal().await?,
        }
    }
}

/// A worker's state between messages.
struct Worker<'a> {
    args: &'a WorkerArgs,
    url: &'a str,
    session: agora_client::Session,
    /// Where running commands report.
    tx: mpsc::Sender<Report>,
    /// Running tasks, each with the switch that kills its command and its delivery's lease
    /// (named in every report, so a report on a delivery that ended is refused, not applied).
    running: HashMap<Uuid, (oneshot::Sender<()>, Uuid)>,
    /// Offers accepted, waiting for the server to confirm (the command starts then), with their
    /// dependencies' results.
    accepting: HashMap<Uuid, (String, Task, Uuid, Inputs)>,
    /// Results sent and not yet acknowledged.
    unacked: usize,
    draining: bool,
}

impl Worker<'_> {
    async fn on_message(&mut self, msg: ServerMsg) -> anyhow::Result<()> {
        match msg {
            ServerMsg::TaskOffer {
                offer_id,
                task,
                lease_id,
                inputs,
                inputs_omitted,
                started,
                ..
            } => {
                let inputs = Inputs {
                    results: inputs,
                    omitted: inputs_omitted,
                };
                self.on_offer(offer_id, *task, lease_id, inputs, started)
                    .await?
            }
            ServerMsg::TaskRevoked { task_id, reason } => {
                if let Some((kill, _)) = self.running.remove(&task_id) {
                    eprintln!("agora worker: task {task_id} revoked ({reason}); killing it");
                    let _ = kill.send(());
                }
            }
            ServerMsg::Ack {
                kind,
                ok,
                error,
                reference,
                ..
            } => self.on_ack(kind, ok, error, reference).await?,
            _ => {}
        }
        Ok(())
    }

    async fn on_offer(
        &mut self,
        offer_id: Uuid,
        task: Task,
        lease_id: Uuid,
        inputs: Inputs,
        started: bool,
    ) -> anyhow::Result<()> {
        let cmd = match task.task_type {
            TaskType::Plan => self.args.planner.as_ref(),
            TaskType::Work => Some(&self.args.exec),
        };
        match cmd {
            Some(cmd) if !self.draining && started => {
                self.run(cmd.clone(), task, lease_id, inputs);
            }
            Some(cmd) if !self.draining => {
                // The command starts when the server confirms the accept: an offer can expire,
                // or die with a socket that was replaced.
                let task_id = task.id;
                self.accepting
                    .insert(task_id, (cmd.clone(), task, lease_id, inputs));
                let reference = Some(format!("accept:{task_id}"));
                self.session
                    .send_with_ref(ClientMsg::Accept { offer_id }, reference)
                    .await?;
            }
            Some(_) => {
                let reason = Some("shutting down".into());
                self.session.decline(offer_id, reason).await?
            }
            None => {
                let reason = Some("this worker has no --planner".into());
                self.session.decline(offer_id, reason).await?
            }
        }
        Ok(())
    }

    async fn on_ack(
        &mut self,
        kind: String,
        ok: bool,
        error: Option<agora_shared::ApiErrorBody>,
        reference: Option<String>,
    ) -> anyhow::Result<()> {
        if matches!(kind.as_str(), "complete" | "fail") && reference.is_some() {
            self.unacked = self.unacked.saturating_sub(1);
        }
        let about = |prefix: &str| {
            reference
                .as_deref()
                .and_then(|r| r.strip_prefix(prefix))
                .and_then(|id| id.parse::<Uuid>().ok())
        };
        if let Some((cmd, task, lease, inputs)) =
            about("accept:").and_then(|id| self.accepting.remove(&id))
        {
            if ok {
                self.run(cmd, task, lease, inputs);
            }
        }
        if !ok {
            let message = error
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .unwrap_or_default();
            eprintln!("agora worker: {kind} refused: {message}");
            // A result the server refuses (say, a plan without task_specs) fails the task for
            // good rather than leaving it running until its deadline.
            if let Some(task_id) = about("complete:") {
                let error = format!("result refused: {message}");
                self.send_fail(task_id, error, false, None).await?;
            }
        }
        Ok(())
    }

    /// Runs the task's command; it reports through `tx`.
    fn run(&mut self, cmd: String, task: Task, lease: Uuid, inputs: Inputs) {
        let (kill, killed) = oneshot::channel();
        self.running.insert(task.id, (kill, lease));
        let (url, tx) = (self.url.to_string(), self.tx.clone());
        tokio::spawn(execute(cmd, task, inputs, url, tx, killed));
    }

    async fn on_report(&mut self, report: Report) -> anyhow::Result<()> {
        match report {
            Report::Progress(task_id, progress, message) => {
                if let Some((_, lease)) = self.running.get(&task_id) {
                    let msg = ClientMsg::Progress {
                        task_id,
                        progress,
                        message,
                        extend_secs: None,
                        lease_id: Some(*lease),
                    };
                    self.session.send(msg).await?;
                }
            }
            Report::Done(task_id, result) => {
                if let Some((_, lease)) = self.running.remove(&task_id) {
                    self.unacked += 1;
                    let msg = ClientMsg::Complete {
                        task_id,
                        result,
                        lease_id: Some(lease),
                    };
                    let reference = Some(format!("complete:{task_id}"));
                    self.session.send_with_ref(msg, reference).await?;
                }
            }
            Report::Failed(task_id, error) => {
                if let Some((_, lease)) = self.running.remove(&task_id) {
                    let first = error.lines().next().unwrap_or("");
                    eprintln!("agora worker: task {task_id} failed: {first}");
                    self.send_fail(task_id, error, true, Some(lease)).await?;
                }
            }
        }
        Ok(())
    }

    async fn send_fail(
        &mut self,
        task_id: Uuid,
        error: String,
        retryable: bool,
        lease_id: Option<Uuid>,
    ) -> anyhow::Result<()> {
        self.unacked += 1;
        let msg = ClientMsg::Fail {
            task_id,
            error,
            retryable: Some(retryable),
            lease_id,
        };
        let reference = Some(format!("fail:{task_id}"));
        self.session.send_with_ref(msg, reference).await?;
        Ok(())
    }

    /// Ctrl-C: the first finishes what runs and takes nothing new; the second kills it.
    async fn on_signal(&mut self) -> anyhow::Result<()> {
        if self.draining {
            eprintln!(
                "agora worker: stopping {} running task(s)",
                self.running.len()
            );
            for (_, (kill, _)) in self.running.drain() {
                let _ = kill.send(());
            }
        } else {
            self.draining = true;
            eprintln!(
                "agora worker: finishing {} running task(s); Ctrl-C again to stop them",
                self.running.len()
            );
            self.session.ready(0).await?;
        }
        Ok(())
    }
}

/// Ctrl-C and SIGTERM, each a stream registered once: a signal that arrives while the worker
/// handles a message waits for the next `next()`. (A `ctrl_c()` future made afresh on each call
/// missed a Ctrl-C that came between two calls, and the worker ignored it.)
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// Runs the command for one task and reports what came of it (nothing when killed).
/// The results of a task's dependencies, by name, and the names of those left out.
struct Inputs {
    results: serde_json::Map<String, Value>,
    omitted: Vec<String>,
}

async fn execute(
    cmd: String,
    task: Task,
    inputs: Inputs,
    url: String,
    tx: mpsc::Sender<Report>,
    killed: oneshot::Receiver<()>,
) {
    let id = task.id;
    let timeout = Duration::from_secs(task.timeout_secs);
    let report = match run_command(&cmd, &task, &inputs, &url, &tx, timeout, killed).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => Report::Failed(id, format!("could not run the command: {e:#}")),
    };
    let _ = tx.send(report).await;
}

async fn run_command(
    cmd: &str,
    task: &Task,
    inputs: &Inputs,
    url: &str,
    tx: &mpsc::Sender<Report>,
    timeout: Duration,
    mut killed: oneshot::Receiver<()>,
) -> anyhow::Result<Option<Report>> {
    let mut command = tokio::process::Command::new("sh");
    // Removed when the command is done (dropped with this function).
    let _inputs_file = if inputs.results.is_empty() && inputs.omitted.is_empty() {
        None
    } else {
        let mut f = tempfile::Builder::new()
            .prefix("agora-inputs-")
            .suffix(".json")
            .tempfile()?;
        serde_json::to_writer(&mut f, &inputs.results)?;
        command.env("AGORA_INPUTS", f.path());
        command.env("AGORA_INPUTS_OMITTED", inputs.omitted.join(","));
        Some(f)
    };
    if let Some(name) = &task.name {
        command.env("AGORA_TASK_NAME", name);
    }
    let mut child = command
        .arg("-c")
        .arg(cmd)
        .env("AGORA_TASK_ID", task.id.to_string())
        .env("AGORA_JOB_ID", task.job_id.to_string())
        .env("AGORA_TASK_INDEX", task.index.to_string())
        .env("AGORA_TASK_TYPE", task.task_type.as_str())
        .env("AGORA_ATTEMPT", (task.attempts + 1).to_string())
        .env("AGORA_URL", url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let pgid = child.id();
    let spec = serde_json::to_vec(&task.task_spec)?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let mut stderr = child.stderr.take().context("no stderr")?;
    // A command that does not read its stdin must not block the worker.
    tokio::spawn(async move {
        let _ = stdin.write_all(&spec).await;
    });
    let stderr_tail = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf).await;
        let start = buf.len().saturating_sub(STDERR_TAIL);
        String::from_utf8_lossy(&buf[start..]).trim().to_string()
    });
    let id = task.id;
    let work = async {
        let mut out = String::new();
        while let Some(line) = stdout.next_line().await? {
            match parse_progress(&line) {
                Some((p, m)) => {
                    let _ = tx.send(Report::Progress(id, p, m)).await;
                }
                None => {
                    out.push_str(&line);
                    out.push('\n');
                }
            }
        }
        anyhow::Ok((child.wait().await?, out))
    };
    let outcome = tokio::select! {
        r = work => Some(r?),
        _ = tokio::time::sleep(timeout) => None,
        _ = &mut killed => {
            kill_group(pgid);
            return Ok(None);
        }
    };
    let Some((status, out)) = outcome else {
        kill_group(pgid);
        return Ok(Some(Report::Failed(
            id,
            format!("killed at the task's timeout ({} s)", timeout.as_secs()),
        )));
    };
    let stderr = stderr_tail.await.unwrap_or_default();
    if !status.success() {
        return Ok(Some(Report::Failed(id, format!("{status}: {stderr}"))));
    }
    Ok(Some(Report::Done(id, parse_result(&out))))
}

/// `PROGRESS 40 message` → (40, Some("message")).
fn parse_progress(line: &str) -> Option<(u32, Option<String>)> {
    let rest = line.strip_prefix("PROGRESS ")?;
    let (num, msg) = rest.split_once(' ').unwrap_or((rest, ""));
    let p: u32 = num.trim().parse().ok()?;
    let msg = msg.trim();
    Some((p.min(100), (!msg.is_empty()).then(|| msg.to_string())))
}

/// The command's stdout as JSON, or as a JSON string when it is not JSON (null when empty).
fn parse_result(out: &str) -> Value {
    let out = out.trim();
    if out.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(out).unwrap_or_else(|_| Value::String(out.to_string()))
}

/// Kills the command and everything it started (it leads its own process group).
fn kill_group(pgid: Option<u32>) {
    if let Some(pid) = pgid.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines() {
        assert_eq!(
            parse_progress("PROGRESS 40 half way"),
            Some((40, Some("half way".into())))
        );
        assert_eq!(parse_progress("PROGRESS 100"), Some((100, None)));
        assert_eq!(
            parse_progress("PROGRESS 250 x"),
            Some((100, Some("x".into())))
        );
        assert_eq!(parse_progress("PROGRESS x"), None);
        assert_eq!(parse_progress("progress 5"), None);
    }

    #[test]
    fn results() {
        assert_eq!(parse_result(" {\"a\":1}\n"), serde_json::json!({"a": 1}));
        assert_eq!(parse_result("hello\n"), serde_json::json!("hello"));
        assert_eq!(parse_result(""), Value::Null);
    }
}
