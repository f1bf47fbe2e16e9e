//! The store conformance suite: the queue's rules, each written once and run against the store
//! itself (no HTTP in between) on SQLite and, in the PostgreSQL pass (`TEST_BACKEND=postgres`),
//! on PostgreSQL. Time moves by the store's manual clock, never by sleeping: a lease, a deadline,
//! a backoff or a cooldown runs out when a test says so.

use std::collections::HashSet;

use agora_server::store::{
    AgentRegisterParams, Clock, EventListParams, GateRules, JobInsertParams, QueueRules, Store,
    StoreError, TaskClaimParams, TaskCompleteParams, TaskFailParams, TaskStartParams, VoteParams,
};
use agora_shared::{
    ApproverPolicy, ClaimedTask, EventKind, JobStatus, Stage, TaskStatus, Verdict, Voter,
};
use futures::future::join_all;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{test_backend, PgDatabase};

/// Where the manual clock starts (2027-01-15).
const START_MS: i64 = 1_800_000_000_000;

/// A store on a fresh database, with a clock the test moves.
struct Subject {
    store: Store,
    clock: Clock,
    _dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
}

async fn subject(rules: QueueRules) -> Subject {
    let dir = tempfile::tempdir().expect("temp dir");
    let pg = match test_backend() {
        "postgres" => Some(PgDatabase::create().await),
        _ => None,
    };
    let clock = Clock::manual(START_MS);
    let store = Store::open(
        pg.as_ref().map(|p| p.url.as_str()),
        &dir.path().join("conformance.db"),
        rules,
        clock.clone(),
    )
    .await
    .expect("open the store");
    Subject {
        store,
        clock,
        _dir: dir,
        _pg: pg,
    }
}

/// What the jobs of [`Subject::jobs`] are made of.
struct JobShape {
    priority: i32,
    tasks: usize,
    max_retries: u32,
    timeout_secs: u64,
}

impl JobShape {
    fn new(priority: i32, tasks: usize) -> JobShape {
        JobShape {
            priority,
            tasks,
            max_retries: 2,
            timeout_secs: 600,
        }
    }
}

impl Subject {
    async fn agent(&self, name: &str) -> Uuid {
        let id = Uuid::new_v4();
        self.store
            .agent_register(AgentRegisterParams {
                id,
                name: format!("{name}-{}", &id.simple().to_string()[..6]),
                capabilities: vec![],
                token_hash: Uuid::new_v4().to_string(),
            })
            .await
            .expect("register");
        id
    }

    async fn submit(&self, by: Uuid, priority: i32, approvals_required: u32) -> Uuid {
        let id = Uuid::new_v4();
        self.store
            .job_submit(JobInsertParams {
                id,
                title: format!("job {id}"),
                job_spec: json!({ "goal": "conformance" }),
                priority,
                approvals_required,
                submitted_by: Some(by),
                approval_ttl_secs: 0,
                plan_approvals_required: 0,
                idempotency: None,
            })
            .await
            .expect("submit");
        id
    }

    async fn approve(
        &self,
        job: Uuid,
        agent: Uuid,
        cooldown_secs: u64,
    ) -> Result<JobStatus, StoreError> {
        self.approve_shaped(job, agent, cooldown_secs, &JobShape::new(0, 0))
            .await
    }

    async fn approve_shaped(
        &self,
        job: Uuid,
        agent: Uuid,
        cooldown_secs: u64,
        shape: &JobShape,
    ) -> Result<JobStatus, StoreError> {
        let approved = self
            .store
            .vote(VoteParams {
                job_id: job,
                voter: Voter::Agent(agent),
                stage: Stage::Job,
                verdict: Verdict::Approve,
                text: None,
                rules: GateRules {
                    policy: ApproverPolicy::Any,
                    cooldown_secs,
                    max_replans: 2,
                    plan_max_retries: shape.max_retries,
                    plan_timeout_secs: shape.timeout_secs,
                },
            })
            .await?;
        Ok(approved.job.status)
    }

    async fn claim(&self, agent: Uuid) -> Option<ClaimedTask> {
        self.store
            .task_claim(TaskClaimParams {
                agent_id: agent,
                request_id: None,
            })
            .await
            .expect("claim")
    }

    async fn start(&self, agent: Uuid, c: &ClaimedTask) -> Result<(), StoreError> {
        self.store
            .task_start(TaskStartParams {
                agent_id: agent,
                task_id: c.task.id,
                lease_id: Some(c.lease_id),
                heartbeat_secs: None,
            })
            .await
            .map(|_| ())
    }

    async fn complete(&self, agent: Uuid, c: &ClaimedTask, result: serde_json::Value) {
        self.store
            .task_complete(TaskCompleteParams {
                agent_id: agent,
                task_id: c.task.id,
                result,
                lease_id: Some(c.lease_id),
                next: None,
            })
            .await
            .expect("complete");
    }

    async fn fail(&self, agent: Uuid, c: &ClaimedTask) -> agora_shared::Task {
        self.store
            .task_fail(TaskFailParams {
                agent_id: agent,
                task_id: c.task.id,
                error: "it broke".into(),
                retryable: true,
                lease_id: Some(c.lease_id),
                next: None,
            })
            .await
            .expect("fail")
            .task
    }

    /// Jobs in the given order (so of increasing age), each approved and planned into its
    /// work tasks (`{"n": 1..}`), which are then pending. The plan tasks are all claimed before
    /// any plan lands, so each claim finds only plan tasks.
    async fn jobs(&self, shapes: &[JobShape]) -> Vec<Uuid> {
        let (submitter, approver, planner) = (
            self.agent("submitter").await,
            self.agent("approver").await,
            self.agent("planner").await,
        );
        let mut ids = Vec::new();
        for shape in shapes {
            let job = self.submit(submitter, shape.priority, 1).await;
            // A frozen clock would give the jobs one age, and the claim would order them by id.
            self.clock.advance(1);
            let status = self
                .approve_shaped(job, approver, 0, shape)
                .await
                .expect("approve");
            assert_eq!(status, JobStatus::Accepted);
            ids.push(job);
        }
        let mut plans = Vec::new();
        for _ in shapes {
            let plan = self.claim(planner).await.expect("a plan task");
            assert_eq!(plan.task.index, 0, "only plan tasks are pending");
            plans.push(plan);
        }
        for plan in plans {
            let shape = &shapes[ids
                .iter()
                .position(|j| *j == plan.task.job_id)
                .expect("ours")];
            self.start(planner, &plan).await.expect("start the plan");
            let specs: Vec<_> = (1..=shape.tasks).map(|n| json!({ "n": n })).collect();
            self.complete(planner, &plan, json!({ "task_specs": specs }))
                .await;
        }
        ids
    }
}

#[tokio::test]
async fn the_claim_takes_priority_then_job_age_then_plan_order() {
    let s = subject(QueueRules::default()).await;
    let jobs = s
        .jobs(&[
            JobShape::new(0, 2),
            JobShape::new(5, 2),
            JobShape::new(5, 2),
        ])
        .await;
    let agent = s.agent("worker").await;
    let mut order = Vec::new();
    while let Some(c) = s.claim(agent).await {
        let job = jobs.iter().position(|j| *j == c.task.job_id).expect("ours");
        order.push((job, c.task.index));
    }
    // The two priority-5 jobs first, the older of them first; each job's tasks in plan order.
    assert_eq!(order, [(1, 1), (1, 2), (2, 1), (2, 2), (0, 1), (0, 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_claims_hand_out_each_task_exactly_once() {
    let s = subject(QueueRules::default()).await;
    s.jobs(&[JobShape::new(0, 30)]).await;
    let mut agents = Vec::new();
    for i in 0..12 {
        agents.push(s.agent(&format!("racer{i}")).await);
    }
    // 60 claims at once from 12 agents, beside two batch claims (the dispatcher's path; half
    // the agents take their tasks started, as with `auto_start`).
    let singles = join_all((0..60).map(|i| s.claim(agents[i % agents.len()])));
    let batch: Vec<(Uuid, bool)> = agents[..6]
        .iter()
        .map(|a| (*a, a.as_u128() % 2 == 0))
        .collect();
    let batches = join_all((0..2).map(|_| s.store.task_claim_many(batch.clone())));
    let (singles, batches) = tokio::join!(singles, batches);
    let mut ids: Vec<Uuid> = singles.into_iter().flatten().map(|c| c.task.id).collect();
    for batch in batches {
        let batch = batch.expect("batch claim");
        assert_eq!(batch.claimed.len(), 6, "one answer per agent asked for");
        ids.extend(batch.claimed.into_iter().flatten().map(|c| c.task.id));
    }
    let distinct: HashSet<Uuid> = ids.iter().copied().collect();
    assert_eq!(
        ids.len(),
        30,
        "every task claimed once, none twice: {ids:?}"
    );
    assert_eq!(distinct.len(), 30);
    assert!(s.claim(agents[0]).await.is_none(), "nothing left");
}

#[tokio::test]
async fn a_batch_claim_stops_at_an_empty_queue() {
    let s = subject(QueueRules::default()).await;
    s.jobs(&[JobShape::new(0, 3)]).await;
    let mut agents = Vec::new();
    for i in 0..5 {
        agents.push(s.agent(&format!("b{i}")).await);
    }
    let batch = s
        .store
        .task_claim_many(agents.iter().map(|a| (*a, false)).collect())
        .await
        .expect("batch");
    let got: Vec<_> = batch.claimed.iter().map(Option::is_some).collect();
    assert_eq!(got, [true, true, true, false, false], "in the order asked");
    assert!(batch.queue_empty);
    let holders: HashSet<Uuid> = batch
        .claimed
        .iter()
        .flatten()
        .filter_map(|c| c.task.agent_id)
        .collect();
    assert_eq!(holders, agents[..3].iter().copied().collect());
}

#[tokio::test]
async fn the_series_counts_finished_tasks_a_minute_and_keeps_the_sampled_gauges() {
    let s = subject(QueueRules::default()).await;
    let mut flaky = JobShape::new(0, 1);
    flaky.max_retries = 0;
    // Minute 0 (START_MS is a minute's start): both plans complete, three tasks wait, four
    // agents are online, and the scheduler's sample keeps that.
    s.jobs(&[JobShape::new(5, 2), flaky]).await;
    let agent = s.agent("worker").await;
    s.store.stats_sample().await.expect("sample");
    // Minute 1: one completes. Minute 3: another completes, the flaky one fails for good.
    s.clock.advance(60_000);
    let c = s.claim(agent).await.expect("a task");
    s.start(agent, &c).await.expect("start");
    s.complete(agent, &c, json!("done")).await;
    s.clock.advance(120_000);
    let c = s.claim(agent).await.expect("a task");
    s.start(agent, &c).await.expect("start");
    s.complete(agent, &c, json!("done")).await;
    let c = s.claim(agent).await.expect("the flaky task");
    s.start(agent, &c).await.expect("start");
    assert_eq!(s.fail(agent, &c).await.status, TaskStatus::Failed);

    let series = s.store.stats_series(5).await.expect("series");
    let col = |f: fn(&agora_shared::StatsPoint) -> Option<u64>| -> Vec<Option<u64>> {
        series.points.iter().map(f).collect()
    };
    assert_eq!(series.points.len(), 5, "minutes -1 to 3");
    assert_eq!(series.points[1].at.timestamp_millis(), START_MS);
    assert_eq!(col(|p| Some(p.completed)), [0, 2, 1, 0, 1].map(Some));
    assert_eq!(col(|p| Some(p.failed)), [0, 0, 0, 0, 1].map(Some));
    // Sampled in minute 0, unknown where nothing sampled, counted now for the running minute.
    assert_eq!(col(|p| p.pending), [None, Some(3), None, None, Some(0)]);
    assert_eq!(
        col(|p| p.agents_online),
        [None, Some(4), None, None, Some(4)]
    );
}

#[tokio::test]
async fn a_failed_attempt_waits_out_its_backoff_and_retries_run_out() {
    let rules = QueueRules {
        retry_backoff_ms: 10_000,
        ..QueueRules::default()
    };
    let s = subject(rules).await;
    let mut shape = JobShape::new(0, 1);
    shape.max_retries = 1;
    let job = s.jobs(&[shape]).await[0];
    let agent = s.agent("worker").await;

    let first = s.claim(agent).await.expect("the task");
    s.start(agent, &first).await.expect("start");
    let failed = s.fail(agent, &first).await;
    assert_eq!((failed.status, failed.attempts), (TaskStatus::Pending, 1));
    let available = failed.available_at.expect("a backoff").timestamp_millis();
    // 10 s plus a jitter of up to a quarter.
    assert!(
        (START_MS + 10_000..=START_MS + 12_500).contains(&available),
        "{available}"
    );
    s.clock.advance(9_999);
    assert!(s.claim(agent).await.is_none(), "not before its backoff");
    s.clock.advance(available - s.clock.now_ms());
    let second = s
        .claim(agent)
        .await
        .expect("claimable once the backoff is over");
    assert_eq!((second.task.id, second.task.deliveries), (first.task.id, 2));

    s.start(agent, &second).await.expect("start");
    let last = s.fail(agent, &second).await;
    assert_eq!(
        (last.status, last.attempts),
        (TaskStatus::Failed, 2),
        "out of retries"
    );
    let job = s.store.job_get(job).await.expect("job");
    assert_eq!(
        job.status,
        JobStatus::Failed,
        "its only task failed for good"
    );
}

#[tokio::test]
async fn a_running_task_past_its_deadline_counts_a_failed_attempt() {
    let s = subject(QueueRules::default()).await;
    let mut shape = JobShape::new(0, 1);
    shape.timeout_secs = 30;
    s.jobs(&[shape]).await;
    let agent = s.agent("slow").await;
    let c = s.claim(agent).await.expect("the task");
    s.start(agent, &c).await.expect("start");

    s.clock.advance(29_000);
    assert_eq!(s.store.tasks_expire().await.expect("sweep").timed_out, 0);
    s.clock.advance(2_000);
    let sweep = s.store.tasks_expire().await.expect("sweep");
    assert_eq!(sweep.timed_out, 1, "{sweep:?}");
    let task = s.store.task_get(c.task.id).await.expect("task");
    assert_eq!((task.status, task.attempts), (TaskStatus::Pending, 1));
    assert_eq!(task.error.as_deref(), Some("timed out after 30 s"));
}

#[tokio::test]
async fn an_unstarted_claim_goes_back_when_its_lease_runs_out() {
    let rules = QueueRules {
        claim_lease_ms: 10_000,
        ..QueueRules::default()
    };
    let s = subject(rules).await;
    s.jobs(&[JobShape::new(0, 1)]).await;
    let (late, other) = (s.agent("late").await, s.agent("other").await);
    let c = s.claim(late).await.expect("the task");

    s.clock.advance(10_001);
    let sweep = s.store.tasks_expire().await.expect("sweep");
    assert_eq!(sweep.leases_expired, 1, "{sweep:?}");
    let task = s.store.task_get(c.task.id).await.expect("task");
    assert_eq!(
        (task.status, task.attempts),
        (TaskStatus::Pending, 0),
        "released, not failed"
    );
    // The late agent's start names a lease that has ended: refused, nothing written.
    let refused = s.start(late, &c).await.expect_err("a dead lease");
    assert!(matches!(refused, StoreError::LeaseLost(_)), "{refused:?}");
    let again = s.claim(other).await.expect("claimable again");
    assert_eq!((again.task.id, again.task.deliveries), (c.task.id, 2));
}

#[tokio::test]
async fn the_approval_gate_counts_distinct_agents_and_keeps_the_cooldown() {
    let s = subject(QueueRules::default()).await;
    let submitter = s.agent("submitter").await;
    let (a, b, c) = (s.agent("a").await, s.agent("b").await, s.agent("c").await);
    let job = s.submit(submitter, 0, 3).await;

    assert_eq!(
        s.approve(job, a, 0).await.expect("first"),
        JobStatus::Approving
    );
    let twice = s
        .approve(job, a, 0)
        .await
        .expect_err("the same agent twice");
    assert!(matches!(twice, StoreError::Conflict(_)), "{twice:?}");
    assert_eq!(
        s.approve(job, b, 0).await.expect("second"),
        JobStatus::Approving
    );
    assert_eq!(
        s.approve(job, c, 0).await.expect("third"),
        JobStatus::Accepted
    );
    let late = s
        .approve(job, submitter, 0)
        .await
        .expect_err("past the gate");
    assert!(matches!(late, StoreError::InvalidState(_)), "{late:?}");

    // A cooldown of a minute between one agent's approvals, on the store's clock.
    let (x, y) = (
        s.submit(submitter, 0, 5).await,
        s.submit(submitter, 0, 5).await,
    );
    let early = s
        .approve(x, a, 60)
        .await
        .expect_err("a approved a moment ago");
    assert!(matches!(early, StoreError::Cooldown(_)), "{early:?}");
    s.clock.advance(60_000);
    s.approve(x, a, 60)
        .await
        .expect("approve x a minute after the last");
    s.clock.advance(59_000);
    let early = s.approve(y, a, 60).await.expect_err("within the cooldown");
    let StoreError::Cooldown(next) = early else {
        panic!("expected the cooldown, got {early:?}")
    };
    assert_eq!(next.timestamp_millis(), START_MS + 120_000);
    s.clock.advance(1_000);
    s.approve(y, a, 60).await.expect("the cooldown is over");
}

#[tokio::test]
async fn a_job_waiting_for_approvals_expires_at_its_deadline_and_not_before() {
    let s = subject(QueueRules::default()).await;
    let submitter = s.agent("submitter").await;
    let voter = s.agent("voter").await;
    let ttl_job = |ttl: u64| {
        let store = s.store.clone();
        async move {
            let id = Uuid::new_v4();
            store
                .job_submit(JobInsertParams {
                    id,
                    title: format!("ttl {ttl}"),
                    job_spec: json!({}),
                    priority: 0,
                    approvals_required: 2,
                    submitted_by: Some(submitter),
                    approval_ttl_secs: ttl,
                    plan_approvals_required: 0,
                    idempotency: None,
                })
                .await
                .expect("submit");
            id
        }
    };
    let (short, approving, never) = (ttl_job(2).await, ttl_job(2).await, ttl_job(0).await);
    s.approve(approving, voter, 0).await.expect("approve");
    let accepted = ttl_job(2).await;
    s.approve(accepted, voter, 0).await.expect("approve");
    s.approve(accepted, s.agent("second").await, 0)
        .await
        .expect("the quorum");
    s.clock.advance(1_999);
    assert_eq!(s.store.jobs_expire_approvals().await.expect("sweep"), 0);
    s.clock.advance(1);
    assert_eq!(s.store.jobs_expire_approvals().await.expect("sweep"), 2);
    for (job, status) in [
        (short, JobStatus::Failed),
        (approving, JobStatus::Failed),
        (never, JobStatus::Committed),
        (accepted, JobStatus::Accepted),
    ] {
        let j = s.store.job_get(job).await.expect("job");
        assert_eq!(j.status, status, "{}", j.title);
        if status == JobStatus::Failed {
            assert_eq!(j.error.as_deref(), Some("approval expired"));
        }
    }
    // Idempotent: a second sweep (another replica's) finds nothing left.
    assert_eq!(s.store.jobs_expire_approvals().await.expect("sweep"), 0);
}

#[tokio::test]
async fn a_vote_refused_by_the_gate_writes_nothing() {
    let s = subject(QueueRules::default()).await;
    let submitter = s.agent("submitter").await;
    let outsider = s.agent("outsider").await;
    let job = s.submit(submitter, 0, 1).await;
    let vote = |voter, verdict, policy| VoteParams {
        job_id: job,
        voter: Voter::Agent(voter),
        stage: Stage::Job,
        verdict,
        text: Some("why".into()),
        rules: GateRules {
            policy,
            cooldown_secs: 3600,
            max_replans: 2,
            plan_max_retries: 0,
            plan_timeout_secs: 60,
        },
    };
    let own = s
        .store
        .vote(vote(submitter, Verdict::Reject, ApproverPolicy::Any))
        .await
        .expect_err("the submitter's own job");
    assert!(matches!(own, StoreError::Refused(_)), "{own:?}");
    let role = s
        .store
        .vote(vote(outsider, Verdict::Approve, ApproverPolicy::Role))
        .await
        .expect_err("no approver role");
    assert!(matches!(role, StoreError::Refused(_)), "{role:?}");
    assert!(s.store.approval_list(job).await.expect("votes").is_empty());
    let agent = s.store.agent_get(outsider).await.expect("agent");
    assert_eq!(agent.last_approved_at, None, "no cooldown taken");
    assert_eq!(
        s.store.job_get(job).await.expect("job").status,
        JobStatus::Committed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_are_published_in_id_order_with_none_missing() {
    let s = subject(QueueRules::default()).await;
    let mut live = s.store.subscribe();
    s.jobs(&[JobShape::new(0, 40)]).await;
    let mut agents = Vec::new();
    for i in 0..8 {
        agents.push(s.agent(&format!("e{i}")).await);
    }
    // Concurrent writers: claims, starts and completions of 40 tasks by 8 agents.
    join_all(agents.iter().map(|&agent| {
        let s = &s;
        async move {
            while let Some(c) = s.claim(agent).await {
                s.start(agent, &c).await.expect("start");
                s.complete(agent, &c, json!({ "ok": true })).await;
            }
        }
    }))
    .await;
    let last = s.store.event_last_id().await.expect("last id");
    let stored = s
        .store
        .event_list(EventListParams {
            job_id: None,
            after: 0,
            limit: 10_000,
            newest_first: false,
        })
        .await
        .expect("events");
    assert_eq!(stored.last().map(|e| e.id), Some(last));
    let mut published = Vec::new();
    while published.last() != Some(&last) {
        let e = tokio::time::timeout(std::time::Duration::from_secs(10), live.recv())
            .await
            .expect("the next event within 10 s")
            .expect("no lag");
        published.push(e.id);
    }
    let ids: Vec<i64> = stored.iter().map(|e| e.id).collect();
    assert_eq!(published, ids, "live events are the table's, in its order");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
    let completed = stored
        .iter()
        .filter(|e| e.kind() == EventKind::TaskCompleted)
        .count();
    assert_eq!(completed, 41, "40 work tasks and the plan");
    let job = stored.iter().rev().find_map(|e| e.payload.job_change());
    assert_eq!(job.map(|c| c.status), Some(JobStatus::Completed));
}
