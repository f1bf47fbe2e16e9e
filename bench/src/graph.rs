//! `--only graph`: the claim's cost against the size of the queue. REST claims (each then
//! completed) with 1,000 pending tasks, then with 1,000,000, in plans where a tenth of the tasks
//! wait for a dependency, a tenth hold one of 100 exclusive keys and a twentieth require a
//! capability. Tasks waiting for a dependency are outside the claim index, and the rest are
//! taken in queue order, so the two figures should be alike. `GRAPH_DEBUG=1` also prints the
//! latencies by kind of task (plain, with a dependency, a key, a requirement).

use std::time::{Duration, Instant};

use agora_client::Client;
use anyhow::Context;
use serde_json::{json, Value};

/// The most tasks one plan may hold (`MAX_PLAN_TASKS`).
const PER_PLAN: usize = 100_000;

/// Plan entries: dependencies, keys and requirements mixed in.
fn entries(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| match i % 20 {
            0 | 10 if i > 0 => json!({"spec": {"i": i}, "depends_on": [i - 1]}),
            5 | 15 => json!({"spec": {"i": i}, "key": format!("k{}", i % 100)}),
            7 => json!({"spec": {"i": i}, "requires": ["rust"]}),
            _ => json!({"i": i}),
        })
        .collect()
}

/// A job at `priority` whose plan landed with `n` tasks of [`entries`].
async fn job(planner: &Client, n: usize, priority: i32) -> anyhow::Result<()> {
    let job =
        crate::client::submit_at(planner, &format!("graph {n}"), json!({}), Some(priority)).await?;
    planner.approve(job, None).await?;
    let plan = planner.claim(Some(5)).await?.context("the plan task")?;
    anyhow::ensure!(
        plan.task.job_id == job,
        "the plan task of another job: {:?} #{} of {} (priority {}), not {}",
        plan.task.task_type,
        plan.task.index,
        plan.job.id,
        plan.job.priority,
        job
    );
    planner
        .complete(plan.task.id, json!({ "task_specs": entries(n) }))
        .await?;
    Ok(())
}

/// `n` claims, each completed: their latencies.
async fn claims(agent: &Client, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    let mut by_kind: std::collections::BTreeMap<&str, Vec<Duration>> = Default::default();
    for _ in 0..n {
        let started = Instant::now();
        let claimed = agent.claim(None).await?.context("a pending task")?;
        let took = started.elapsed();
        out.push(took);
        let t = &claimed.task;
        let kind = if t.key.is_some() {
            "key"
        } else if !t.depends_on.is_empty() {
            "dep"
        } else if !t.requires.is_empty() {
            "req"
        } else {
            "plain"
        };
        by_kind.entry(kind).or_default().push(took);
        agent.complete(claimed.task.id, json!(null)).await?;
    }
    if std::env::var("GRAPH_DEBUG").is_ok() {
        for (k, v) in by_kind {
            crate::report(k, v);
        }
    }
    Ok(out)
}

pub async fn run(api: &Client, samples: usize, big: usize, settle: u64) -> anyhow::Result<()> {
    let mut agent = api.clone();
    agent
        .register("graph-claimer", Some(vec!["rust".into()]))
        .await?;
    println!("claim latency by queue size (REST claim, then complete; dependencies, keys, requires mixed in):");
    // The small queue's job goes last in the big queue (lower priority).
    job(&agent, 1_000, -1).await?;
    claims(&agent, 50).await?;
    let small = claims(&agent, samples).await?;
    let started = Instant::now();
    let mut planned = 0;
    let mut priority = 0;
    while planned < big {
        // Each job outranks the last, so its plan task comes before their work.
        let n = PER_PLAN.min(big - planned);
        priority += 1;
        job(&agent, n, priority).await?;
        planned += n;
    }
    let load = started.elapsed();
    println!(
        "  {planned} more tasks planned in {:.1} s ({:.0} tasks/s landed)",
        load.as_secs_f64(),
        planned as f64 / load.as_secs_f64()
    );
    // The landing wrote a gigabyte of WAL: let its checkpoint finish and warm up, as the
    // small queue's figure had the server warm too.
    tokio::time::sleep(Duration::from_secs(settle)).await;
    claims(&agent, 50).await?;
    let large = claims(&agent, samples).await?;
    let p50 = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let p99 = |mut v: Vec<Duration>| {
        v.sort();
        crate::pct(&v, 0.99)
    };
    let ratio = |l: Duration, s: Duration| l.as_secs_f64() / s.as_secs_f64().max(1e-9);
    let (p50_ratio, p99_ratio) = (
        ratio(p50(large.clone()), p50(small.clone())),
        ratio(p99(large.clone()), p99(small.clone())),
    );
    crate::report(&format!("{} pending", 1_000 - 50), small);
    crate::report(
        &format!("{} pending", planned + 1_000 - 50 - samples),
        large,
    );
    println!("  large / small: p50 {p50_ratio:.2}x, p99 {p99_ratio:.2}x");
    Ok(())
}
