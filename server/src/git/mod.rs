//! Per-job git history under `REPOS_DIR/<job_id>` (bare repositories): `job.json` at
//! submission, `plan.json` when the plan lands (replaced by the next plan when reviewers reject
//! it), `tasks/<first>-<last>/<index>-<short id>/`
//! `spec.json` with `result.json` or `error.json` as each task ends (a hundred tasks per
//! directory, so a commit costs what it changes, not the size of the job). Packs are merged
//! when there are more than six (`repo::packs_to_merge`: the smallest, keeping each pack left more
//! than twice the size of all smaller ones together).
//!
//! Nothing waits on git: a background task marks jobs dirty from the event feed and, every
//! [`FLUSH`], brings each dirty job's repository up to date *from the database* (the source of
//! truth), so results are never lost, bursts coalesce into fewer commits, a failed write is simply
//! retried by the next flush, and a deleted repository is rebuilt by the same code. At start-up
//! every job is synced, which repairs repositories that fell behind.

pub mod repo;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agora_shared::{EventKind, Job, Task, TaskStatus, TaskType};
use anyhow::Context;
use serde_json::json;
use tokio::sync::{broadcast::error::RecvError, watch, Mutex};
use uuid::Uuid;

use crate::store::leadership::{Leadership, GIT_WRITER};
use crate::store::Store;

/// How often dirty repositories are brought up to date (longer means fewer, larger commits).
pub const FLUSH: Duration = Duration::from_millis(500);
/// How often a replica that does not write the history tries to take the writer's lock.
const LEAD_RETRY: Duration = Duration::from_secs(1);
/// Up to this many finished tasks get a commit each; more are committed together.
const COMMIT_EACH_UP_TO: usize = 10;
/// What a job's repository needs: the tasks whose end the event feed announced, or a full
/// comparison with the database (at start-up, after missed events, after a cancel, which closes
/// pending tasks without an event each).
#[derive(Default)]
struct Dirty {
    tasks: HashSet<Uuid>,
    full: bool,
}

/// Marks jobs dirty from the event feed: every job in full at start-up and after missed
/// events, else the tasks whose end was announced.
async fn read_events(store: Store, dirty: Arc<std::sync::Mutex<HashMap<Uuid, Dirty>>>) {
    let mut events = store.subscribe();
    let all_jobs = |ids: Vec<Uuid>| {
        if let Ok(mut d) = dirty.lock() {
            for id in ids {
                d.entry(id).or_default().full = true;
            }
        }
    };
    match store.job_ids().await {
        Ok(ids) => all_jobs(ids),
        Err(e) => tracing::warn!(error = %e, "git: could not list jobs at start-up"),
    }
    loop {
        match events.recv().await {
            Ok(e) => {
                let Some(job) = e.job_id else { continue };
                let Ok(mut d) = dirty.lock() else { return };
                match e.kind() {
                    _ if e.payload.ends_task() => {
                        if let Some(t) = e.task_id {
                            d.entry(job).or_default().tasks.insert(t);
                        }
                    }
                    EventKind::JobCommitted => {
                        d.entry(job).or_default();
                    }
                    EventKind::JobFailed => d.entry(job).or_default().full = true,
                    _ => {}
                }
            }
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    skipped = n,
                    "git: the event reader fell behind; comparing every job"
                );
                if let Ok(ids) = store.job_ids().await {
                    all_jobs(ids);
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Aborts the task when dropped (the flusher's reader goes with it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What is already in a job's repository.
#[derive(Default)]
struct Recorded {
    job: bool,
    /// The index of the plan task whose plan `plan.json` holds (a rejected plan is followed by
    /// another plan task, whose plan replaces it).
    plan: Option<u32>,
    tasks: HashSet<u32>,
}

impl Recorded {
    /// Whether the repository lacks this finished task: a plan newer than the one it holds, or
    /// a task (a work task, or a failed plan task) it has no directory for.
    fn lacks(&self, index: u32, task_type: TaskType, status: TaskStatus) -> bool {
        match (task_type, status) {
            (TaskType::Plan, TaskStatus::Completed) => self.plan.is_none_or(|p| index > p),
            _ => !self.tasks.contains(&index),
        }
    }
}

/// Handle to the git history; cheap to clone.
#[derive(Clone)]
pub struct GitHistory {
    root: PathBuf,
    store: Store,
    recorded: Arc<Mutex<HashMap<Uuid, Recorded>>>,
    writes: GitThread,
    /// Whether this replica holds the writer's lock.
    writing: Arc<std::sync::atomic::AtomicBool>,
}

thread_local! {
    /// The history thread's read connection (SQLite), opened at its first read and closed
    /// when the thread has been idle for a second, with its page cache.
    static OWN_READER: std::cell::RefCell<Option<crate::store::OwnReader>> =
        const { std::cell::RefCell::new(None) };
}

/// A piece of work for [`GitThread`].
type GitWork = Box<dyn FnOnce() + Send>;

/// The history's writes run on one thread of its own, started at the first and ended with the
/// last handle. On tokio's blocking threads, which end after 10 s idle, every thread that ended
/// left its pages behind with whatever it had allocated that outlived it (the recorded state
/// of a job it loaded): 12 MB more a minute after a burst than with git off. This one collects
/// its free pages when it has been idle for a second after the server asked
/// ([`crate::memory::collect_if_asked`]).
#[derive(Clone, Default)]
struct GitThread(Arc<std::sync::OnceLock<Option<std::sync::mpsc::Sender<GitWork>>>>);

impl GitThread {
    fn sender(&self) -> Option<&std::sync::mpsc::Sender<GitWork>> {
        self.0
            .get_or_init(|| {
                let (tx, rx) = std::sync::mpsc::channel::<GitWork>();
                let spawned = std::thread::Builder::new()
                    .name("agora-git".into())
                    .spawn(move || {
                        // The history is background work: in the idle class it never
                        // takes CPU from the agents' work (at nice 10 it still took a fifth
                        // of both cores during a 64-agent burst); its flushes then come
                        // further apart and catch up with larger commits (`write_while`)
                        // once the burst is over.
                        crate::threads::idle_class();
                        loop {
                            use std::sync::mpsc::RecvTimeoutError;
                            match rx.recv_timeout(Duration::from_secs(1)) {
                                Ok(work) => work(),
                                Err(RecvTimeoutError::Timeout) => {
                                    OWN_READER.with(|r| r.borrow_mut().take());
                                    crate::memory::collect_if_asked();
                                }
                                Err(RecvTimeoutError::Disconnected) => break,
                            }
                        }
                    });
                match spawned {
                    Ok(_) => Some(tx),
                    Err(e) => {
                        tracing::warn!(error = %e, "git: no thread of its own; writing on the blocking pool");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Runs `f` on the git thread and answers what it returned.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let Some(tx) = self.sender() else {
            return Ok(tokio::task::spawn_blocking(f).await?);
        };
        let (done, answer) = tokio::sync::oneshot::channel();
        tx.send(Box::new(move || {
            let _ = done.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        }))
        .map_err(|_| anyhow::anyhow!("git: the history's thread has ended"))?;
        match answer.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => anyhow::bail!("git: a write panicked"),
            Err(_) => anyhow::bail!("git: the history's thread has ended"),
        }
    }
}

fn pretty(v: &serde_json::Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).unwrap_or_default();
    out.push(b'\n');
    out
}

fn task_dir(t: &Task) -> String {
    agora_shared::task_dir(t.index, t.id)
}

impl GitHistory {
    pub fn new(root: PathBuf, store: Store) -> GitHistory {
        GitHistory {
            root,
            store,
            recorded: Arc::new(Mutex::new(HashMap::new())),
            writes: GitThread::default(),
            writing: Arc::default(),
        }
    }

    pub fn repo_dir(&self, job: Uuid) -> PathBuf {
        self.root.join(job.to_string())
    }

    /// Starts the background writer.
    pub fn start(&self, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().run(shutdown))
    }

    /// Whether this replica writes the history now (it holds the writer's lock).
    pub fn writing(&self) -> bool {
        self.writing.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes the history while this replica holds the writer's lock (one replica at a time,
    /// see `store::leadership`); the others wait to take it over.
    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        while let Some(lead) = self.wait_to_lead(&mut shutdown).await {
            // What another writer did meanwhile is read from the repositories again.
            self.recorded.lock().await.clear();
            self.writing
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let lost = self.write_while(lead, &mut shutdown).await;
            self.writing
                .store(false, std::sync::atomic::Ordering::Relaxed);
            if !lost {
                return;
            }
            tracing::warn!("git: lost the history writer's lock; waiting to take it again");
        }
    }

    /// Takes the writer's lock, trying every [`LEAD_RETRY`]; `None` when the server stops first.
    async fn wait_to_lead(&self, shutdown: &mut watch::Receiver<bool>) -> Option<Leadership> {
        let mut told = false;
        loop {
            if *shutdown.borrow() {
                return None;
            }
            match self.store.try_lead(GIT_WRITER).await {
                Ok(Some(lead)) => return Some(lead),
                Ok(None) if !told => {
                    told = true;
                    tracing::info!("git: another replica writes the history");
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "git: could not ask for the writer's lock"),
            }
            tokio::select! {
                _ = tokio::time::sleep(LEAD_RETRY) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Brings dirty repositories up to date every [`FLUSH`] until the server stops (`false`) or
    /// the lock is lost (`true`). Every job is synced first (the event reader starts by marking
    /// them all), which repairs what a writer before this one left undone.
    async fn write_while(
        &self,
        mut lead: Leadership,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let dirty: Arc<std::sync::Mutex<HashMap<Uuid, Dirty>>> = Default::default();
        // The event feed is read by a task of its own, so that a long flush never makes the
        // reader fall behind the feed (which would force a full comparison of every job).
        let reader = tokio::spawn(read_events(self.store.clone(), dirty.clone()));
        let _stop_reader = AbortOnDrop(reader);
        // The next flush; after a long one, the writer waits proportionally longer, so git never
        // takes more than about a tenth of a core from the agents under load (it catches up
        // with larger commits instead).
        let mut next = tokio::time::Instant::now() + FLUSH;
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep_until(next) => false,
                _ = shutdown.changed() => true,
            };
            // Checked before each flush: a replica that lost the lock writes nothing more (a
            // write already under way when another replica took over meets libgit2's lock
            // files, fails, and the new writer syncs that job from the database anyway).
            if !lead.held().await {
                return !stopping;
            }
            let started = tokio::time::Instant::now();
            let todo = dirty
                .lock()
                .map(|mut d| std::mem::take(&mut *d))
                .unwrap_or_default();
            for (job, d) in todo {
                let ids = (!d.full).then(|| d.tasks.iter().copied().collect::<Vec<_>>());
                if let Err(e) = self.sync_tasks(job, ids).await {
                    if stopping {
                        continue;
                    }
                    tracing::warn!(error = ?e, %job, "git: sync failed; will retry");
                    if let Ok(mut all) = dirty.lock() {
                        let again = all.entry(job).or_default();
                        again.full |= d.full;
                        again.tasks.extend(d.tasks);
                    }
                }
            }
            if stopping {
                return false;
            }
            let took = started.elapsed();
            next = tokio::time::Instant::now() + FLUSH.max(took * 9).min(Duration::from_secs(10));
        }
    }

    /// Deletes a job's repository and writes it again from the database.
    pub async fn rebuild(&self, job: Uuid) -> anyhow::Result<()> {
        self.store
            .job_get(job)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let dir = self.repo_dir(job);
        self.recorded.lock().await.remove(&job);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        self.sync(job).await
    }

    /// Brings one job's repository up to date with the database.
    pub async fn sync(&self, job_id: Uuid) -> anyhow::Result<()> {
        self.sync_tasks(job_id, None).await
    }

    /// Brings one job's repository up to date: with `Some(ids)` only those tasks are looked at
    /// (the event feed named them), with `None` every finished task of the job. What the
    /// repository holds is kept in memory while the job runs and forgotten once it has ended
    /// (a late change reads it from the repository again), so that it does not grow with every
    /// job the server has seen.
    async fn sync_tasks(&self, job_id: Uuid, ids: Option<Vec<Uuid>>) -> anyhow::Result<()> {
        let mut all = self.recorded.lock().await;
        let ended = self.sync_recorded(&mut all, job_id, ids).await?;
        if ended {
            all.remove(&job_id);
        }
        Ok(())
    }

    /// [`Self::sync_tasks`] with the map locked; whether the job has ended.
    async fn sync_recorded(
        &self,
        all: &mut HashMap<Uuid, Recorded>,
        job_id: Uuid,
        ids: Option<Vec<Uuid>>,
    ) -> anyhow::Result<bool> {
        let rec = match all.entry(job_id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let dir = self.repo_dir(job_id);
                let loaded = self.writes.run(move || load_recorded(&dir)).await??;
                v.insert(loaded)
            }
        };
        let job = self
            .store
            .job_get(job_id)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut commits = Vec::new();
        if !rec.job {
            commits.push(self.job_commit(&job).await);
        }
        let ids = match ids {
            Some(ids) => ids,
            // A full comparison reads every finished task's marks, then in full only those the
            // repository lacks: a job of 100,000 tasks is not read whole on each lag or restart.
            None => self
                .store
                .tasks_finished_marks(job_id)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .into_iter()
                .filter(|(_, index, task_type, status)| rec.lacks(*index, *task_type, *status))
                .map(|(id, ..)| id)
                .collect(),
        };
        let finished = match ids.is_empty() {
            true => Vec::new(),
            false => self.finished_by_id(job_id, ids).await?,
        };
        let mut new_plans = Vec::new();
        let mut new_tasks = Vec::new();
        for t in finished {
            if !rec.lacks(t.index, t.task_type, t.status) {
                continue;
            }
            match (t.task_type, t.status) {
                (TaskType::Plan, TaskStatus::Completed) => new_plans.push(t),
                _ => new_tasks.push(t),
            }
        }
        new_plans.sort_by_key(|t| t.index);
        for plan in &new_plans {
            commits.push(self.plan_commit(plan, &job).await);
        }
        let with_dir: Vec<u32> = new_tasks
            .iter()
            .chain(new_plans.iter())
            .filter(|t| t.task_type == TaskType::Work || t.status == TaskStatus::Failed)
            .map(|t| t.index)
            .collect();
        let last_plan = new_plans.last().map(|p| p.index);
        let task_commits = self.task_commits(new_tasks, &job).await;
        let ended = job.status.is_terminal();
        if commits.is_empty() && task_commits.is_empty() {
            return Ok(ended);
        }
        let dir = self.repo_dir(job_id);
        // The tasks' files (their specs and results as pretty JSON) are written on the
        // history's thread too, in the idle class, not on the runtime the agents use.
        self.writes
            .run(move || -> Result<(), git2::Error> {
                commits.extend(task_commits.into_iter().map(TaskCommit::into_commit));
                repo::commit_packed(&dir, &commits)?;
                Ok(())
            })
            .await??;
        rec.job = true;
        if let Some(last) = last_plan {
            rec.plan = Some(last);
        }
        rec.tasks.extend(with_dir);
        Ok(ended)
    }

    /// These tasks of the job, if finished: on SQLite read by the history's own thread, on a
    /// connection of its own ([`OWN_READER`]), else from the read pool.
    async fn finished_by_id(&self, job_id: Uuid, ids: Vec<Uuid>) -> anyhow::Result<Vec<Task>> {
        if self.store.backend() != crate::store::Backend::Sqlite {
            return self
                .store
                .tasks_finished_by_id(job_id, &ids)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"));
        }
        let store = self.store.clone();
        self.writes
            .run(move || {
                OWN_READER.with(|reader| {
                    let mut reader = reader.borrow_mut();
                    let reader = match &mut *reader {
                        Some(r) => r,
                        none => none.insert(store.own_reader().context("no SQLite path")??),
                    };
                    reader
                        .tasks_finished_by_id(job_id, &ids)
                        .map_err(|e| anyhow::anyhow!("{e}"))
                })
            })
            .await?
    }

    /// The job's first commit: `job.json`, by its submitter.
    async fn job_commit(&self, job: &Job) -> repo::NewCommit {
        let author = match job.submitted_by {
            Some(a) => self.author(a).await,
            None => "agora".to_string(),
        };
        repo::NewCommit {
            files: vec![(
                "job.json".into(),
                pretty(
                    &json!({ "id": job.id, "title": job.title, "job_spec": job.job_spec, "priority": job.priority }),
                ),
            )],
            message: format!("Submit job: {}", job.title),
            author,
            at: job.created_at,
        }
    }

    /// The plan's commit: `plan.json`, by its planner. A plan written after a rejected one
    /// replaces it and says which round it is (`round`, 2 for the second plan).
    async fn plan_commit(&self, plan: &Task, job: &Job) -> repo::NewCommit {
        let specs = plan
            .result
            .as_ref()
            .and_then(|r| r.get("task_specs"))
            .cloned()
            .unwrap_or(json!([]));
        let n = specs.as_array().map(Vec::len).unwrap_or(0);
        let (file, message) = match plan.index {
            0 => (json!({ "task_specs": specs }), format!("Plan: {n} tasks")),
            i => (
                json!({ "task_specs": specs, "round": i + 1 }),
                format!("Plan {}: {n} tasks (after {i} rejected)", i + 1),
            ),
        };
        repo::NewCommit {
            files: vec![("plan.json".into(), pretty(&file))],
            message,
            author: self.task_author(plan).await,
            at: plan.finished_at.unwrap_or(job.updated_at),
        }
    }

    /// Finished tasks: a commit each by its agent, or one commit for many.
    async fn task_commits(&self, new_tasks: Vec<Task>, job: &Job) -> Vec<TaskCommit> {
        if new_tasks.is_empty() {
            return Vec::new();
        }
        if new_tasks.len() > COMMIT_EACH_UP_TO {
            let at = new_tasks
                .iter()
                .filter_map(|t| t.finished_at)
                .max()
                .unwrap_or(job.updated_at);
            return vec![TaskCommit {
                tasks: new_tasks,
                by: None,
                at,
            }];
        }
        let mut commits = Vec::new();
        for task in new_tasks {
            let author = self.task_author(&task).await;
            let at = task.finished_at.unwrap_or(job.updated_at);
            commits.push(TaskCommit {
                tasks: vec![task],
                by: Some(author),
                at,
            });
        }
        commits
    }

    async fn author(&self, agent: Uuid) -> String {
        self.store
            .agent_name(agent)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| agent.to_string())
    }

    async fn task_author(&self, t: &Task) -> String {
        match t.agent_id {
            Some(a) => self.author(a).await,
            None => "agora".into(),
        }
    }

    /// A page of the history of a job's repository, newest first (empty before its first
    /// commit), and how many commits it has.
    pub async fn commits(
        &self,
        job: Uuid,
        offset: u64,
        limit: u32,
    ) -> anyhow::Result<(Vec<repo::CommitInfo>, u64)> {
        let dir = self.repo_dir(job);
        Ok(tokio::task::spawn_blocking(move || {
            read_retrying(&dir, |r| repo::commits(r, offset, limit))
        })
        .await??)
    }

    /// The paths of every file at HEAD of a job's repository.
    pub async fn files(&self, job: Uuid) -> anyhow::Result<Vec<String>> {
        let dir = self.repo_dir(job);
        Ok(tokio::task::spawn_blocking(move || read_retrying(&dir, repo::files)).await??)
    }

    /// A file at HEAD of a job's repository.
    pub async fn read(&self, job: Uuid, path: String) -> anyhow::Result<Option<Vec<u8>>> {
        let dir = self.repo_dir(job);
        Ok(
            tokio::task::spawn_blocking(move || read_retrying(&dir, |r| repo::read(r, &path)))
                .await??,
        )
    }
}

/// `agora repo rebuild`: opens the store `config` names, deletes the job's repository and writes
/// it again from the database. Where it is, and how many commits it has.
pub async fn rebuild_from(
    config: &crate::config::Config,
    job: Uuid,
) -> anyhow::Result<(PathBuf, u64)> {
    let store = Store::connect(config.database_url.as_deref(), &config.db_path).await?;
    let git = GitHistory::new(config.repos_dir.clone(), store.clone());
    let rebuilt = git.rebuild(job).await;
    let counted = match rebuilt {
        Ok(()) => git.commits(job, 0, 1).await.map(|(_, n)| n),
        Err(e) => Err(e),
    };
    store.close().await;
    Ok((git.repo_dir(job), counted?))
}

/// Reads a repository the writer may be changing at that moment: readers never create it (a
/// repository that does not exist yet reads as empty), and a read that races a write (a pack or
/// a ref being replaced) is tried again.
fn read_retrying<T: Default>(
    dir: &Path,
    f: impl Fn(&git2::Repository) -> Result<T, git2::Error>,
) -> Result<T, git2::Error> {
    let mut last = None;
    for _ in 0..3 {
        if !dir.join("HEAD").exists() {
            return Ok(T::default());
        }
        match git2::Repository::open_bare(dir).and_then(|r| f(&r)) {
            Ok(v) => return Ok(v),
            Err(e) => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    Err(last.unwrap_or_else(|| git2::Error::from_str("repository unreadable")))
}

/// The commit of finished tasks, made into files and a message by [`TaskCommit::into_commit`]
/// on the history's thread: one task by its agent (`by`), or many together by `agora`.
struct TaskCommit {
    tasks: Vec<Task>,
    by: Option<String>,
    at: chrono::DateTime<chrono::Utc>,
}

impl TaskCommit {
    fn into_commit(self) -> repo::NewCommit {
        let files = self.tasks.iter().flat_map(task_files).collect();
        let (message, author) = match (self.by, &self.tasks[..]) {
            (Some(author), [task]) => {
                let verb = if task.status == TaskStatus::Completed {
                    "completed"
                } else {
                    "failed"
                };
                (format!("Task {} {verb} ({author})", task.index), author)
            }
            _ => {
                let mut body = String::new();
                for t in &self.tasks {
                    body.push_str(&format!("\n- task {}: {}", t.index, t.status));
                }
                let message = format!("{} tasks finished\n{body}", self.tasks.len());
                (message, "agora".to_string())
            }
        };
        repo::NewCommit {
            files,
            message,
            author,
            at: self.at,
        }
    }
}

fn task_files(t: &Task) -> Vec<(String, Vec<u8>)> {
    let dir = task_dir(t);
    let mut files = vec![(format!("{dir}/spec.json"), pretty(&t.task_spec))];
    match t.status {
        TaskStatus::Completed => files.push((
            format!("{dir}/result.json"),
            pretty(t.result.as_ref().unwrap_or(&json!(null))),
        )),
        _ => files.push((
            format!("{dir}/error.json"),
            pretty(&json!({ "error": t.error, "attempts": t.attempts })),
        )),
    }
    files
}

/// What an existing repository already holds.
fn load_recorded(dir: &Path) -> Result<Recorded, git2::Error> {
    let mut rec = Recorded::default();
    if !dir.exists() {
        return Ok(rec);
    }
    let repo = repo::open_or_init(dir)?;
    rec.job = repo::read(&repo, "job.json")?.is_some();
    rec.plan = match repo::read(&repo, "plan.json")? {
        Some(bytes) => {
            let plan: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let round = plan.get("round").and_then(|r| r.as_u64()).unwrap_or(1);
            Some(u32::try_from(round.saturating_sub(1)).unwrap_or(0))
        }
        None => None,
    };
    // `tasks/<first>-<last>/<index>-<id8>`, or `tasks/<index>-<id8>` in repositories written
    // before the shards: a task's directory holds spec.json, a shard does not.
    for name in repo::list_dir(&repo, "tasks")? {
        let path = format!("tasks/{name}");
        let entries = repo::list_dir(&repo, &path)?;
        let names = if entries.iter().any(|e| e == "spec.json") {
            vec![name]
        } else {
            entries
        };
        for n in names {
            if let Some(idx) = n.split('-').next().and_then(|i| i.parse().ok()) {
                rec.tasks.insert(idx);
            }
        }
    }
    Ok(rec)
}

/// A request path inside a repository: relative, no `..`, no empty or `.` parts.
pub fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("must name a file");
    }
    if path.starts_with('/') || path.contains('\\') || path.contains('\0') {
        return Err("must be a relative path inside the repository");
    }
    if path
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err("must not contain '..', '.' or empty parts");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_path;

    #[test]
    fn paths_stay_inside_the_repository() {
        assert!(check_path("job.json").is_ok());
        assert!(check_path("tasks/1-abcd/result.json").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "tasks/../../x",
            "a//b",
            "./job.json",
            "a\\b",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }
}
