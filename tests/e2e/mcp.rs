//! Agents over MCP: the official Python SDK (`mcp` from PyPI, tests/mcp/agora_mcp.py) as an
//! independent client of `/mcp` on the real server, on both stores. Tool listing and schemas;
//! a whole job approved, planned and worked over MCP, with the same events REST agents make;
//! refusals as `isError` results that write nothing; 401 before any MCP processing; 50
//! concurrent claims on 20 tasks; MCP, WebSocket and REST agents on one job; resources and
//! prompts; and the `claude mcp add` line `agora register --mcp` prints, connected as printed.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use agora_shared::ws::ServerMsg;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::helpers::{agora_bin, spawn_app_with, TestAgent, TestApp};

/// The Python with the MCP SDK: `target/mcp-venv` (scripts/install-test-tools.sh). Missing, the
/// test fails under CI and says loudly that it skipped elsewhere.
fn python() -> Option<PathBuf> {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/mcp-venv/bin/python");
    if venv.is_file() {
        return Some(venv);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the MCP client is not installed at {}; scripts/install-test-tools.sh installs it",
        venv.display()
    );
    eprintln!("SKIPPED: the MCP client (target/mcp-venv) is not installed (scripts/install-test-tools.sh)");
    None
}

/// Runs the independent client's `command` with `input`; its JSON answer.
async fn client(python: &PathBuf, command: &str, input: Value) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mcp/agora_mcp.py");
    let mut child = tokio::process::Command::new(python)
        .arg(&script)
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the MCP client");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(input.to_string().as_bytes())
        .await
        .expect("write the input");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the MCP client's {command} ran past 180 s"))
        .expect("the MCP client ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the MCP client's {command} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the MCP client's {command} printed no JSON ({e}): {stdout}"))
}

fn mcp_url(app: &TestApp) -> String {
    format!("{}/mcp", app.base.trim_end_matches("/api"))
}

/// One agent's calls in one session; their answers.
async fn session(py: &PathBuf, app: &TestApp, agent: &TestAgent, calls: Value) -> Vec<Value> {
    let out = client(
        py,
        "session",
        json!({ "url": mcp_url(app), "token": agent.token, "calls": calls }),
    )
    .await;
    out.as_array().expect("answers").clone()
}

/// One tool call's answer.
async fn call(py: &PathBuf, app: &TestApp, agent: &TestAgent, tool: &str, args: Value) -> Value {
    session(py, app, agent, json!([{ "tool": tool, "args": args }]))
        .await
        .remove(0)
}

#[track_caller]
fn ok(answer: &Value) -> &Value {
    assert_eq!(
        answer["is_error"], false,
        "the tool call was refused: {answer}"
    );
    &answer["structured"]
}

/// A refused call: an `isError` result whose text starts with `code` and mentions `names`.
#[track_caller]
fn refused(answer: &Value, code: &str, names: &str) {
    assert_eq!(answer["is_error"], true, "expected a refusal: {answer}");
    let text = answer["text"].as_str().unwrap_or("");
    assert!(
        text.starts_with(&format!("{code}: ")),
        "expected {code}: {text}"
    );
    assert!(
        text.contains(names),
        "the refusal should name {names:?}: {text}"
    );
    assert_eq!(answer["structured"]["error"]["code"], code, "{answer}");
}

const TOOLS: [&str; 15] = [
    "whoami",
    "list_jobs",
    "get_job",
    "job_tasks",
    "job_events",
    "submit_job",
    "approve_job",
    "reject_job",
    "approve_plan",
    "reject_plan",
    "claim_task",
    "report_progress",
    "complete_task",
    "fail_task",
    "submit_plan",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_list_shows_every_tool_with_its_schema_and_the_prompts_and_templates() {
    let Some(py) = python() else { return };
    let app = spawn_app_with(|_| {}).await;
    let me = app.register("lister").await;
    // The handshake of 2025-11-25 (sessions) and the SDK's own choice ("auto").
    for mode in ["legacy", "auto"] {
        let out = client(
            &py,
            "tools",
            json!({ "url": mcp_url(&app), "token": me.token, "mode": mode }),
        )
        .await;
        if mode == "legacy" {
            assert_eq!(out["protocol_version"], "2025-11-25", "{out}");
        }
        assert_eq!(out["server"], "agora");
        assert!(out["instructions"]
            .as_str()
            .is_some_and(|i| i.contains("claim_task")));
        let tools: BTreeMap<String, Value> = out["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .map(|t| (t["name"].as_str().unwrap_or("").to_string(), t.clone()))
            .collect();
        let names: Vec<&str> = tools.keys().map(String::as_str).collect();
        let mut expected = TOOLS.to_vec();
        expected.sort_unstable();
        assert_eq!(names, expected, "mode {mode}");
        for (name, tool) in &tools {
            let schema = &tool["input_schema"];
            assert_eq!(schema["type"], "object", "{name}: {schema}");
            assert!(
                tool["description"].as_str().is_some_and(|d| d.len() > 60),
                "{name} is described for a model"
            );
        }
        let props = |tool: &str| -> Vec<String> {
            let mut p: Vec<String> = tools[tool]["input_schema"]["properties"]
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            p.sort();
            p
        };
        let required = |tool: &str| tools[tool]["input_schema"]["required"].clone();
        // From the shared request types: SubmitJob, ProgressTask, CompleteTask, FailTask.
        assert_eq!(
            props("submit_job"),
            [
                "approval_ttl_secs",
                "approvals_required",
                "idempotency_key",
                "job_spec",
                "plan_approvals_required",
                "priority",
                "submitted_by",
                "title"
            ]
        );
        assert_eq!(required("submit_job"), json!(["title", "job_spec"]));
        assert_eq!(
            props("report_progress"),
            ["extend_secs", "lease_id", "message", "progress", "task_id"]
        );
        assert_eq!(props("complete_task"), ["lease_id", "result", "task_id"]);
        assert_eq!(
            props("fail_task"),
            ["error", "lease_id", "retryable", "task_id"]
        );
        assert_eq!(
            props("claim_task"),
            ["heartbeat_secs", "request_id", "wait_secs"]
        );
        assert_eq!(props("submit_plan"), ["lease_id", "task_id", "task_specs"]);
        assert_eq!(props("reject_job"), ["job_id", "reason"]);
        assert_eq!(required("reject_job"), json!(["job_id", "reason"]));
        assert_eq!(props("whoami"), Vec::<String>::new());
        let wait = &tools["claim_task"]["input_schema"]["properties"]["wait_secs"];
        assert!(
            wait["description"]
                .as_str()
                .is_some_and(|d| d.contains("50")),
            "{wait}"
        );
        for read in ["whoami", "list_jobs", "get_job", "job_tasks", "job_events"] {
            assert_eq!(tools[read]["read_only"], true, "{read}");
        }
        assert_eq!(tools["claim_task"]["read_only"], false);
        assert_eq!(
            out["templates"],
            json!([
                "agora://jobs/{job_id}",
                "agora://jobs/{job_id}/files/{path}"
            ])
        );
        assert_eq!(out["prompts"], json!(["worker_loop", "review_job"]));
    }
}

/// The events of a job as the agents' roles see them: ids, times and agent names (`mcp-worker-2`
/// is `worker`) made alike, split into the job's own sequence and each task's (by index), which do not
/// depend on how the workers interleave.
fn shape(events: &[Value], prefix: &str) -> (Vec<Value>, BTreeMap<u64, Vec<Value>>) {
    fn scrub(v: &Value, prefix: &str) -> Value {
        match v {
            Value::String(s) if Uuid::parse_str(s).is_ok() => json!("<id>"),
            Value::String(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => json!("<time>"),
            // An agent's role, not which of its kind: `mcp-worker-2` is `worker`.
            Value::String(s) if s.starts_with(prefix) => json!(s
                .trim_start_matches(prefix)
                .trim_end_matches(|c: char| c.is_ascii_digit())
                .trim_end_matches('-')),
            Value::String(s) => json!(s.replace(prefix, "")),
            Value::Array(a) => Value::Array(a.iter().map(|x| scrub(x, prefix)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "id" | "at"))
                    .map(|(k, x)| (k.clone(), scrub(x, prefix)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    let mut job = Vec::new();
    let mut tasks: BTreeMap<u64, Vec<Value>> = BTreeMap::new();
    for e in events {
        let shaped = scrub(e, prefix);
        match e["data"]["index"].as_u64() {
            Some(i) if !e["task_id"].is_null() => tasks.entry(i).or_default().push(shaped),
            _ => job.push(shaped),
        }
    }
    (job, tasks)
}

const SPECS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_approve_one_plans_three_work_over_mcp_as_rest_agents_would() {
    let Some(py) = python() else { return };
    let app = spawn_app_with(|c| c.approvals_required = 5).await;
    let specs: Vec<Value> = SPECS.iter().map(|s| json!({ "goal": s })).collect();

    // Over MCP.
    let submitter = app.register("mcp-submitter").await;
    let approvers = app.register_many("mcp-approver", 5).await;
    let planner = app.register("mcp-planner").await;
    let workers = app.register_many("mcp-worker", 3).await;
    let submitted = call(
        &py,
        &app,
        &submitter,
        "submit_job",
        json!({ "title": "twin", "job_spec": { "goal": "six letters" } }),
    )
    .await;
    let job_id = ok(&submitted)["id"].as_str().expect("job id").to_string();
    assert_eq!(ok(&submitted)["submitted_by"], json!(submitter.id));
    let votes = client(
        &py,
        "many",
        json!({ "url": mcp_url(&app), "agents": approvers.iter().map(|a| json!({
            "token": a.token,
            "calls": [{ "tool": "approve_job", "args": { "job_id": job_id, "comment": "clear" } }],
        })).collect::<Vec<_>>() }),
    )
    .await;
    for v in votes.as_array().expect("votes") {
        ok(&v[0]);
    }
    let mcp_job: Uuid = job_id.parse().expect("uuid");
    assert_eq!(app.job(mcp_job).await["status"], "accepted");
    let claimed = call(&py, &app, &planner, "claim_task", json!({ "wait_secs": 5 })).await;
    let plan = ok(&claimed).clone();
    assert_eq!(plan["task"]["type"], "plan");
    assert_eq!(
        plan["task"]["status"], "running",
        "a claim over MCP starts the task"
    );
    assert_eq!(
        plan["task"]["heartbeat_secs"], 900,
        "under a heartbeat lease"
    );
    assert_eq!(plan["job"]["title"], "twin");
    assert_eq!(plan["job"]["job_spec"], json!({ "goal": "six letters" }));
    let planned = call(
        &py,
        &app,
        &planner,
        "submit_plan",
        json!({ "task_id": plan["task"]["id"], "lease_id": plan["lease_id"], "task_specs": specs }),
    )
    .await;
    assert_eq!(ok(&planned)["job"]["status"], "ready");
    let worked = client(
        &py,
        "work",
        json!({ "url": mcp_url(&app), "tokens": workers.iter().map(|w| &w.token).collect::<Vec<_>>() }),
    )
    .await;
    let mut done = Vec::new();
    for w in worked.as_array().expect("workers") {
        assert!(w.get("failed_on").is_none(), "a worker was refused: {w}");
        done.extend(
            w["done"]
                .as_array()
                .expect("done")
                .iter()
                .map(|t| t.as_str().expect("id").to_string()),
        );
    }
    let job = app.job(mcp_job).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(
        job["tasks_completed"], 7,
        "the plan task and six work tasks"
    );
    let unique: HashSet<&String> = done.iter().collect();
    assert_eq!(done.len(), 6, "every work task completed once: {done:?}");
    assert_eq!(unique.len(), 6, "no task completed twice: {done:?}");
    let tasks = app.get(&format!("/jobs/{mcp_job}/tasks")).await.ok();
    for t in tasks["items"].as_array().expect("tasks") {
        assert_eq!(t["status"], "completed", "{t}");
        assert_eq!(t["deliveries"], 1, "one delivery each: {t}");
        if t["type"] == "work" {
            assert!(done.contains(&t["id"].as_str().expect("id").to_string()));
        }
    }

    // The same job by REST agents through the SDK: the same calls a model makes over MCP.
    let submitter = app.register("rest-submitter").await;
    let approvers = app.register_many("rest-approver", 5).await;
    let planner = app.register("rest-planner").await;
    let workers = app.register_many("rest-worker", 3).await;
    let mut body = crate::helpers::job_body("twin", json!({ "goal": "six letters" }));
    body.submitted_by = Some(submitter.id);
    let rest_job = app
        .as_agent(&submitter)
        .submit(&body)
        .await
        .expect("submit")
        .id;
    for a in &approvers {
        app.as_agent(a)
            .approve(rest_job, Some("clear"))
            .await
            .expect("approve");
    }
    let claimed = app.claim(&planner).await.expect("the plan task");
    let (task, lease) = (
        claimed["task"]["id"].as_str().expect("id").to_string(),
        claimed["lease_id"].clone(),
    );
    app.task_call(
        &planner,
        &task,
        "start",
        json!({ "lease_id": lease, "heartbeat_secs": 900 }),
    )
    .await
    .ok();
    app.task_call(
        &planner,
        &task,
        "complete",
        json!({ "result": { "task_specs": specs }, "lease_id": lease }),
    )
    .await
    .ok();
    let loops = workers.iter().cloned().map(|w| {
        let app = &app;
        async move {
            while let Some(c) = app.claim(&w).await {
                let (task, lease) = (
                    c["task"]["id"].as_str().expect("id").to_string(),
                    c["lease_id"].clone(),
                );
                app.task_call(
                    &w,
                    &task,
                    "start",
                    json!({ "lease_id": lease, "heartbeat_secs": 900 }),
                )
                .await
                .ok();
                app.task_call(
                    &w,
                    &task,
                    "progress",
                    json!({ "lease_id": lease, "progress": 50, "message": "halfway" }),
                )
                .await
                .ok();
                app.task_call(
                    &w,
                    &task,
                    "complete",
                    json!({ "lease_id": lease, "result": { "did": c["task"]["task_spec"] } }),
                )
                .await
                .ok();
            }
        }
    });
    futures::future::join_all(loops).await;
    assert_eq!(app.job(rest_job).await["status"], "completed");

    let (mcp_seq, mcp_tasks) = shape(&app.all_events(mcp_job).await, "mcp-");
    let (rest_seq, rest_tasks) = shape(&app.all_events(rest_job).await, "rest-");
    assert_eq!(mcp_seq, rest_seq, "the job's own events");
    assert_eq!(mcp_tasks, rest_tasks, "each task's events");
    assert_eq!(mcp_tasks.len(), 7, "the plan task and six work tasks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_tool_errors_naming_the_problem_and_write_nothing() {
    let Some(py) = python() else { return };
    let app = spawn_app_with(|c| {
        c.approvals_required = 2;
        c.approval_cooldown_secs = 3600;
    })
    .await;
    let agents = app.register_many("voter", 2).await;
    let planner = app.register("planner").await;
    let job = app.submit("to plan", json!({ "goal": "g" })).await;
    for a in &agents {
        app.approve(job, a).await.ok();
    }
    let claimed = call(&py, &app, &planner, "claim_task", json!({ "wait_secs": 5 })).await;
    let plan = ok(&claimed).clone();
    let (task, lease) = (plan["task"]["id"].clone(), plan["lease_id"].clone());
    let other = app.submit("another", json!({ "goal": "h" })).await;
    let before = app.all_events(job).await.len();
    let before_other = app.all_events(other).await.len();

    let answers = session(
        &py,
        &app,
        &planner,
        json!([
            { "tool": "submit_plan", "args": { "task_id": task, "lease_id": lease, "task_specs": [{ "goal": "a" }, null] } },
            { "tool": "submit_plan", "args": { "task_id": task, "task_specs": "all of it" } },
            { "tool": "complete_task", "args": { "task_id": task, "result": { "steps": [] } } },
            { "tool": "claim_task", "args": { "wait_secs": "soon" } },
            { "tool": "claim_task", "args": { "wait_secs": 51 } },
            { "tool": "claim_task", "args": { "wait": 5 } },
            { "tool": "approve_job", "args": { "job_id": "not-a-uuid" } },
            { "tool": "report_progress", "args": { "task_id": task, "progress": 150 } },
            { "tool": "get_job", "args": { "job_id": Uuid::new_v4() } },
            { "tool": "reject_job", "args": { "job_id": other } },
            { "tool": "no_such_tool", "args": {} },
        ]),
    )
    .await;
    refused(&answers[0], "INVALID_PLAN", "task_specs[1]");
    refused(&answers[1], "VALIDATION_ERROR", "task_specs");
    refused(&answers[2], "INVALID_PLAN", "task_specs");
    refused(&answers[3], "VALIDATION_ERROR", "wait_secs");
    refused(&answers[4], "VALIDATION_ERROR", "wait_secs");
    refused(&answers[5], "VALIDATION_ERROR", "request_id, wait_secs");
    refused(&answers[6], "VALIDATION_ERROR", "job_id");
    refused(&answers[7], "VALIDATION_ERROR", "progress");
    refused(&answers[8], "NOT_FOUND", "does not exist");
    refused(&answers[9], "VALIDATION_ERROR", "reason");
    assert!(
        answers[10]["protocol_error"]
            .as_str()
            .is_some_and(|e| e.contains("no_such_tool")),
        "an unknown tool is a protocol error: {}",
        answers[10]
    );
    assert_eq!(app.all_events(job).await.len(), before, "nothing written");
    assert_eq!(app.all_events(other).await.len(), before_other);
    let t = app
        .get(&format!("/tasks/{}", task.as_str().expect("id")))
        .await
        .ok();
    assert_eq!(t["status"], "running");
    assert_eq!(t["progress"], 0);
    assert_eq!(app.job(job).await["status"], "planning");

    // The gate's refusals: one's own job, then the cooldown with the time to come back.
    let own = call(
        &py,
        &app,
        &agents[0],
        "submit_job",
        json!({ "title": "mine", "job_spec": { "goal": "x" } }),
    )
    .await;
    let own = ok(&own)["id"].clone();
    let answers = session(
        &py,
        &app,
        &agents[0],
        json!([
            { "tool": "approve_job", "args": { "job_id": own } },
            { "tool": "approve_job", "args": { "job_id": other } },
        ]),
    )
    .await;
    refused(&answers[0], "SELF_APPROVAL", "submitter");
    refused(&answers[1], "RATE_LIMITED", "may approve again at");
    assert!(answers[1]["structured"]["error"]["details"]["next_allowed_at"].is_string());

    // The plan, put right, lands: the session was not broken by the refusals.
    let planned = call(
        &py,
        &app,
        &planner,
        "submit_plan",
        json!({ "task_id": task, "lease_id": lease, "task_specs": [{ "goal": "a" }] }),
    )
    .await;
    assert_eq!(ok(&planned)["task"]["status"], "completed");
    // A plan submitted for a work task is refused, naming the tool to use.
    let work = call(&py, &app, &planner, "claim_task", json!({})).await;
    let work = ok(&work).clone();
    let wrong = call(
        &py,
        &app,
        &planner,
        "submit_plan",
        json!({ "task_id": work["task"]["id"], "task_specs": [1] }),
    )
    .await;
    refused(&wrong, "VALIDATION_ERROR", "complete_task");

    let metrics = app.metrics_text().await;
    for line in [
        "agora_mcp_tool_calls_total{tool=\"submit_plan\",outcome=\"INVALID_PLAN\"}",
        "agora_mcp_tool_calls_total{tool=\"claim_task\",outcome=\"ok\"}",
        "agora_mcp_tool_calls_total{tool=\"approve_job\",outcome=\"RATE_LIMITED\"}",
    ] {
        assert!(metrics.contains(line), "/metrics counts {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_wrong_and_revoked_tokens_get_401_before_any_mcp_processing() {
    let app = spawn_app_with(|_| {}).await;
    let url = mcp_url(&app);
    let agent = app.register("soon-revoked").await;
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": { "name": "raw", "version": "1" } }
    });
    let post = |token: Option<&str>| {
        let mut req = app
            .http
            .post(&url)
            .header("Accept", "application/json, text/event-stream")
            .json(&initialize);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let valid = post(Some(&agent.token)).await.expect("initialize");
    assert_eq!(valid.status(), 200, "a valid token is served");
    assert!(valid.headers().get("mcp-session-id").is_some());
    for token in [None, Some("not-a-token")] {
        let r = post(token).await.expect("answer");
        assert_eq!(r.status(), 401, "token {token:?}");
        let body: Value = r.json().await.expect("our JSON error");
        assert_eq!(body["error"]["code"], "UNAUTHORIZED");
    }
    let get = app.http.get(&url).send().await.expect("GET");
    assert_eq!(get.status(), 401, "the GET stream needs the token too");
    // A browser page of another origin, even with a token, is refused on reads and writes.
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let r = app
            .http
            .request(method.clone(), &url)
            .bearer_auth(&agent.token)
            .header("Origin", "http://evil.example")
            .header("Accept", "application/json, text/event-stream")
            .json(&initialize)
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 403, "{method} from a foreign origin");
    }
    app.as_agent(&agent).unregister().await.expect("unregister");
    let r = post(Some(&agent.token)).await.expect("answer");
    assert_eq!(r.status(), 401, "a revoked token");

    // The independent client cannot connect without a valid token (what it says is its own:
    // the status is checked above).
    let Some(py) = python() else { return };
    for token in [Value::Null, json!(agent.token)] {
        let out = client(&py, "refused", json!({ "url": url, "token": token })).await;
        assert_eq!(out["connected"], false, "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_mcp_claims_on_twenty_tasks_hand_each_out_once() {
    let Some(py) = python() else { return };
    let app = spawn_app_with(|c| c.approvals_required = 5).await;
    let approvers = app.register_many("approver", 5).await;
    let planner = app.register("planner").await;
    let specs: Vec<Value> = (0..20).map(|i| json!({ "n": i })).collect();
    let job = app.planned_job(&approvers, &planner, specs).await;
    let claimers = app.register_many("claimer", 50).await;
    let out = client(
        &py,
        "many",
        json!({ "url": mcp_url(&app), "agents": claimers.iter().map(|a| json!({
            "token": a.token,
            "calls": [{ "tool": "claim_task", "args": {} }],
        })).collect::<Vec<_>>() }),
    )
    .await;
    let mut got: BTreeMap<String, Uuid> = BTreeMap::new();
    let mut empty = 0;
    for (agent, answers) in claimers.iter().zip(out.as_array().expect("answers")) {
        let claimed = ok(&answers[0]);
        match claimed["task"]["id"].as_str() {
            Some(task) => {
                assert!(
                    got.insert(task.to_string(), agent.id).is_none(),
                    "task {task} handed out twice"
                );
            }
            None => empty += 1,
        }
    }
    assert_eq!(got.len(), 20, "each task handed out");
    assert_eq!(empty, 30, "the other claims find nothing");
    let tasks = app
        .get(&format!("/jobs/{job}/tasks?status=running"))
        .await
        .ok();
    assert_eq!(tasks["total"], 20);
    for t in tasks["items"].as_array().expect("tasks") {
        let id = t["id"].as_str().expect("id");
        assert_eq!(t["deliveries"], 1, "{t}");
        assert_eq!(
            t["agent_id"],
            json!(got[id]),
            "held by the agent it was handed to"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_websocket_and_rest_agents_share_one_job() {
    let Some(py) = python() else { return };
    let app = spawn_app_with(|c| c.approvals_required = 4).await;
    let rest = app.register_many("rest", 2).await;
    let mcp = app.register_many("mcp", 3).await;
    let ws_agent = app.register("ws").await;
    // Two approvals by REST, two over MCP; the plan over MCP.
    let job = app.submit("mixed", json!({ "goal": "g" })).await;
    for a in &rest {
        app.approve(job, a).await.ok();
    }
    for a in &mcp[..2] {
        ok(&call(&py, &app, a, "approve_job", json!({ "job_id": job })).await);
    }
    let plan = call(&py, &app, &mcp[2], "claim_task", json!({ "wait_secs": 5 })).await;
    let plan = ok(&plan).clone();
    let specs: Vec<Value> = (0..6).map(|i| json!({ "part": i })).collect();
    ok(&call(
        &py,
        &app,
        &mcp[2],
        "submit_plan",
        json!({ "task_id": plan["task"]["id"], "lease_id": plan["lease_id"], "task_specs": specs }),
    )
    .await);
    // REST claims two and holds them (started); the WebSocket agent is offered two, accepts
    // them, closes its slots and does them; the MCP workers take what is left; then REST
    // finishes its two.
    let mut held = Vec::new();
    for _ in 0..2 {
        let c = app.claim(&rest[0]).await.expect("a pending task");
        let task = c["task"]["id"].as_str().expect("id").to_string();
        app.task_call(
            &rest[0],
            &task,
            "start",
            json!({ "lease_id": c["lease_id"] }),
        )
        .await
        .ok();
        held.push((task, c["lease_id"].clone()));
    }
    let mut ws = app.connect(&ws_agent).await;
    ws.ready(2).await;
    let mut by_ws = Vec::new();
    while by_ws.len() < 2 {
        match ws.recv().await {
            ServerMsg::TaskOffer { offer_id, .. } => {
                ws.send(json!({ "type": "accept", "offer_id": offer_id }))
                    .await;
            }
            ServerMsg::Ack {
                kind,
                ok: accepted,
                task: Some(task),
                ..
            } if kind == "accept" => {
                assert!(accepted);
                by_ws.push(task.id.to_string());
            }
            _ => {}
        }
    }
    ws.ready(0).await;
    for task in &by_ws {
        ws.send(json!({ "type": "complete", "task_id": task, "result": { "by": "ws" } }))
            .await;
        let (completed, error) = ws.ack("complete").await;
        assert!(completed, "{error:?}");
    }
    let worked = client(
        &py,
        "work",
        json!({ "url": mcp_url(&app), "tokens": [mcp[0].token, mcp[1].token], "wait_secs": 0 }),
    )
    .await;
    let by_mcp: Vec<String> = worked
        .as_array()
        .expect("workers")
        .iter()
        .flat_map(|w| w["done"].as_array().cloned().unwrap_or_default())
        .map(|t| t.as_str().expect("id").to_string())
        .collect();
    for (task, lease) in &held {
        app.task_call(
            &rest[0],
            task,
            "complete",
            json!({ "lease_id": lease, "result": { "by": "rest" } }),
        )
        .await
        .ok();
    }
    assert_eq!((held.len(), by_ws.len(), by_mcp.len()), (2, 2, 2));
    let all: HashSet<&String> = held
        .iter()
        .map(|(t, _)| t)
        .chain(&by_ws)
        .chain(&by_mcp)
        .collect();
    assert_eq!(all.len(), 6, "each task completed once, by one of them");
    let done = app.job(job).await;
    assert_eq!(done["status"], "completed", "{done}");
    let completed_by: Vec<String> = app
        .all_events(job)
        .await
        .iter()
        .filter(|e| e["kind"] == "task.completed")
        .filter_map(|e| e["agent_id"].as_str().map(str::to_string))
        .collect();
    let count = |a: &TestAgent| {
        completed_by
            .iter()
            .filter(|c| **c == a.id.to_string())
            .count()
    };
    assert_eq!(count(&rest[0]), 2, "REST");
    assert_eq!(count(&ws_agent), 2, "WebSocket");
    assert_eq!(count(&mcp[0]) + count(&mcp[1]), 2, "MCP workers");
    assert_eq!(count(&mcp[2]), 1, "the MCP planner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_and_their_files_are_resources_and_the_skill_is_two_prompts() {
    let Some(py) = python() else { return };
    let app = spawn_app_with(|c| {
        c.approvals_required = 2;
        c.git_enabled = true;
    })
    .await;
    let agents = app.register_many("reader", 2).await;
    let planner = app.register("planner").await;
    let job = app
        .planned_job(&agents, &planner, vec![json!({ "goal": "read me" })])
        .await;
    let work = app.claim(&planner).await.expect("the work task");
    app.task_call(
        &planner,
        work["task"]["id"].as_str().expect("id"),
        "complete",
        json!({ "result": { "read": true }, "lease_id": work["lease_id"] }),
    )
    .await
    .ok();
    let file = format!("agora://jobs/{job}/files/job.json");
    // The git history is written in the background: wait for the work task's files.
    crate::helpers::eventually(20, || async {
        let page = app.get(&format!("/jobs/{job}/commits?limit=1000")).await;
        let commits = page.body["data"]["items"].as_array()?.clone();
        commits
            .iter()
            .flat_map(|c| c["files"].as_array().cloned().unwrap_or_default())
            .any(|f| {
                f.as_str()
                    .is_some_and(|f| f.starts_with("tasks/") && f.ends_with("result.json"))
            })
            .then_some(())
    })
    .await;
    let out = client(
        &py,
        "resources",
        json!({ "url": mcp_url(&app), "token": agents[0].token,
                "read": [format!("agora://jobs/{job}"), file, format!("agora://jobs/{job}/files/nope.txt"), "https://elsewhere/x"] }),
    )
    .await;
    let uris: Vec<&str> = out["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["uri"].as_str())
        .collect();
    assert!(
        uris.contains(&format!("agora://jobs/{job}").as_str()),
        "{uris:?}"
    );
    assert!(
        uris.contains(&file.as_str()),
        "the job's files are listed: {uris:?}"
    );
    assert!(
        uris.iter()
            .any(|u| u.contains("/files/tasks/") && u.ends_with("spec.json")),
        "{uris:?}"
    );
    let reads = &out["reads"];
    let whole: Value = serde_json::from_str(
        reads[format!("agora://jobs/{job}")]["text"]
            .as_str()
            .expect("the job as JSON"),
    )
    .expect("JSON");
    assert_eq!(whole["job"]["title"], "planned");
    assert_eq!(whole["job"]["job_spec"], json!({ "goal": "test" }));
    assert_eq!(whole["votes"].as_array().map(Vec::len), Some(2));
    assert_eq!(reads[&file]["mime_type"], "application/json");
    assert!(reads[&file]["text"]
        .as_str()
        .is_some_and(|t| t.contains("planned")));
    assert!(reads[format!("agora://jobs/{job}/files/nope.txt")]["error"]
        .as_str()
        .is_some_and(|e| e.contains("no file nope.txt")));
    assert!(reads["https://elsewhere/x"]["error"].is_string());

    // Listing pages through every job (20 a page).
    for i in 0..25 {
        app.submit(&format!("filler {i}"), json!({ "n": i })).await;
    }
    let out = client(
        &py,
        "resources",
        json!({ "url": mcp_url(&app), "token": agents[0].token }),
    )
    .await;
    assert_eq!(out["pages"], 2);
    let jobs = out["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter(|r| r["uri"].as_str().is_some_and(|u| !u.contains("/files/")))
        .count();
    assert_eq!(jobs, 26);

    let prompts = client(
        &py,
        "prompts",
        json!({ "url": mcp_url(&app), "token": agents[0].token,
                "get": [["worker_loop", {}], ["review_job", {}], ["review_job", { "job_id": job.to_string() }], ["review_job", { "job_id": "x" }]] }),
    )
    .await;
    let text = |key: &str| prompts[key]["text"].as_str().unwrap_or("").to_string();
    assert!(text("worker_loop{}").contains("claim_task"));
    assert!(text("worker_loop{}").contains("submit_plan"));
    assert!(text("review_job{}").contains("reject_job"));
    let one = text(&format!("review_job{{\"job_id\": \"{job}\"}}"));
    assert!(
        one.contains(&job.to_string()) && one.contains("planned"),
        "{one}"
    );
    assert!(prompts["review_job{\"job_id\": \"x\"}"]["error"]
        .as_str()
        .is_some_and(|e| e.contains("not a job id")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claude_line_agora_register_mcp_prints_connects_as_printed() {
    let Some(py) = python() else { return };
    let app = spawn_app_with(|_| {}).await;
    let url = app.base.trim_end_matches("/api").to_string();
    let profile = tempfile::tempdir().expect("profile");
    let out = tokio::process::Command::new(agora_bin())
        .args(["register", "claude-on-laptop", "--mcp"])
        .env("AGORA_URL", &url)
        .env("AGORA_CONFIG_DIR", profile.path())
        .output()
        .await
        .expect("run agora");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("claude mcp add"))
        .unwrap_or_else(|| panic!("no claude line in:\n{stdout}"));
    let entry: Value = serde_json::from_str(&stdout[stdout.find('{').expect("the JSON entry")..])
        .expect("the JSON entry parses");
    assert_eq!(entry["mcpServers"]["agora"]["url"], format!("{url}/mcp"));
    let connected = client(&py, "connect", json!({ "line": line })).await;
    assert_eq!(connected["url"], format!("{url}/mcp"));
    let me = ok(&connected["whoami"]);
    assert_eq!(me["agent"]["name"], "claude-on-laptop");
    assert_eq!(
        me["gate"]["approvals_required"],
        app.config.approvals_required
    );
    assert_eq!(me["tasks_held"], json!([]));
    let health = app.get("/health").await.ok();
    assert_eq!(
        health["gate"], me["gate"],
        "/api/health reports the same gate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_claimed_by_an_mcp_session_that_vanishes_goes_back_after_its_heartbeat() {
    let Some(py) = python() else { return };
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.scheduler_interval_secs = 0.2;
    })
    .await;
    let approver = app.register("approver").await;
    let planner = app.register("planner").await;
    let job = app
        .planned_job(&[approver], &planner, vec![json!({ "goal": "g" })])
        .await;
    let gone = app.register("gone").await;
    // The session claims with a 1 s heartbeat and ends without a word.
    let claimed = call(
        &py,
        &app,
        &gone,
        "claim_task",
        json!({ "heartbeat_secs": 1 }),
    )
    .await;
    let task = ok(&claimed)["task"]["id"]
        .as_str()
        .expect("task")
        .to_string();
    assert_eq!(ok(&claimed)["task"]["heartbeat_secs"], 1);
    let back = crate::helpers::eventually(10, || async {
        let t = app.get(&format!("/tasks/{task}")).await.ok();
        (t["status"] == "pending").then_some(t)
    })
    .await;
    assert_eq!(back["attempts"], 1, "the silence counts an attempt");
    let next = app.register("next").await;
    let again = call(&py, &app, &next, "claim_task", json!({ "wait_secs": 5 })).await;
    assert_eq!(
        ok(&again)["task"]["id"],
        json!(task),
        "another agent gets it"
    );
    assert_eq!(app.job(job).await["status"], "executing");
}
