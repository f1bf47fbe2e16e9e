//! The approval gate as issue 17 made it: who may vote (`APPROVERS=role`), no self-approval,
//! rejection with a reason, expiry, people voting through an operator, and plan review with
//! replans. Against the real server, on both stores.

use std::time::Duration;

use agora_shared::ws::ServerMsg;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

const ADMIN: &str = "admin-secret";

/// Casts a vote over HTTP: `path` is `approve`, `reject`, `plan/approve` or `plan/reject`.
async fn vote(app: &TestApp, job: Uuid, path: &str, agent: &TestAgent, body: Value) -> Resp {
    let mut body = body;
    body["agent_id"] = json!(agent.id);
    app.post(&format!("/jobs/{job}/{path}"), Some(&agent.token), body)
        .await
}

/// A vote by a person, through the operator's token.
async fn person_vote(
    app: &TestApp,
    job: Uuid,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> Resp {
    app.post(&format!("/jobs/{job}/{path}"), token, body).await
}

async fn set_roles(app: &TestApp, agent: &TestAgent, token: Option<&str>, roles: Value) -> Resp {
    app.send(
        reqwest::Method::PUT,
        &format!("/agents/{}/roles", agent.id),
        token,
        Some(json!({ "roles": roles })),
    )
    .await
}

async fn submit(app: &TestApp, body: Value) -> Uuid {
    let job = app.post("/jobs", None, body).await.ok();
    id_of(&job).parse().expect("job id")
}

async fn approvals(app: &TestApp, job: Uuid) -> Vec<Value> {
    let list = app.get(&format!("/jobs/{job}/approvals")).await.ok();
    list.as_array().expect("a list").clone()
}

/// Claims the pending plan task with `planner` and completes it with `specs`; the plan task.
async fn plan_with(app: &TestApp, planner: &TestAgent, specs: Value) -> Value {
    let claimed = app.claim(planner).await.expect("a plan task is pending");
    assert_eq!(claimed["task"]["type"], "plan", "{claimed}");
    let id = id_of(&claimed["task"]);
    app.task_call(
        planner,
        &id,
        "complete",
        json!({ "result": { "task_specs": specs } }),
    )
    .await
    .ok();
    claimed["task"].clone()
}

#[tokio::test]
async fn with_approvers_role_only_agents_an_operator_named_may_vote() {
    let app = spawn_app_with(|c| {
        c.approvers = agora_shared::ApproverPolicy::Role;
        c.admin_token = Some(ADMIN.into());
        c.approval_cooldown_secs = 0;
    })
    .await;
    let fresh = app.register_many("fresh", 5).await;
    let job = app.submit("gated", json!({})).await;
    for a in &fresh {
        let r = vote(&app, job, "approve", a, json!({})).await;
        r.err(403, "NOT_AN_APPROVER");
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("approver"),
            "{}",
            r.body
        );
        vote(&app, job, "reject", a, json!({ "reason": "no" }))
            .await
            .err(403, "NOT_AN_APPROVER");
    }
    // Nothing was written: no vote, no count, no event, no cooldown.
    let j = app.job(job).await;
    assert_eq!(
        (j["approvals"].as_u64(), j["status"].as_str()),
        (Some(0), Some("committed"))
    );
    assert!(approvals(&app, job).await.is_empty());
    assert_eq!(app.event_kinds(job).await, vec!["job.committed"]);
    assert_eq!(
        app.get(&format!("/agents/{}", fresh[0].id)).await.ok()["last_approved_at"],
        Value::Null
    );

    // Only the operator grants roles, and only roles that exist.
    set_roles(&app, &fresh[0], None, json!(["approver"]))
        .await
        .err(401, "UNAUTHORIZED");
    set_roles(&app, &fresh[0], Some(&fresh[0].token), json!(["approver"]))
        .await
        .err(401, "UNAUTHORIZED");
    let bad = set_roles(&app, &fresh[0], Some(ADMIN), json!(["root"])).await;
    assert_eq!(bad.status.as_u16(), 400, "{}", bad.body);
    set_roles(&app, &fresh[0], Some(ADMIN), json!([]))
        .await
        .ok();
    for a in &fresh {
        let agent = set_roles(&app, a, Some(ADMIN), json!(["approver"]))
            .await
            .ok();
        assert_eq!(agent["roles"], json!(["approver"]));
    }
    let shown = app.get(&format!("/agents/{}", fresh[3].id)).await.ok();
    assert_eq!(shown["roles"], json!(["approver"]));

    for a in &fresh {
        vote(&app, job, "approve", a, json!({})).await.ok();
    }
    let j = app.job(job).await;
    assert_eq!(
        (j["approvals"].as_u64(), j["status"].as_str()),
        (Some(5), Some("accepted"))
    );
    // Taking the role away takes the vote away.
    let other = app.submit("second", json!({})).await;
    set_roles(&app, &fresh[0], Some(ADMIN), json!([]))
        .await
        .ok();
    vote(&app, other, "approve", &fresh[0], json!({}))
        .await
        .err(403, "NOT_AN_APPROVER");
    vote(&app, other, "approve", &fresh[1], json!({}))
        .await
        .ok();
}

#[tokio::test]
async fn the_submitter_and_the_planner_may_not_vote_on_their_own_work() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.approval_cooldown_secs = 0;
    })
    .await;
    let submitter = app.register("submitter").await;
    let planner = app.register("planner").await;
    let reviewer = app.register("reviewer").await;
    let job: Uuid = id_of(
        &app.post(
            "/jobs",
            Some(&submitter.token),
            json!({ "title": "mine", "job_spec": {}, "submitted_by": submitter.id,
                    "plan_approvals_required": 1 }),
        )
        .await
        .ok(),
    )
    .parse()
    .unwrap();
    for (path, body) in [
        ("approve", json!({})),
        ("reject", json!({ "reason": "mine" })),
    ] {
        let r = vote(&app, job, path, &submitter, body).await;
        r.err(403, "SELF_APPROVAL");
        assert!(r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("submitter"));
    }
    assert!(approvals(&app, job).await.is_empty());
    assert_eq!(app.job(job).await["status"], "committed");

    vote(&app, job, "approve", &reviewer, json!({})).await.ok();
    plan_with(&app, &planner, json!(["a", "b"])).await;
    let j = app.job(job).await;
    assert_eq!(j["status"], "ready");
    assert_eq!(j["plan_approvals"], 0);
    for (path, body) in [
        ("plan/approve", json!({ "comment": "mine" })),
        ("plan/reject", json!({ "reason": "mine" })),
    ] {
        let r = vote(&app, job, path, &planner, body).await;
        r.err(403, "SELF_APPROVAL");
        assert!(r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("plan's author"));
    }
    assert_eq!(app.job(job).await["plan_approvals"], 0);
    assert_eq!(approvals(&app, job).await.len(), 1);
    // The submitter may review the plan: it is not the plan's author.
    vote(&app, job, "plan/approve", &submitter, json!({}))
        .await
        .ok();
    assert_eq!(app.job(job).await["tasks_total"], 3);
}

#[tokio::test]
async fn one_rejection_fails_a_job_with_its_reason_everywhere() {
    let app = spawn_app().await; // five approvals, the hour-long cooldown
    let agents = app.register_many("voter", 3).await;
    let job = app.submit("contested", json!({})).await;
    vote(
        &app,
        job,
        "approve",
        &agents[0],
        json!({ "comment": "fine" }),
    )
    .await
    .ok();
    assert_eq!(app.job(job).await["status"], "approving");

    // A rejection needs a reason.
    vote(&app, job, "reject", &agents[1], json!({}))
        .await
        .err(400, "VALIDATION_ERROR");
    vote(&app, job, "reject", &agents[1], json!({ "reason": "  " }))
        .await
        .err(400, "VALIDATION_ERROR");
    let voted = vote(
        &app,
        job,
        "reject",
        &agents[1],
        json!({ "reason": "touches production" }),
    )
    .await
    .ok();
    assert_eq!(voted["approval"]["verdict"], "reject");
    assert_eq!(voted["job"]["status"], "failed");
    let j = app.job(job).await;
    assert_eq!(j["status"], "failed");
    assert_eq!(j["error"], "rejected by voter-1: touches production");

    let events = app.events(job).await;
    let rejected = events
        .iter()
        .find(|e| e["kind"] == "approval.rejected")
        .expect("an approval.rejected event");
    assert_eq!(rejected["data"]["reason"], "touches production");
    assert_eq!(rejected["data"]["agent_name"], "voter-1");
    let failed = events
        .iter()
        .find(|e| e["kind"] == "job.failed")
        .expect("job.failed");
    assert_eq!(
        failed["data"]["error"],
        "rejected by voter-1: touches production"
    );

    let list = approvals(&app, job).await;
    assert_eq!(list.len(), 2);
    assert_eq!(
        (list[0]["verdict"].as_str(), list[0]["comment"].as_str()),
        (Some("approve"), Some("fine"))
    );
    assert_eq!(
        (list[1]["verdict"].as_str(), list[1]["reason"].as_str()),
        (Some("reject"), Some("touches production"))
    );
    assert_eq!(list[1]["agent_name"], "voter-1");

    // After the veto nobody may vote; the rejection took the rejecter's cooldown.
    vote(&app, job, "approve", &agents[2], json!({}))
        .await
        .err(409, "INVALID_STATE");
    let can = app
        .get(&format!("/agents/{}/can-approve", agents[1].id))
        .await
        .ok();
    assert_eq!(can["can_approve"], false);
    let next = app.submit("next", json!({})).await;
    vote(
        &app,
        next,
        "reject",
        &agents[1],
        json!({ "reason": "again" }),
    )
    .await
    .err(429, "RATE_LIMITED");
    assert_eq!(app.job(next).await["status"], "committed");
}

#[tokio::test]
async fn a_job_not_approved_in_time_expires_within_one_sweep() {
    let sweep = 0.5;
    let app = spawn_app_with(|c| {
        c.scheduler_interval_secs = sweep;
        c.approval_cooldown_secs = 0;
    })
    .await;
    let a = app.register("early").await;
    let job = submit(
        &app,
        json!({ "title": "short-lived", "job_spec": {}, "approval_ttl_secs": 2 }),
    )
    .await;
    let forever = app.submit("no limit", json!({})).await;
    vote(&app, job, "approve", &a, json!({})).await.ok();
    let j = app.job(job).await;
    let created: chrono::DateTime<chrono::Utc> = j["created_at"].as_str().unwrap().parse().unwrap();
    let expires: chrono::DateTime<chrono::Utc> =
        j["approval_expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!((expires - created).num_milliseconds(), 2000);
    assert_eq!(app.job(forever).await["approval_expires_at"], Value::Null);

    let failed = eventually(10, || async {
        let j = app.job(job).await;
        (j["status"] == "failed").then_some(j)
    })
    .await;
    assert_eq!(failed["error"], "approval expired");
    let finished: chrono::DateTime<chrono::Utc> =
        failed["finished_at"].as_str().unwrap().parse().unwrap();
    // The first sweep after the deadline fails it: at most one interval later, plus the time
    // that sweep's earlier steps take on a loaded machine (a margin, not a speed target).
    let late = (finished - expires).num_milliseconds();
    assert!(
        (0..=(sweep * 1000.0) as i64 + 1500).contains(&late),
        "failed {late} ms after its deadline; one sweep is {sweep} s"
    );
    let events = app.events(job).await;
    let last = events.last().unwrap();
    assert_eq!(
        (last["kind"].as_str(), last["data"]["error"].as_str()),
        (Some("job.failed"), Some("approval expired"))
    );
    vote(&app, job, "approve", &app.register("late").await, json!({}))
        .await
        .err(409, "INVALID_STATE");
    // A job without a deadline still waits.
    assert_eq!(app.job(forever).await["status"], "committed");
    // The server's APPROVAL_TTL_SECS applies when a job asks for none; bad values are refused.
    let r = app
        .post(
            "/jobs",
            None,
            json!({ "title": "t", "job_spec": {}, "approval_ttl_secs": -1 }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.body);
}

#[tokio::test]
async fn the_servers_approval_ttl_applies_to_jobs_that_ask_none() {
    let app = spawn_app_with(|c| c.approval_ttl_secs = 60).await;
    let job = app.submit("default ttl", json!({})).await;
    let j = app.job(job).await;
    let created: chrono::DateTime<chrono::Utc> = j["created_at"].as_str().unwrap().parse().unwrap();
    let expires: chrono::DateTime<chrono::Utc> =
        j["approval_expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!((expires - created).num_seconds(), 60);
    let none = submit(
        &app,
        json!({ "title": "none", "job_spec": {}, "approval_ttl_secs": 0 }),
    )
    .await;
    assert_eq!(app.job(none).await["approval_expires_at"], Value::Null);
}

#[tokio::test]
async fn people_vote_through_the_operator_once_each_and_without_cooldown() {
    let app = spawn_app_with(|c| {
        c.admin_token = Some(ADMIN.into());
        c.approvals_required = 3;
    })
    .await;
    let agent = app.register("bot").await;
    let job = app.submit("reviewed by people", json!({})).await;
    let ada = json!({ "person": "ada", "comment": "looks right" });
    person_vote(&app, job, "approve", None, ada.clone())
        .await
        .err(401, "UNAUTHORIZED");
    person_vote(&app, job, "approve", Some(&agent.token), ada.clone())
        .await
        .err(401, "UNAUTHORIZED");
    // An operator votes as a person, never as an agent.
    person_vote(
        &app,
        job,
        "approve",
        Some(ADMIN),
        json!({ "agent_id": agent.id }),
    )
    .await
    .err(403, "FORBIDDEN");
    person_vote(
        &app,
        job,
        "approve",
        Some(ADMIN),
        json!({ "agent_id": agent.id, "person": "x" }),
    )
    .await
    .err(400, "VALIDATION_ERROR");
    let voted = person_vote(&app, job, "approve", Some(ADMIN), ada.clone())
        .await
        .ok();
    assert_eq!(voted["approval"]["person"], true);
    assert_eq!(voted["approval"]["voter"], "human:ada");
    assert_eq!(voted["approval"]["agent_id"], Value::Null);
    // The same person twice is one voter.
    person_vote(&app, job, "approve", Some(ADMIN), ada.clone())
        .await
        .err(409, "CONFLICT");
    // No cooldown for people: Ada approves another job at once.
    let other = app.submit("other", json!({})).await;
    person_vote(&app, other, "approve", Some(ADMIN), ada.clone())
        .await
        .ok();
    person_vote(
        &app,
        job,
        "approve",
        Some(ADMIN),
        json!({ "person": "grace" }),
    )
    .await
    .ok();
    vote(&app, job, "approve", &agent, json!({})).await.ok();
    let j = app.job(job).await;
    assert_eq!(
        (j["approvals"].as_u64(), j["status"].as_str()),
        (Some(3), Some("accepted"))
    );
    let list = approvals(&app, job).await;
    let people: Vec<_> = list
        .iter()
        .filter(|a| a["person"] == true)
        .map(|a| a["agent_name"].clone())
        .collect();
    assert_eq!(people, vec![json!("ada"), json!("grace")]);
    // A person's rejection names the person.
    let third = app.submit("third", json!({})).await;
    person_vote(
        &app,
        third,
        "reject",
        Some(ADMIN),
        json!({ "person": "ada", "reason": "not now" }),
    )
    .await
    .ok();
    assert_eq!(
        app.job(third).await["error"],
        "rejected by human:ada: not now"
    );
}

/// A job with plan review: one approval, plan_approvals_required 2.
async fn reviewed_job(app: &TestApp, approver: &TestAgent) -> Uuid {
    let job = submit(
        app,
        json!({ "title": "reviewed plan", "job_spec": { "goal": "port the parser" },
                "plan_approvals_required": 2 }),
    )
    .await;
    vote(app, job, "approve", approver, json!({})).await.ok();
    job
}

#[tokio::test]
async fn no_agent_gets_work_until_two_reviewers_approve_the_plan() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.approval_cooldown_secs = 0;
    })
    .await;
    let planner = app.register("planner").await;
    let reviewers = app.register_many("reviewer", 2).await;
    let rest = app.register("rest-worker").await;
    let ws_agent = app.register("ws-worker").await;
    let mut ws = app.connect(&ws_agent).await;
    let job = reviewed_job(&app, &reviewers[0]).await;
    let plan = plan_with(&app, &planner, json!([{ "n": 1 }, { "n": 2 }])).await;
    assert_eq!(plan["index"], 0);

    let j = app.job(job).await;
    assert_eq!(j["status"], "ready");
    assert_eq!(
        (
            j["plan_approvals"].as_u64(),
            j["plan_approvals_required"].as_u64()
        ),
        (Some(0), Some(2))
    );
    assert_eq!(j["tasks_total"], 1, "no work task exists before the review");
    let kinds = app.event_kinds(job).await;
    assert!(kinds.contains(&"plan.proposed".to_string()), "{kinds:?}");

    // Neither a REST claim nor a ready WebSocket gets work.
    ws.ready(1).await;
    assert!(app.claim(&rest).await.is_none());
    let no_offer = |m: &ServerMsg| matches!(m, ServerMsg::TaskOffer { .. });
    while let Some(m) = ws.recv_within(Duration::from_millis(300)).await {
        assert!(
            !no_offer(&m),
            "an offer before the plan was approved: {m:?}"
        );
    }
    let one = vote(
        &app,
        job,
        "plan/approve",
        &reviewers[0],
        json!({ "comment": "ok" }),
    )
    .await
    .ok();
    assert_eq!(one["job"]["plan_approvals"], 1);
    assert_eq!(one["approval"]["stage"], "plan");
    assert_eq!(one["approval"]["plan_round"], 1);
    assert!(app.claim(&rest).await.is_none());
    while let Some(m) = ws.recv_within(Duration::from_millis(300)).await {
        assert!(
            !no_offer(&m),
            "an offer after one of two plan approvals: {m:?}"
        );
    }
    // The second reviewer's approval creates the work tasks; both agents get one.
    vote(&app, job, "plan/approve", &reviewers[1], json!({}))
        .await
        .ok();
    let (offer_id, task_id, index) = ws.offer().await;
    assert!(index >= 1);
    ws.send(json!({ "type": "accept", "offer_id": offer_id }))
        .await;
    assert!(ws.ack("accept").await.0);
    let claimed = app
        .claim(&rest)
        .await
        .expect("a work task for the REST agent");
    assert_eq!(claimed["task"]["type"], "work");
    let rest_task = id_of(&claimed["task"]);
    app.task_call(&rest, &rest_task, "complete", json!({ "result": {} }))
        .await
        .ok();
    ws.send(json!({ "type": "complete", "task_id": task_id, "result": {} }))
        .await;
    assert!(ws.ack("complete").await.0);
    let done = eventually(10, || async {
        let j = app.job(job).await;
        (j["status"] == "completed").then_some(j)
    })
    .await;
    assert_eq!(done["tasks_total"], 3);
    // A plan approved already takes no more votes.
    vote(&app, job, "plan/approve", &rest, json!({}))
        .await
        .err(409, "INVALID_STATE");
}

#[tokio::test]
async fn a_rejected_plan_returns_with_its_reasons_and_the_next_plan_runs() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.approval_cooldown_secs = 0;
    })
    .await;
    let planner = app.register("planner").await;
    let second_planner = app.register("planner-2").await;
    let reviewers = app.register_many("reviewer", 2).await;
    let worker = app.register("worker").await;
    let job = reviewed_job(&app, &reviewers[0]).await;
    plan_with(&app, &planner, json!(["one big step"])).await;
    vote(&app, job, "plan/approve", &reviewers[1], json!({}))
        .await
        .ok();
    let rejected = vote(
        &app,
        job,
        "plan/reject",
        &reviewers[0],
        json!({ "reason": "split it and add tests" }),
    )
    .await
    .ok();
    assert_eq!(rejected["job"]["status"], "accepted");
    assert_eq!(rejected["job"]["plans_rejected"], 1);
    assert_eq!(rejected["job"]["plan_approvals"], 0);
    let events = app.events(job).await;
    let ev = events
        .iter()
        .find(|e| e["kind"] == "plan.rejected")
        .expect("plan.rejected");
    assert_eq!(
        (ev["data"]["replan"].as_bool(), ev["data"]["round"].as_u64()),
        (Some(true), Some(1))
    );

    // The new plan task carries the job's spec, the rejected plan and the reason.
    let claimed = app.claim(&second_planner).await.expect("a new plan task");
    let task = &claimed["task"];
    assert_eq!(
        (task["type"].as_str(), task["index"].as_u64()),
        (Some("plan"), Some(1))
    );
    let spec = &task["task_spec"];
    assert_eq!(spec["job_spec"]["goal"], "port the parser");
    assert_eq!(spec["round"], 2);
    let first = &spec["rejected_plans"][0];
    assert_eq!(first["plan"]["task_specs"], json!(["one big step"]));
    assert_eq!(first["planner"], "planner");
    assert_eq!(first["reasons"][0]["reason"], "split it and add tests");
    assert_eq!(first["reasons"][0]["by"], "reviewer-0");
    assert_eq!(app.job(job).await["status"], "planning");
    let id = id_of(task);
    app.task_call(
        &second_planner,
        &id,
        "complete",
        json!({ "result": { "task_specs": ["parse", "test"] } }),
    )
    .await
    .ok();
    assert!(app.job(job).await["plan_approvals"] == 0);
    assert!(app.claim(&worker).await.is_none());
    // Reviewers who voted on the first plan vote again on the second.
    vote(&app, job, "plan/approve", &reviewers[0], json!({}))
        .await
        .ok();
    vote(&app, job, "plan/approve", &reviewers[1], json!({}))
        .await
        .ok();
    for expected in [2, 3] {
        let c = app.claim(&worker).await.expect("work");
        assert_eq!(
            c["task"]["index"], expected,
            "work follows the last plan task"
        );
        app.task_call(
            &worker,
            &id_of(&c["task"]),
            "complete",
            json!({ "result": {} }),
        )
        .await
        .ok();
    }
    let j = app.job(job).await;
    assert_eq!(j["status"], "completed");
    assert_eq!(j["tasks_total"], 4);
    let rounds: Vec<_> = approvals(&app, job)
        .await
        .iter()
        .map(|a| (a["plan_round"].clone(), a["verdict"].clone()))
        .collect();
    assert_eq!(
        rounds,
        vec![
            (Value::Null, json!("approve")),
            (json!(1), json!("approve")),
            (json!(1), json!("reject")),
            (json!(2), json!("approve")),
            (json!(2), json!("approve")),
        ]
    );
}

#[tokio::test]
async fn three_rejected_plans_fail_the_job() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.approval_cooldown_secs = 0;
    })
    .await;
    let planner = app.register("planner").await;
    let reviewer = app.register("reviewer").await;
    let job = reviewed_job(&app, &reviewer).await;
    for round in 1..=3u64 {
        plan_with(&app, &planner, json!([format!("attempt {round}")])).await;
        let r = vote(
            &app,
            job,
            "plan/reject",
            &reviewer,
            json!({ "reason": format!("no {round}") }),
        )
        .await
        .ok();
        assert_eq!(r["job"]["plans_rejected"], round);
        let status = if round < 3 { "accepted" } else { "failed" };
        assert_eq!(r["job"]["status"], status, "after rejected plan {round}");
    }
    let j = app.job(job).await;
    assert_eq!(
        j["error"],
        "plan rejected 3 times; the last by reviewer: no 3"
    );
    assert!(app.claim(&planner).await.is_none(), "no fourth plan task");
    let events = app.events(job).await;
    let last_rejection = events
        .iter()
        .rev()
        .find(|e| e["kind"] == "plan.rejected")
        .unwrap();
    assert_eq!(last_rejection["data"]["replan"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_reviewers_create_the_work_tasks_exactly_once() {
    let app = spawn_app_with(|c| {
        c.approvals_required = 1;
        c.approval_cooldown_secs = 0;
    })
    .await;
    let planner = app.register("planner").await;
    let reviewers = app.register_many("racer", 12).await;
    let job = submit(
        &app,
        json!({ "title": "raced", "job_spec": {}, "plan_approvals_required": 3 }),
    )
    .await;
    vote(&app, job, "approve", &reviewers[0], json!({}))
        .await
        .ok();
    plan_with(&app, &planner, json!(["a", "b", "c", "d"])).await;
    let answers = futures::future::join_all(
        reviewers
            .iter()
            .map(|r| vote(&app, job, "plan/approve", r, json!({}))),
    )
    .await;
    let ok = answers.iter().filter(|r| r.status.is_success()).count();
    assert_eq!(ok, 3, "exactly the quorum is counted");
    for r in answers.iter().filter(|r| !r.status.is_success()) {
        r.err(409, "INVALID_STATE");
    }
    let j = app.job(job).await;
    assert_eq!(
        (j["plan_approvals"].as_u64(), j["tasks_total"].as_u64()),
        (Some(3), Some(5))
    );
    let events = app.events(job).await;
    let created = events
        .iter()
        .filter(|e| e["kind"] == "tasks.created" && e["data"]["type"] == "work")
        .count();
    assert_eq!(created, 1, "one tasks.created for the work tasks");
    // A liar and a flood of words are refused without a trace.
    let other = app.submit("other", json!({})).await;
    app.post(
        &format!("/jobs/{other}/reject"),
        Some(&reviewers[1].token),
        json!({ "agent_id": reviewers[2].id, "reason": "not mine to give" }),
    )
    .await
    .err(403, "FORBIDDEN");
    let long = "x".repeat(2001);
    let r = vote(
        &app,
        other,
        "reject",
        &reviewers[1],
        json!({ "reason": long }),
    )
    .await;
    r.err(400, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["field"], "reason");
    let r = person_vote(&app, other, "approve", None, json!({ "person": "a\u{7}b" })).await;
    r.err(400, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["field"], "person");
    assert!(approvals(&app, other).await.is_empty());
    assert_eq!(app.job(other).await["status"], "committed");
}
