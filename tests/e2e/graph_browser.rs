//! The job page's task graph in headless Chromium (Debian's chromium and chromedriver, driven
//! by fantoccini) against the in-process server and its embedded dashboard: a diamond plan
//! (a → b, a → c, b and c → d) appears live when the plan lands, one node per task with an
//! edge per dependency, nodes in their state's colour (a turns `completed` live when it
//! completes over the API), the critical path marked, and the task list says what each task
//! needs (b requires rust and waits for an agent that has it, c holds a key, d waits for two
//! tasks). axe-core audits the page. A screenshot goes to `target/dashboard-screenshots/`.
//!
//! The browser helpers are `browser.rs`'s.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use agora_shared::{Task, TaskListQuery};
use fantoccini::{Client as Browser, Locator};
use serde_json::json;

use crate::browser::{axe_violations, screenshot, start_browser, wait_for};
use crate::helpers::{id_of, require_tool, spawn_app_with, TestApp};

/// The job's tasks by index, as the API has them.
async fn tasks_of(app: &TestApp, job: uuid::Uuid) -> BTreeMap<u32, Task> {
    let query = TaskListQuery {
        limit: Some(100),
        ..Default::default()
    };
    let page = app.client().tasks(job, &query).await.expect("tasks");
    page.items.into_iter().map(|t| (t.index, t)).collect()
}

/// The text of the element `css` inside the task row of `task`.
async fn row_text(b: &Browser, task: uuid::Uuid, css: &str) -> String {
    wait_for(b, &format!("tr[data-task='{task}'] {css}"))
        .await
        .text()
        .await
        .expect("text")
}

/// Reads `attr` of the element `css` (which must be there).
async fn attr(b: &Browser, css: &str, attr: &str) -> String {
    wait_for(b, css)
        .await
        .attr(attr)
        .await
        .expect("attribute")
        .unwrap_or_else(|| panic!("{css} has no {attr}"))
}

/// Waits (15 s at most) until nothing matches `css`.
async fn gone(b: &Browser, css: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while count(b, css).await > 0 {
        assert!(Instant::now() < deadline, "{css} is still there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many elements match `css`.
async fn count(b: &Browser, css: &str) -> usize {
    b.find_all(Locator::Css(css)).await.expect("find_all").len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_page_draws_a_diamond_plan_and_follows_it_live() {
    // The dashboard sees only the API, whichever the store: it runs in the SQLite pass.
    if crate::helpers::test_backend() == "postgres" {
        return;
    }
    if !require_tool("chromium") || !require_tool("chromedriver") {
        return;
    }
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.frontend_dir = None;
    })
    .await;
    let root = app.base.trim_end_matches("/api").to_string();
    // Agents without capabilities: none of them can take a task that requires rust.
    let agents = app.register_many("graph-browser", 2).await;
    let (approver, planner) = (&agents[0], &agents[1]);

    // A job at the planning stage: approved, its plan task claimed.
    let job = app
        .submit("Diamond in the browser", json!({ "goal": "graph" }))
        .await;
    app.approve(job, approver).await.ok();
    let plan = app.claim(planner).await.expect("the plan task");
    assert_eq!(plan["task"]["type"], "plan");
    let plan_id = id_of(&plan["task"]);
    assert_eq!(app.job(job).await["status"], "planning");

    let (_driver, b, _profile) = start_browser().await;
    b.goto(&format!("{root}/jobs/{job}"))
        .await
        .expect("open the job page");
    wait_for(&b, "#job-status [data-status='planning']").await;
    wait_for(&b, "#conn[data-state='live']").await;
    wait_for(&b, "table.tasks tr[data-task]").await;
    assert_eq!(count(&b, "[data-graph]").await, 0, "no graph before a plan");

    // The plan lands: a diamond, b routed to rust agents, c holding a key.
    let diamond = json!({ "task_specs": [
        { "spec": {}, "name": "a" },
        { "spec": {}, "name": "b", "depends_on": ["a"], "requires": ["rust"] },
        { "spec": {}, "name": "c", "depends_on": ["a"], "key": "src/parser.rs" },
        { "spec": {}, "name": "d", "depends_on": ["b", "c"] },
    ]});
    app.task_call(planner, &plan_id, "complete", json!({ "result": diamond }))
        .await
        .ok();
    let tasks = tasks_of(&app, job).await;
    let index: HashMap<String, u32> = tasks
        .values()
        .filter_map(|t| t.name.clone().map(|n| (n, t.index)))
        .collect();
    let id: HashMap<&str, uuid::Uuid> = ["a", "b", "c", "d"]
        .into_iter()
        .map(|n| (n, tasks[&index[n]].id))
        .collect();
    let (a, bb, c, d) = (index["a"], index["b"], index["c"], index["d"]);

    // The graph appears without a reload: four nodes, an edge per dependency.
    wait_for(&b, "[data-graph]").await;
    wait_for(&b, &format!("[data-graph] g[data-node='{d}']")).await;
    assert_eq!(count(&b, "[data-graph] g[data-node]").await, 4);
    let edges = [(a, bb), (a, c), (bb, d), (c, d)];
    for (from, to) in edges {
        wait_for(&b, &format!("[data-graph] [data-edge='{from}-{to}']")).await;
    }
    assert_eq!(count(&b, "[data-graph] [data-edge]").await, 4);
    for n in [a, bb, c, d] {
        let css = format!("[data-graph] g[data-node='{n}']");
        assert_eq!(attr(&b, &css, "data-status").await, "pending", "task {n}");
    }
    let label = wait_for(&b, &format!("[data-graph] g[data-node='{a}'] text"))
        .await
        .text()
        .await
        .expect("label");
    assert_eq!(label, "a", "nodes are labelled with their names");

    // The critical path: the dashboard's is shared's (every task's run is 0 s yet, so it is
    // decided by length and index alone), a → (b or c) → d, marked on nodes and edges.
    let now = chrono::Utc::now();
    let work: Vec<Task> = tasks.values().filter(|t| t.index > 0).cloned().collect();
    let expected = agora_shared::critical_path(&work, now);
    assert_eq!(expected.len(), 3);
    assert_eq!((expected[0], expected[2]), (a, d));
    let shown = attr(&b, "[data-graph]", "data-critical-path").await;
    let path: Vec<u32> = shown
        .split(',')
        .map(|s| s.parse().expect("an index"))
        .collect();
    assert_eq!(path, expected, "the critical path drawn");
    for n in [a, bb, c, d] {
        let css = format!("[data-graph] g[data-node='{n}']");
        let on = path.contains(&n);
        assert_eq!(attr(&b, &css, "data-critical").await, on.to_string(), "{n}");
        let class = attr(&b, &css, "class").await;
        assert_eq!(class.split(' ').any(|c| c == "critical"), on, "{class}");
    }
    let on_path: HashSet<(u32, u32)> = path.windows(2).map(|w| (w[0], w[1])).collect();
    for (from, to) in edges {
        let css = format!("[data-graph] [data-edge='{from}-{to}']");
        let class = attr(&b, &css, "class").await;
        let on = on_path.contains(&(from, to));
        assert_eq!(
            class.split(' ').any(|c| c == "critical"),
            on,
            "{css}: {class}"
        );
    }
    assert_eq!(count(&b, "[data-graph] .graph-edge.critical").await, 2);

    // Read by people and screen readers: a title and a summary naming the path.
    let svg = "[data-graph] svg[role='img']";
    let names: Vec<&str> = path
        .iter()
        .map(|i| match *i {
            i if i == a => "a",
            i if i == bb => "b",
            i if i == c => "c",
            _ => "d",
        })
        .collect();
    let summary = format!("task graph: 4 tasks, critical path {}", names.join(" → "));
    assert_eq!(attr(&b, svg, "aria-label").await, summary);
    let title = b
        .execute(
            "return document.querySelector(\"[data-graph] svg > title\").textContent",
            vec![],
        )
        .await
        .expect("the graph's title");
    assert_eq!(title.as_str(), Some(summary.as_str()));

    // The task list says what each task needs.
    let requires = row_text(&b, id["b"], "[data-requires]").await;
    assert_eq!(requires, "requires: rust");
    let key = row_text(&b, id["c"], "[data-key]").await;
    assert_eq!(key, "key: src/parser.rs");
    let css = format!("tr[data-task='{}'] [data-key]", id["c"]);
    assert_eq!(attr(&b, &css, "data-key").await, "src/parser.rs");
    assert_eq!(
        row_text(&b, id["d"], "[data-unmet]").await,
        "waits for 2 tasks"
    );
    assert_eq!(
        row_text(&b, id["b"], "[data-unmet]").await,
        "waits for 1 task"
    );
    assert_eq!(
        count(&b, &format!("tr[data-task='{}'] [data-unmet]", id["a"])).await,
        0,
        "a waits for nothing"
    );
    let found = axe_violations(&b).await;
    assert!(found.is_empty(), "axe-core finds:\n{}", found.join("\n"));

    // a is the only task an agent can take now; it completes over the API, and the page
    // follows live: a completed, b and c pending, b waiting for an agent with rust.
    let claimed = app.claim(planner).await.expect("a is pending");
    assert_eq!(claimed["task"]["name"], "a");
    let a_id = id_of(&claimed["task"]);
    app.task_call(
        planner,
        &a_id,
        "complete",
        json!({ "result": { "ok": true } }),
    )
    .await
    .ok();
    wait_for(
        &b,
        &format!("[data-graph] g[data-node='{a}'][data-status='completed']"),
    )
    .await;
    for n in [bb, c, d] {
        let css = format!("[data-graph] g[data-node='{n}']");
        assert_eq!(attr(&b, &css, "data-status").await, "pending", "task {n}");
    }
    let waiting = row_text(&b, id["b"], "[data-waiting]").await;
    assert_eq!(waiting, "waiting for an agent with: rust");
    let css = format!("tr[data-task='{}'] [data-waiting]", id["b"]);
    assert_eq!(attr(&b, &css, "data-waiting").await, waiting);
    let api_b = tasks_of(&app, job).await[&bb].clone();
    assert_eq!(
        api_b.waiting_for.as_deref(),
        Some(waiting.as_str()),
        "the server's words"
    );
    assert_eq!(
        row_text(&b, id["d"], "[data-unmet]").await,
        "waits for 2 tasks",
        "d still waits for b and c"
    );
    // The task list is fetched apart from the graph: it may show a's completion a moment later.
    gone(&b, &format!("tr[data-task='{}'] [data-unmet]", id["b"])).await;
    screenshot(&b, "job-graph.png").await;
    let found = axe_violations(&b).await;
    assert!(found.is_empty(), "axe-core finds:\n{}", found.join("\n"));

    // On a phone the graph scrolls inside its frame; the page is no wider than the screen.
    b.set_window_size(390, 844).await.expect("phone size");
    b.refresh().await.expect("reload");
    wait_for(&b, "[data-graph] g[data-node]").await;
    let overflow = b
        .execute(
            "return document.documentElement.scrollWidth - window.innerWidth",
            vec![],
        )
        .await
        .expect("widths");
    assert!(overflow.as_i64().unwrap_or(1) <= 0, "wider by {overflow}");
    screenshot(&b, "job-graph-390.png").await;

    b.close().await.expect("close the browser");
}
