//! Per-job git history: commits for the spec, the plan and each task, read back with git2 and
//! through the API; a deleted repository is rebuilt from the database.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

async fn git_app() -> TestApp {
    spawn_app_with(|c| {
        c.approvals_required = 1;
        c.git_enabled = true;
        c.task_max_retries = 0;
    })
    .await
}

/// Waits until the job's history has at least `n` commits.
async fn commits_at_least(app: &TestApp, job: uuid::Uuid, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let c = app
            .get(&format!("/jobs/{job}/commits?limit=1000"))
            .await
            .ok();
        let list = c["items"].as_array().cloned().unwrap_or_default();
        if list.len() >= n {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} commits after 10 s");
}

fn tree_files(repo: &git2::Repository) -> Vec<(String, String)> {
    let tree = repo.head().unwrap().peel_to_tree().unwrap();
    let mut out = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        if let Some(blob) = entry
            .to_object(repo)
            .ok()
            .and_then(|o| o.as_blob().map(|b| b.content().to_vec()))
        {
            out.push((
                format!("{dir}{}", entry.name().unwrap_or("")),
                String::from_utf8_lossy(&blob).into_owned(),
            ));
        }
        git2::TreeWalkResult::Ok
    })
    .unwrap();
    out.sort();
    out
}

#[tokio::test]
async fn a_job_with_five_tasks_leaves_a_readable_history() {
    let app = git_app().await;
    let agents = app.register_many("dev", 2).await;
    let specs: Vec<Value> = (1..=5).map(|i| json!({ "step": i })).collect();
    let job = app.planned_job(&agents, &agents[0], specs).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let worker = &agents[i % 2];
        let c = app.claim(worker).await.unwrap();
        let id = id_of(&c["task"]);
        if i == 4 {
            app.task_call(
                worker,
                &id,
                "fail",
                json!({ "error": "disk full", "retryable": false }),
            )
            .await
            .ok();
        } else {
            app.task_call(
                worker,
                &id,
                "complete",
                json!({ "result": { "done": i + 1 } }),
            )
            .await
            .ok();
        }
        ids.push((c["task"]["index"].as_u64().unwrap(), id));
    }
    // job.json, plan.json, then one commit per task.
    let commits = commits_at_least(&app, job, 7).await;
    assert_eq!(commits.len(), 7, "{commits:#?}");
    let messages: Vec<&str> = commits
        .iter()
        .rev()
        .map(|c| c["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages[0], "Submit job: planned");
    assert_eq!(messages[1], "Plan: 5 tasks");
    assert!(
        messages[2].starts_with("Task 1 completed (dev-"),
        "{}",
        messages[2]
    );
    assert!(messages[6].starts_with("Task 5 failed"), "{}", messages[6]);
    assert_eq!(commits[6]["author"], "agora", "anonymous submission");
    assert_eq!(commits[5]["author"], "dev-0", "the planner");

    // Read the repository itself.
    let dir = app.config.repos_dir.join(job.to_string());
    let repo = git2::Repository::open_bare(&dir).expect("a bare repository per job");
    let files = tree_files(&repo);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"job.json") && names.contains(&"plan.json"),
        "{names:?}"
    );
    for (index, id) in &ids {
        let dir = agora_shared::task_dir(
            u32::try_from(*index).expect("index"),
            id.parse().expect("task id"),
        );
        let spec = files
            .iter()
            .find(|(n, _)| *n == format!("{dir}/spec.json"))
            .expect("spec.json");
        assert_eq!(
            serde_json::from_str::<Value>(&spec.1).unwrap(),
            json!({ "step": index })
        );
        let outcome = if *index == 5 {
            "error.json"
        } else {
            "result.json"
        };
        let (_, body) = files
            .iter()
            .find(|(n, _)| *n == format!("{dir}/{outcome}"))
            .expect("outcome file");
        let body: Value = serde_json::from_str(body).unwrap();
        if *index == 5 {
            assert_eq!(body["error"], "disk full");
        } else {
            assert_eq!(body["done"], *index);
        }
    }
    let job_json: Value =
        serde_json::from_str(&files.iter().find(|(n, _)| n == "job.json").unwrap().1).unwrap();
    assert_eq!(job_json["job_spec"], json!({ "goal": "test" }));
    // The API agrees with git.
    let mut walk = repo.revwalk().unwrap();
    walk.push_head().unwrap();
    let oids: Vec<String> = walk.map(|o| o.unwrap().to_string()).collect();
    let api_ids: Vec<String> = commits
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(api_ids, oids);
    let plan = app.get(&format!("/jobs/{job}/files/plan.json")).await.ok();
    assert_eq!(
        serde_json::from_str::<Value>(plan["content"].as_str().unwrap()).unwrap()["task_specs"][0],
        json!({ "step": 1 })
    );
    // Bad paths and unknown jobs.
    // (Clients normalise a literal `..`; encoded ones reach the server.)
    app.get(&format!("/jobs/{job}/files/%2Fetc%2Fpasswd"))
        .await
        .err(400, "VALIDATION_ERROR");
    app.get(&format!("/jobs/{job}/files/a/..%2F..%2Fetc%2Fpasswd"))
        .await
        .err(400, "VALIDATION_ERROR");
    app.get(&format!("/jobs/{job}/files/tasks//x"))
        .await
        .err(400, "VALIDATION_ERROR");
    app.get(&format!("/jobs/{job}/files/nope.json"))
        .await
        .err(404, "NOT_FOUND");
    app.get(&format!("/jobs/{}/commits", uuid::Uuid::new_v4()))
        .await
        .err(404, "NOT_FOUND");
    // The history pages like every list.
    let page = app
        .get(&format!("/jobs/{job}/commits?limit=3&offset=3"))
        .await
        .ok();
    assert_eq!(page["total"], 7, "{page}");
    let paged: Vec<&Value> = page["items"].as_array().expect("items").iter().collect();
    assert_eq!(paged, commits[3..6].iter().collect::<Vec<_>>());
    app.get(&format!("/jobs/{job}/commits?limit=0"))
        .await
        .err(400, "VALIDATION_ERROR");
}

#[tokio::test]
async fn a_deleted_repository_is_rebuilt_with_the_same_files() {
    let app = git_app().await;
    let agents = app.register_many("dev", 1).await;
    let job = app
        .planned_job(
            &agents,
            &agents[0],
            vec![json!("a"), json!("b"), json!("c")],
        )
        .await;
    while let Some(c) = app.claim(&agents[0]).await {
        app.task_call(
            &agents[0],
            &id_of(&c["task"]),
            "complete",
            json!({ "result": c["task"]["task_spec"] }),
        )
        .await
        .ok();
    }
    commits_at_least(&app, job, 5).await;
    let dir = app.config.repos_dir.join(job.to_string());
    let before = tree_files(&git2::Repository::open_bare(&dir).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
    let git = agora_server::git::GitHistory::new(app.config.repos_dir.clone(), app.store.clone());
    git.rebuild(job).await.expect("rebuild");
    let after = tree_files(&git2::Repository::open_bare(&dir).unwrap());
    assert_eq!(after, before, "same files, same contents");
    assert_eq!(before.len(), 2 + 3 * 2);
}

#[tokio::test]
async fn git_can_be_turned_off() {
    let app = spawn_app().await;
    let job = app.submit("j", json!({})).await;
    app.get(&format!("/jobs/{job}/commits"))
        .await
        .err(404, "NOT_FOUND");
    assert!(!app.config.repos_dir.join(job.to_string()).exists());
}

/// An agent named `<x>` (a valid Agora name, not a valid git author) gets its commits: the
/// author is made valid for git and the name is kept in the message.
#[tokio::test]
async fn an_agent_with_a_name_git_refuses_still_gets_its_commits() {
    let app = git_app().await;
    let planner = app.register("<x>").await;
    let job = app
        .planned_job(std::slice::from_ref(&planner), &planner, vec![json!(1)])
        .await;
    let claimed = app.claim(&planner).await.expect("the work task");
    let id = id_of(&claimed["task"]);
    app.task_call(
        &planner,
        &id,
        "complete",
        json!({ "result": { "ok": true } }),
    )
    .await
    .ok();
    // The spec, the plan and the task: three commits.
    let commits = commits_at_least(&app, job, 3).await;
    assert!(
        commits
            .iter()
            .any(|c| c["author"] == "_x_"
                && c["message"].as_str().unwrap_or("").contains("Agent: <x>")),
        "{commits:?}"
    );
}

/// The `.pack` files of a repository.
fn packs(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("objects/pack"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
                .count()
        })
        .unwrap_or(0)
}

/// Bytes under a directory.
fn du(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => du(&e.path()),
                    _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                })
                .sum()
        })
        .unwrap_or(0)
}

/// 400 tasks finished a few at a time, over many flushes: the repository keeps a handful of
/// packs (each flush writes one; they are merged past a bound), `tasks/` is split into
/// directories of a hundred, so a commit rewrites only its own shard, and every file is there.
#[tokio::test]
async fn four_hundred_trickled_tasks_leave_a_handful_of_packs() {
    let app = git_app().await;
    let agents = app.register_many("dev", 1).await;
    let specs: Vec<Value> = (0..400).map(|i| json!({ "n": i })).collect();
    let job = app.planned_job(&agents, &agents[0], specs).await;
    let dir = app.config.repos_dir.join(job.to_string());
    let mut most = 0;
    let mut done = 0;
    while let Some(c) = app.claim(&agents[0]).await {
        app.task_call(
            &agents[0],
            &id_of(&c["task"]),
            "complete",
            json!({ "result": { "n": c["task"]["task_spec"]["n"] } }),
        )
        .await
        .ok();
        done += 1;
        if done % 16 == 0 {
            // Past a flush: the next tasks land in another commit and another pack.
            tokio::time::sleep(Duration::from_millis(600)).await;
            most = most.max(packs(&dir));
        }
    }
    assert_eq!(done, 400);
    let commits = commits_at_least(&app, job, 2 + 400 / 16).await;
    // The git writer catches up with larger commits when the machine is busy: wait for the
    // last result to land rather than for a fixed time.
    let results = |repo: &git2::Repository| {
        tree_files(repo)
            .iter()
            .filter(|(n, _)| n.ends_with("/result.json"))
            .count()
    };
    let mut landed = 0;
    for _ in 0..200 {
        let repo = git2::Repository::open_bare(&dir).expect("repository");
        landed = results(&repo);
        if landed == 400 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(landed, 400, "task results in the repository after 20 s");
    let repo = git2::Repository::open_bare(&dir).expect("repository");
    let shards = repo
        .head()
        .unwrap()
        .peel_to_tree()
        .unwrap()
        .get_path(std::path::Path::new("tasks"))
        .unwrap()
        .to_object(&repo)
        .unwrap()
        .peel_to_tree()
        .unwrap();
    let names: Vec<String> = shards
        .iter()
        .filter_map(|e| e.name().map(str::to_string))
        .collect();
    // The plan is task 0, the work tasks 1 to 400.
    assert_eq!(names, ["0-99", "100-199", "200-299", "300-399", "400-499"]);
    println!(
        "{} commits, {} packs at the end (most seen {most}), {} KB on disk",
        commits.len(),
        packs(&dir),
        du(&dir) / 1024
    );
    assert!(commits.len() >= 2 + 400 / 16, "{} commits", commits.len());
    // The last flush moves the branch before it merges packs: the bound holds once it is done.
    let mut at_rest = packs(&dir);
    for _ in 0..100 {
        if at_rest <= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        at_rest = packs(&dir);
    }
    assert!(
        at_rest <= 6,
        "{at_rest} packs 10 s after the last result landed"
    );
    // Seen mid-flush: seven packs and the merged one being written, before the old ones go.
    assert!(most <= 8, "{most} packs at once");
    assert!(du(&dir) < 600 * 1024, "{} KB", du(&dir) / 1024);
}

/// A rejected plan's history: the second plan replaces `plan.json` and says its round; a server
/// started again on the same repositories reads the round back and writes nothing twice; a
/// rebuild from the database gives the same files.
#[tokio::test]
async fn a_rejected_plan_is_replaced_by_the_next_with_its_round_and_survives_a_restart() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.plan_approvals_required = 1;
        c.git_enabled = true;
    })
    .await;
    let approver = app.register("approver").await;
    let first = app.register("first-planner").await;
    let second = app.register("second-planner").await;
    let reviewer = app.register("reviewer").await;
    let job = app.submit("replanned", json!({ "goal": "g" })).await;
    app.approve(job, &approver).await.ok();
    let plan = |planner: TestAgent, specs: Value| {
        let app = &app;
        async move {
            let c = app.claim(&planner).await.expect("a plan task");
            assert_eq!(c["task"]["type"], "plan");
            app.task_call(
                &planner,
                &id_of(&c["task"]),
                "complete",
                json!({ "result": { "task_specs": specs }, "lease_id": c["lease_id"] }),
            )
            .await
            .ok();
        }
    };
    let vote = |verdict: &'static str, body: Value| {
        let app = &app;
        let reviewer = reviewer.clone();
        async move {
            app.post(
                &format!("/jobs/{job}/plan/{verdict}"),
                Some(&reviewer.token),
                body,
            )
            .await
            .ok();
        }
    };
    plan(first, json!(["a", "b"])).await;
    vote(
        "reject",
        json!({ "agent_id": reviewer.id, "reason": "one task is enough" }),
    )
    .await;
    plan(second, json!(["c"])).await;
    vote("approve", json!({ "agent_id": reviewer.id })).await;

    let file = format!("/jobs/{job}/files/plan.json");
    let landed = eventually(20, || async {
        let r = app.get(&file).await;
        let content: Value = serde_json::from_str(r.body["data"]["content"].as_str()?).ok()?;
        (content["round"] == 2).then_some(content)
    })
    .await;
    assert_eq!(landed, json!({ "task_specs": ["c"], "round": 2 }));
    // The second plan is the last commit: a pending work task has no files yet.
    let dir = app.config.repos_dir.join(job.to_string());
    let before = tree_files(&git2::Repository::open_bare(&dir).unwrap());
    assert_eq!(
        before.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        ["job.json", "plan.json"]
    );
    let commits = commits_at_least(&app, job, 1).await;
    let messages: Vec<&str> = commits
        .iter()
        .filter_map(|c| c["message"].as_str())
        .filter(|m| m.to_lowercase().contains("plan"))
        .collect();
    assert!(messages.len() >= 2, "each plan is a commit: {messages:?}");

    // Started again: the history is read back (the plan's round included) and nothing is
    // written twice.
    let again = agora_server::git::GitHistory::new(app.config.repos_dir.clone(), app.store.clone());
    again.sync(job).await.expect("sync");
    let after_sync = commits_at_least(&app, job, 1).await;
    assert_eq!(after_sync.len(), commits.len(), "no commit written twice");
    std::fs::remove_dir_all(&dir).unwrap();
    again.rebuild(job).await.expect("rebuild");
    let rebuilt = tree_files(&git2::Repository::open_bare(&dir).unwrap());
    assert_eq!(rebuilt, before, "the rebuild has the same files");
}

/// Whether each replica writes the git history, from its `/metrics`.
async fn git_writers(apps: &[&TestApp]) -> Vec<bool> {
    let mut out = Vec::new();
    for app in apps {
        let text = app.metrics_text().await;
        out.push(metric_sample(&text, "agora_git_writer ") == Some(1.0));
    }
    out
}

/// A job of three tasks run through `app`: its id once the history holds all five commits.
async fn three_task_job_recorded(app: &TestApp, name: &str) -> uuid::Uuid {
    let agents = app.register_many(name, 1).await;
    let specs: Vec<Value> = (1..=3).map(|i| json!({ "step": i })).collect();
    let job = app.planned_job(&agents, &agents[0], specs).await;
    for _ in 0..3 {
        let c = app.claim(&agents[0]).await.expect("a work task");
        app.task_call(
            &agents[0],
            &id_of(&c["task"]),
            "complete",
            json!({ "result": { "ok": true } }),
        )
        .await
        .ok();
    }
    commits_at_least(app, job, 5).await;
    job
}

/// Two replicas on one database and one shared `REPOS_DIR`, git on; none in the SQLite pass.
async fn two_replicas_one_repos_dir() -> Option<(TestApp, TestApp, tempfile::TempDir, PgDatabase)> {
    if test_backend() != "postgres" {
        eprintln!("git: the replicas' writer runs in the PostgreSQL pass (TEST_BACKEND=postgres)");
        return None;
    }
    let shared = tempfile::tempdir().expect("temp dir");
    let repos = shared.path().join("repos");
    let (mut apps, db) = spawn_replicas(2, |c| {
        c.approvals_required = 1;
        c.git_enabled = true;
        c.repos_dir = repos.clone();
    })
    .await;
    let b = apps.pop().unwrap();
    let a = apps.pop().unwrap();
    Some((a, b, shared, db))
}

/// Waits until exactly one of the two writes the history, the same one 1.5 s apart (the other
/// does not take the lock too; a writer that lost its lock notices at its next flush); which
/// one it is.
async fn one_writer(a: &TestApp, b: &TestApp) -> Vec<bool> {
    eventually(15, || async {
        let w = git_writers(&[a, b]).await;
        if w.iter().filter(|x| **x).count() != 1 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        (git_writers(&[a, b]).await == w).then_some(w)
    })
    .await
}

/// The server process that holds the git writer's lock (`pg_locks`: a bigint key is split into
/// `classid`, its high half, and `objid`).
async fn writer_session(app: &TestApp) -> Option<i32> {
    sqlx::query_as::<_, (i32,)>(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND classid = x'41474f52'::int AND objid = x'47495457'::int",
    )
    .fetch_optional(app.store.reader_for_tests())
    .await
    .expect("pg_locks")
    .map(|(pid,)| pid)
}

/// The writer's lock lost under it (its PostgreSQL session killed, as a database restart or a
/// network cut would): it stops writing, the lock is taken again (by either replica), there is
/// still exactly one writer, and the history goes on, nothing written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_writer_that_loses_its_lock_stops_and_the_history_goes_on() {
    let Some((a, b, _shared, _db)) = two_replicas_one_repos_dir().await else {
        return;
    };
    one_writer(&a, &b).await;
    let first = three_task_job_recorded(&a, "before-the-cut").await;
    let session = writer_session(&a)
        .await
        .expect("a session holds the writer's lock");
    let (killed,): (bool,) = sqlx::query_as("SELECT pg_terminate_backend($1)")
        .bind(session)
        .fetch_one(a.store.reader_for_tests())
        .await
        .expect("terminate");
    assert!(killed);
    eventually(10, || async {
        writer_session(&a)
            .await
            .filter(|s| *s != session)
            .map(|_| ())
    })
    .await;
    one_writer(&a, &b).await;
    let second = three_task_job_recorded(&b, "after-the-cut").await;
    let again = commits_at_least(&a, first, 5).await;
    assert_eq!(again.len(), 5, "nothing written twice: {again:#?}");
    assert_eq!(commits_at_least(&a, second, 5).await.len(), 5);
}

/// Replicas sharing `REPOS_DIR` on one database: one of them writes the history (each writing
/// every job's repository would multiply the work by the replicas), every one serves it, and
/// when the writer stops another takes over, repairs nothing twice and writes what comes next.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_replica_writes_the_history_and_another_takes_over_when_it_stops() {
    let Some((a, b, _shared, _db)) = two_replicas_one_repos_dir().await else {
        return;
    };
    let writers = one_writer(&a, &b).await;
    let (writer, other) = if writers[0] { (a, b) } else { (b, a) };

    // A job run through the replica that does not write: its history is written all the same,
    // and both serve it.
    let first = three_task_job_recorded(&other, "through-other").await;
    let on_writer = commits_at_least(&writer, first, 5).await;
    assert_eq!(on_writer.len(), 5, "{on_writer:#?}");

    // The writer stops; the other takes over.
    writer.stop().await;
    eventually(10, || async {
        git_writers(&[&other]).await[0].then_some(())
    })
    .await;
    let second = three_task_job_recorded(&other, "after-takeover").await;
    let again = commits_at_least(&other, first, 5).await;
    assert_eq!(
        again.len(),
        5,
        "the new writer wrote nothing twice: {again:#?}"
    );
    let second_commits = commits_at_least(&other, second, 5).await;
    assert_eq!(second_commits.len(), 5, "{second_commits:#?}");
}
