//! Exactly-once claim under a race: many agents hammer `POST /tasks/claim` at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_agents_claim_every_task_exactly_once() {
    const AGENTS: usize = 100;
    const TASKS: usize = 600;
    let app = Arc::new(spawn_app().await);
    let agents = app.register_many("racer", AGENTS).await;
    let specs = (0..TASKS).map(|i| json!({ "n": i })).collect();
    let job = app.planned_job(&agents, &agents[0], specs).await;

    let mut workers = Vec::new();
    for agent in agents.clone() {
        let app = app.clone();
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(c) = app.claim(&agent).await {
                let task = id_of(&c["task"]);
                assert_eq!(c["task"]["agent_id"], agent.id.to_string());
                app.task_call(
                    &agent,
                    &task,
                    "complete",
                    json!({ "result": { "by": agent.name } }),
                )
                .await
                .ok();
                mine.push(task);
            }
            mine
        }));
    }
    let mut claimed: Vec<String> = Vec::new();
    let mut busy_agents = 0;
    for w in workers {
        let mine = w.await.expect("worker");
        busy_agents += usize::from(!mine.is_empty());
        claimed.extend(mine);
    }

    // From the responses: every work task handed out once.
    let unique: HashSet<&String> = claimed.iter().collect();
    assert_eq!(claimed.len(), TASKS, "claims handed out");
    assert_eq!(unique.len(), TASKS, "no task handed out twice");
    assert!(
        busy_agents > 10,
        "the work was spread out ({busy_agents} agents got some)"
    );

    // From the database: every task completed on its first claim, by the agent that claimed it.
    let rows: Vec<(String, String, i64, Option<String>)> = sqlx::query_as(
        "SELECT id, status, attempts, agent_id FROM tasks WHERE job_id = $1 AND idx > 0",
    )
    .bind(job.to_string())
    .fetch_all(app.store.reader_for_tests())
    .await
    .expect("tasks");
    assert_eq!(rows.len(), TASKS);
    assert!(rows.iter().all(|r| r.1 == "completed" && r.2 == 0));
    let db_ids: HashSet<&String> = rows.iter().map(|r| &r.0).collect();
    assert_eq!(db_ids, unique);
    let claims: Vec<(String,)> =
        sqlx::query_as("SELECT task_id FROM events WHERE job_id = $1 AND kind = 'task.claimed'")
            .bind(job.to_string())
            .fetch_all(app.store.reader_for_tests())
            .await
            .expect("events");
    let mut per_task: HashMap<String, usize> = HashMap::new();
    for (t,) in claims {
        *per_task.entry(t).or_default() += 1;
    }
    assert_eq!(per_task.len(), TASKS + 1, "plan + work tasks claimed");
    assert!(
        per_task.values().all(|n| *n == 1),
        "one claim event per task"
    );

    let j = app.job(job).await;
    assert_eq!(j["status"], "completed");
    assert_eq!(j["tasks_completed"], TASKS as u64 + 1);
    assert_eq!(j["tasks_running"], 0);
}
