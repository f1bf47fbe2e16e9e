//! `agora worker --exec`: three worker processes of the real binary run a 200-task job; one is
//! killed with SIGKILL mid-task and nothing is lost.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{agora_bin, spawn_app, TestApp};

const TASKS: usize = 200;

const WORK: &str = r#"#!/bin/sh
cat > /dev/null
echo "$AGORA_TASK_ID $WORKER_NAME" >> "$RUN_LOG"
echo "PROGRESS 50 working on $AGORA_TASK_INDEX"
# w1 is slow, so it surely holds running tasks when it is killed.
if [ "$WORKER_NAME" = w1 ]; then sleep 5; else sleep 0.05; fi
echo "{\"index\": $AGORA_TASK_INDEX, \"by\": \"$WORKER_NAME\"}"
"#;

const PLANNER: &str = r#"#!/bin/sh
cat > /dev/null
printf '{"task_specs":['
i=1
while [ "$i" -le "$TASKS" ]; do
  [ "$i" -gt 1 ] && printf ','
  printf '{"n":%d}' "$i"
  i=$((i+1))
done
printf ']}\n'
"#;

fn script(dir: &Path, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.display().to_string()
}

fn start_worker(app: &TestApp, dir: &Path, name: &str) -> tokio::process::Child {
    tokio::process::Command::new(agora_bin())
        .args(["worker", "--slots", "2", "--name", name, "--url", &app.base])
        .args(["--exec", &script(dir, "work.sh", WORK)])
        .args(["--planner", &script(dir, "plan.sh", PLANNER)])
        .env("WORKER_NAME", name)
        .env("RUN_LOG", dir.join("runs.log"))
        .env("TASKS", TASKS.to_string())
        .env_remove("AGORA_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start agora worker")
}

async fn tasks_of(app: &TestApp, job: Uuid) -> Vec<Value> {
    let page = app.get(&format!("/jobs/{job}/tasks?limit=1000")).await.ok();
    page["items"].as_array().cloned().unwrap_or_default()
}

async fn agent_id(app: &TestApp, name: &str) -> String {
    let agents = app.get("/agents?limit=1000").await.ok()["items"].clone();
    agents
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == name))
        .map(|a| a["id"].as_str().unwrap_or_default().to_string())
        .expect("the worker registered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_finish_200_tasks_and_a_killed_one_loses_nothing() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut workers: Vec<_> = ["w1", "w2", "w3"]
        .iter()
        .map(|n| start_worker(&app, dir.path(), n))
        .collect();
    tokio::time::timeout(Duration::from_secs(20), async {
        while app.get("/agents").await.ok()["total"].as_u64().unwrap_or(0) < 3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("three workers registered");
    let victim = agent_id(&app, "w1").await;

    let job = app.submit("two hundred", json!({ "n": TASKS })).await;
    for a in app.register_many("approver", 5).await {
        app.approve(job, &a).await.ok();
    }

    // Kill w1 with SIGKILL while it runs a task, once the job is well under way.
    let held = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let tasks = tasks_of(&app, job).await;
            let done = tasks.iter().filter(|t| t["status"] == "completed").count();
            let held: Vec<String> = tasks
                .iter()
                .filter(|t| t["agent_id"] == victim.as_str() && t["status"] == "running")
                .map(|t| t["id"].as_str().unwrap_or_default().to_string())
                .collect();
            if done >= 40 && held.len() == 2 {
                workers[0].start_kill().expect("kill w1");
                return held;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("w1 ran tasks");
    workers[0].wait().await.expect("w1 is gone");

    tokio::time::timeout(Duration::from_secs(90), async {
        while app.job(job).await["status"] != "completed" {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the job completed");

    let tasks = tasks_of(&app, job).await;
    assert_eq!(tasks.len(), TASKS + 1, "the plan task and 200 work tasks");
    for t in &tasks {
        assert_eq!(t["status"], "completed", "task {t}");
    }
    // The tasks w1 held when it died were finished by the others, after one lost attempt.
    for id in &held {
        let t = tasks.iter().find(|t| t["id"] == id.as_str()).expect("task");
        assert_ne!(t["agent_id"], victim.as_str(), "task {id} was handed on");
        assert!(t["attempts"].as_u64() >= Some(1), "{t}");
    }
    // Completed exactly once each: one task.completed event per task.
    let mut completions: HashMap<String, usize> = HashMap::new();
    for e in app.all_events(job).await {
        if e["kind"] == "task.completed" {
            *completions
                .entry(e["task_id"].as_str().unwrap_or_default().to_string())
                .or_default() += 1;
        }
    }
    assert_eq!(completions.len(), TASKS + 1);
    assert!(completions.values().all(|&n| n == 1), "{completions:?}");
    // Every work task's command ran; only the tasks w1 held ran twice.
    let log = std::fs::read_to_string(dir.path().join("runs.log")).expect("runs.log");
    let mut runs: HashMap<&str, usize> = HashMap::new();
    for line in log.lines() {
        *runs
            .entry(line.split(' ').next().unwrap_or(""))
            .or_default() += 1;
    }
    assert_eq!(runs.len(), TASKS, "each work task ran");
    let held: HashSet<&str> = held.iter().map(String::as_str).collect();
    for (task, n) in &runs {
        assert!(*n == 1 || held.contains(task), "task {task} ran {n} times");
    }
    // The results are the commands' stdout.
    let by: HashSet<&str> = tasks
        .iter()
        .filter(|t| t["type"] == "work")
        .map(|t| t["result"]["by"].as_str().unwrap_or(""))
        .collect();
    assert!(by.contains("w2") && by.contains("w3"), "{by:?}");

    // Ctrl-C: the survivors finish, unregister and exit 0.
    for w in &mut workers[1..] {
        let pid = w.id().expect("pid") as i32;
        // SAFETY: kill(2) sends a signal to a child process; no memory is involved.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let status = tokio::time::timeout(Duration::from_secs(20), w.wait())
            .await
            .expect("the worker stopped")
            .expect("wait");
        assert!(status.success(), "{status}");
    }
    let agents = app.get("/agents?limit=1000").await.ok()["items"].clone();
    let online: Vec<&Value> = agents
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|a| a["name"] == "w2" || a["name"] == "w3")
                .collect()
        })
        .unwrap_or_default();
    for a in online {
        assert_ne!(a["status"], "online", "{a}");
    }
}

const MODES: &str = r#"#!/bin/sh
spec=$(cat)
case "$spec" in
  *ok*) echo "PROGRESS 40 half way"; echo '{"fine": true}' ;;
  *fail*) echo "something went wrong: boom" >&2; exit 3 ;;
  *slow*) echo $$ > "$DIR/slow.pid"; sleep 30; echo '"too late"' ;;
  *linger*) touch "$DIR/linger.started"; sleep 1.5; echo '"lingered"' ;;
esac
"#;

const FOUR: &str = r#"#!/bin/sh
cat > /dev/null
echo '{"task_specs":[{"m":"ok"},{"m":"fail"},{"m":"slow"},{"m":"linger"}]}'
"#;

/// One worker, four tasks: a result with progress, a failure with its stderr, a command killed
/// at the task's timeout, and a task still running at Ctrl-C that is finished before the worker
/// unregisters and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_reports_results_failures_timeouts_and_drains_on_ctrl_c() {
    let app = crate::helpers::spawn_app_with(|c| {
        c.approvals_required = 1;
        c.task_timeout = 2;
        c.task_max_retries = 0;
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut worker = tokio::process::Command::new(agora_bin())
        .args([
            "worker", "--slots", "4", "--name", "solo", "--url", &app.base,
        ])
        .args(["--exec", &script(dir.path(), "modes.sh", MODES)])
        .args(["--planner", &script(dir.path(), "four.sh", FOUR)])
        .env("DIR", dir.path())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start agora worker");
    let approver = app.register("approver").await;
    let job = app.submit("modes", json!({})).await;
    app.approve(job, &approver).await.ok();

    // Ctrl-C while `linger` runs.
    let started = dir.path().join("linger.started");
    tokio::time::timeout(Duration::from_secs(20), async {
        while !started.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the linger task started");
    let pid = worker.id().expect("pid") as i32;
    // SAFETY: kill(2) sends a signal to our child; no memory is involved.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let status = tokio::time::timeout(Duration::from_secs(20), worker.wait())
        .await
        .expect("the worker stopped")
        .expect("wait");
    assert!(status.success(), "{status}");

    let tasks = tasks_of(&app, job).await;
    let by_mode = |m: &str| {
        tasks
            .iter()
            .find(|t| t["task_spec"]["m"] == m)
            .cloned()
            .unwrap_or_else(|| panic!("no {m} task in {tasks:?}"))
    };
    let ok = by_mode("ok");
    assert_eq!(ok["status"], "completed");
    assert_eq!(ok["result"], json!({ "fine": true }));
    assert_eq!(ok["progress_message"], "half way");
    let fail = by_mode("fail");
    assert_eq!(fail["status"], "failed");
    let error = fail["error"].as_str().unwrap_or("");
    assert!(
        error.contains("exit status: 3") && error.contains("boom"),
        "{error}"
    );
    let slow = by_mode("slow");
    assert_eq!(slow["status"], "failed");
    assert!(
        slow["error"].as_str().unwrap_or("").contains("timeout"),
        "{slow}"
    );
    let slow_pid: i32 = std::fs::read_to_string(dir.path().join("slow.pid"))
        .expect("slow.pid")
        .trim()
        .parse()
        .expect("pid");
    // Dead, or a zombie nobody has reaped yet (its parent, the worker, is gone).
    let state = std::fs::read_to_string(format!("/proc/{slow_pid}/stat")).unwrap_or_default();
    let running = state
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|s| s != "Z" && s != "X");
    assert!(!running, "the timed-out command was killed: {state}");
    let linger = by_mode("linger");
    assert_eq!(linger["status"], "completed", "finished during the drain");
    assert_eq!(linger["result"], "lingered");
    let agents = app.get("/agents?limit=1000").await.ok()["items"].clone();
    let solo = agents
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == "solo").cloned());
    assert!(
        solo.is_none_or(|a| a["status"] != "online"),
        "the worker unregistered"
    );
}

/// Work that echoes its name, capabilities and inputs: the inputs file, when there is one, is
/// the JSON object of its dependencies' results.
const GRAPH_WORK: &str = r#"#!/bin/sh
cat > /dev/null
inputs=null
[ -n "$AGORA_INPUTS" ] && inputs=$(cat "$AGORA_INPUTS")
echo "{\"name\": \"$AGORA_TASK_NAME\", \"by\": \"$WORKER_NAME\", \"inputs\": $inputs}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_take_only_tasks_their_capabilities_cover_and_read_their_inputs() {
    let app = crate::helpers::spawn_app_with(|c| c.approvals_required = 1).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let planner = app.register("planner").await;
    let job = app
        .planned_job(
            std::slice::from_ref(&planner),
            &planner,
            vec![
                json!({"spec": 1, "name": "fetch"}),
                json!({"spec": 2, "name": "build", "depends_on": ["fetch"], "requires": ["rust"]}),
                json!({"spec": 3, "name": "lint", "depends_on": ["fetch"], "requires": ["python"]}),
                json!({"spec": 4, "name": "ship", "depends_on": ["build", "lint"], "requires": ["rust", "git"]}),
            ],
        )
        .await;
    let work = script(dir.path(), "graph.sh", GRAPH_WORK);
    let mut workers = Vec::new();
    for (name, caps) in [("rusty", "rust,git"), ("snake", "python")] {
        workers.push(
            tokio::process::Command::new(agora_bin())
                .args(["worker", "--slots", "2", "--name", name, "--url", &app.base])
                .args(["--capabilities", caps, "--exec", &work])
                .env("WORKER_NAME", name)
                .env_remove("AGORA_URL")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .expect("start agora worker"),
        );
    }
    crate::helpers::eventually(30, || async {
        (app.job(job).await["status"] == "completed").then_some(())
    })
    .await;
    let tasks = tasks_of(&app, job).await;
    let result = |name: &str| {
        tasks
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["result"].clone())
            .expect("the task")
    };
    assert_eq!(result("build")["by"], "rusty");
    assert_eq!(result("lint")["by"], "snake");
    assert_eq!(result("ship")["by"], "rusty");
    assert_eq!(result("build")["inputs"], json!({"fetch": result("fetch")}));
    assert_eq!(
        result("ship")["inputs"],
        json!({"build": result("build"), "lint": result("lint")})
    );
    assert_eq!(result("fetch")["inputs"], Value::Null);
    assert_eq!(result("ship")["name"], "ship");
    for mut w in workers {
        let _ = w.start_kill();
        let _ = w.wait().await;
    }
}
