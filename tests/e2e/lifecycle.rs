//! The seed's whole flow over real HTTP.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn six_agents_take_a_job_through_all_eight_states() {
    let app = spawn_app().await;
    let agents = app.register_many("agent", 6).await;
    let job = app
        .submit("build the thing", json!({ "goal": "ship", "repo": "x" }))
        .await;
    assert_eq!(app.job(job).await["status"], "committed");

    for (i, a) in agents.iter().take(5).enumerate() {
        let approved = app.approve(job, a).await.ok();
        assert_eq!(approved["job"]["approvals"], i as u64 + 1);
        let expected = if i < 4 { "approving" } else { "accepted" };
        assert_eq!(approved["job"]["status"], expected);
    }
    // The sixth approval comes after acceptance.
    app.approve(job, &agents[5]).await.err(409, "INVALID_STATE");
    let approvals = app.get(&format!("/jobs/{job}/approvals")).await.ok();
    assert_eq!(approvals.as_array().unwrap().len(), 5);

    // The plan task.
    let planner = &agents[5];
    let claimed = app.claim(planner).await.expect("plan task offered");
    assert_eq!(claimed["task"]["index"], 0);
    assert_eq!(claimed["task"]["type"], "plan");
    assert_eq!(claimed["task"]["task_spec"]["goal"], "ship");
    assert_eq!(claimed["job"]["status"], "planning");
    let plan_id = id_of(&claimed["task"]);
    app.task_call(planner, &plan_id, "start", json!({}))
        .await
        .ok();
    let specs = vec![
        json!({"step": "a"}),
        json!({"step": "b"}),
        json!({"step": "c"}),
    ];
    app.task_call(
        planner,
        &plan_id,
        "complete",
        json!({ "result": { "task_specs": specs } }),
    )
    .await
    .ok();
    let j = app.job(job).await;
    assert_eq!(j["status"], "ready");
    assert_eq!(j["tasks_total"], 4);

    // Three workers each take one task.
    let mut held = Vec::new();
    for a in agents.iter().take(3) {
        let c = app.claim(a).await.expect("work task");
        assert_eq!(c["task"]["type"], "work");
        held.push((
            a.clone(),
            id_of(&c["task"]),
            c["task"]["index"].as_u64().unwrap(),
        ));
    }
    let indexes: Vec<u64> = held.iter().map(|h| h.2).collect();
    assert_eq!(indexes, vec![1, 2, 3], "claimed in index order");
    assert!(
        app.claim(&agents[3]).await.is_none(),
        "nothing left to claim"
    );
    assert_eq!(app.job(job).await["status"], "executing");

    for (a, task, idx) in &held {
        let t = app.task_call(a, task, "start", json!({})).await.ok();
        assert_eq!(t["status"], "running");
        let t = app
            .task_call(
                a,
                task,
                "progress",
                json!({ "progress": 50, "message": "halfway" }),
            )
            .await
            .ok();
        assert_eq!(
            (t["progress"].as_u64(), t["progress_message"].as_str()),
            (Some(50), Some("halfway"))
        );
        app.task_call(a, task, "complete", json!({ "result": { "index": idx } }))
            .await
            .ok();
    }

    let j = app.job(job).await;
    assert_eq!(j["status"], "completed");
    assert_eq!(
        (j["tasks_total"].as_u64(), j["tasks_completed"].as_u64()),
        (Some(4), Some(4))
    );
    assert!(j["finished_at"].is_string());

    let tasks = app.get(&format!("/jobs/{job}/tasks")).await.ok();
    let items = tasks["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert!(items.iter().all(|t| t["status"] == "completed"));
    assert_eq!(items[2]["result"]["index"], 2);

    let events = app.events(job).await;
    let states: Vec<&str> = events
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .filter_map(|k| k.strip_prefix("job."))
        .collect();
    assert_eq!(
        states,
        [
            "committed",
            "approving",
            "accepted",
            "planning",
            "ready",
            "executing",
            "completed"
        ],
    );
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "event ids strictly increase"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_failed_job_reaches_the_eighth_state() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.task_max_retries = 0;
    })
    .await;
    let agents = app.register_many("a", 2).await;
    let job = app
        .planned_job(&agents, &agents[1], vec![json!(1), json!(2)])
        .await;
    let a = app.claim(&agents[0]).await.unwrap();
    let b = app.claim(&agents[1]).await.unwrap();
    app.task_call(
        &agents[0],
        &id_of(&a["task"]),
        "complete",
        json!({ "result": "ok" }),
    )
    .await
    .ok();
    assert_eq!(app.job(job).await["status"], "executing");
    let t = app
        .task_call(
            &agents[1],
            &id_of(&b["task"]),
            "fail",
            json!({ "error": "boom" }),
        )
        .await
        .ok();
    assert_eq!(
        (t["status"].as_str(), t["attempts"].as_u64()),
        (Some("failed"), Some(1))
    );
    let j = app.job(job).await;
    assert_eq!(j["status"], "failed");
    assert_eq!(j["error"], "1 of 3 tasks failed");
    let kinds = app.event_kinds(job).await;
    assert_eq!(kinds.last().map(String::as_str), Some("job.failed"));
}

#[tokio::test]
async fn jobs_list_paginates_and_filters() {
    let app = spawn_app_with(|c| c.approvals_required = 1).await;
    let a = app.register("a").await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(app.submit(&format!("job {i}"), json!(i)).await);
    }
    app.approve(ids[0], &a).await.ok();
    let page = app.get("/jobs?limit=3&offset=0").await.ok();
    assert_eq!(page["total"], 7);
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    assert_eq!(page["items"][0]["title"], "job 6", "newest first");
    let page = app.get("/jobs?limit=3&offset=6").await.ok();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let accepted = app.get("/jobs?status=accepted").await.ok();
    assert_eq!(accepted["total"], 1);
    assert_eq!(accepted["items"][0]["id"], ids[0].to_string());
    app.get("/jobs?status=done")
        .await
        .err(400, "VALIDATION_ERROR");
    app.get("/jobs?limit=0").await.err(400, "VALIDATION_ERROR");
    // Search: title contains, ignoring case; LIKE wildcards are literal.
    app.submit("Refactor AUTH_module 100%", json!({})).await;
    let found = app.get("/jobs?q=auth_mod").await.ok();
    assert_eq!(found["total"], 1);
    assert_eq!(found["items"][0]["title"], "Refactor AUTH_module 100%");
    assert_eq!(app.get("/jobs?q=100%25").await.ok()["total"], 1);
    assert_eq!(app.get("/jobs?q=job%20_").await.ok()["total"], 0);
    assert_eq!(
        app.get("/jobs?q=JOB&status=accepted").await.ok()["total"],
        1
    );
    app.get(&format!("/jobs?q={}", "x".repeat(201)))
        .await
        .err(400, "VALIDATION_ERROR");
    let stats = app.get("/stats").await.ok();
    assert_eq!(stats["jobs"]["committed"], 7);
    assert_eq!(stats["agents_online"], 1);
    // The charts' series: an hour by default, the running minute last with today's gauges.
    let series = app.get("/stats/series").await.ok();
    let points = series["points"].as_array().expect("points");
    assert_eq!((series["minutes"].as_u64(), points.len()), (Some(60), 60));
    let now = &points[59];
    // The accepted job's plan task waits; one agent is online.
    assert_eq!(
        (&now["pending"], &now["agents_online"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(
        app.get("/stats/series?minutes=1440").await.ok()["points"]
            .as_array()
            .map(Vec::len),
        Some(1440)
    );
    for bad in ["minutes=0", "minutes=1441", "minutes=an-hour", "hours=1"] {
        app.get(&format!("/stats/series?{bad}"))
            .await
            .err(400, "VALIDATION_ERROR");
    }
}

#[tokio::test]
async fn tasks_across_jobs_filter_by_state_and_agent_and_events_list_newest_first() {
    let app = spawn_app_with(|c| c.approvals_required = 1).await;
    let agents = app.register_many("a", 2).await;
    let job = app
        .planned_job(&agents, &agents[0], vec![json!(1), json!(2), json!(3)])
        .await;
    let first = app.claim(&agents[1]).await.expect("a task");
    let held = app
        .get(&format!("/tasks?agent_id={}", agents[1].id))
        .await
        .ok();
    assert_eq!(held["total"], 1);
    assert_eq!(held["items"][0]["id"], first["task"]["id"]);
    // Lists name the agent, so people read names, not ids.
    assert_eq!(held["items"][0]["agent_name"], agents[1].name.as_str());
    let claimed = app.get("/tasks?status=claimed").await.ok();
    assert_eq!(claimed["total"], 1);
    let all = app.get("/tasks?limit=2").await.ok();
    assert_eq!(all["total"], 4, "the plan task and three work tasks");
    assert_eq!(all["items"].as_array().map(Vec::len), Some(2));
    app.get("/tasks?agent_id=nope")
        .await
        .err(400, "VALIDATION_ERROR");

    let oldest = app.get(&format!("/jobs/{job}/events?limit=2")).await.ok();
    let newest = app
        .get(&format!("/jobs/{job}/events?limit=2&order=desc"))
        .await
        .ok();
    let id = |v: &serde_json::Value, i: usize| v[i]["id"].as_i64().expect("id");
    assert!(id(&oldest, 0) < id(&oldest, 1));
    assert!(id(&newest, 0) > id(&newest, 1));
    assert_eq!(newest[0]["kind"], "task.claimed");
    app.get(&format!("/jobs/{job}/events?order=sideways"))
        .await
        .err(400, "VALIDATION_ERROR");
}
