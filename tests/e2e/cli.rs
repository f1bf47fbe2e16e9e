//! The `agora` commands for people and scripts, run as processes against the real server:
//! register, submit, approve, reject (as an agent and as a person), jobs, job, status, events,
//! cancel, unregister; tables for people,
//! `--json` for scripts; the profile in AGORA_CONFIG_DIR; one-line errors.

use serde_json::Value;

use crate::helpers::{agora_bin, spawn_app_with};

struct Cli {
    url: String,
    profile: tempfile::TempDir,
}

impl Cli {
    /// Runs `agora ARGS`; (exit code, stdout, stderr).
    async fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = tokio::process::Command::new(agora_bin())
            .args(args)
            .env("AGORA_URL", &self.url)
            .env("AGORA_CONFIG_DIR", self.profile.path())
            .env_remove("AGORA_AGENT_ID")
            .env_remove("AGORA_TOKEN")
            .output()
            .await
            .expect("run agora");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn json(&self, args: &[&str]) -> Value {
        let (code, out, err) = self.run(args).await;
        assert_eq!(code, 0, "agora {args:?}: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("agora {args:?} --json: {e}: {out}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_commands_drive_a_job_and_explain_their_errors() {
    let app = spawn_app_with(|c| c.approvals_required = 2).await;
    let url = app.base.trim_end_matches("/api").to_string();
    let people = [
        Cli {
            url: url.clone(),
            profile: tempfile::tempdir().expect("profile"),
        },
        Cli {
            url: url.clone(),
            profile: tempfile::tempdir().expect("profile"),
        },
    ];
    let a = &people[0];

    let job = a
        .json(&[
            "submit",
            "Refactor auth",
            "--spec",
            r#"{"repo":"x"}"#,
            "--priority",
            "-2",
            "--json",
        ])
        .await;
    assert_eq!(job["status"], "committed");
    assert_eq!(job["priority"], -2);
    let id = job["id"].as_str().expect("id").to_string();

    for (i, p) in people.iter().enumerate() {
        let (code, out, err) = p.run(&["register", &format!("reviewer-{i}")]).await;
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("registered agent"), "{out}");
        let saved =
            std::fs::read_to_string(p.profile.path().join("agent.json")).expect("agent.json");
        assert!(saved.contains("token"));
        let (code, out, err) = p.run(&["approve", &id, "--comment", "fine"]).await;
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&format!("{}/2 approvals", i + 1)), "{out}");
    }
    let (code, _, err) = a.run(&["approve", &id]).await;
    assert_eq!(code, 1, "a second approval is refused");
    assert!(
        err.starts_with("agora: ") && err.lines().count() == 1,
        "one line: {err}"
    );

    let jobs = a.json(&["jobs", "--status", "accepted", "--json"]).await;
    assert_eq!(jobs["total"], 1);
    assert_eq!(jobs["items"][0]["id"], id.as_str());
    let (code, table, _) = a.run(&["jobs"]).await;
    assert_eq!(code, 0);
    assert!(
        table.contains("Refactor auth") && table.contains("accepted"),
        "{table}"
    );

    let detail = a.json(&["job", &id, "--json"]).await;
    assert_eq!(detail["approvals"].as_array().map(Vec::len), Some(2));
    assert_eq!(detail["tasks"]["items"][0]["type"], "plan");
    let (_, human, _) = a.run(&["job", &id]).await;
    assert!(
        human.contains("approved by reviewer-0, reviewer-1") && human.contains("plan"),
        "{human}"
    );

    let status = a.json(&["status", "--json"]).await;
    assert_eq!(status["health"]["database"], "ok");
    assert_eq!(status["stats"]["jobs"]["accepted"], 1);

    let (code, events, _) = a.run(&["events", &id, "--json"]).await;
    assert_eq!(code, 0);
    let kinds: Vec<String> = events
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("one event per line")["kind"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("job.committed"));
    assert!(kinds.contains(&"job.accepted".to_string()), "{kinds:?}");

    let cancelled = a
        .json(&["cancel", &id, "--reason", "wrong repo", "--json"])
        .await;
    assert_eq!(cancelled["status"], "failed");
    let (code, out, _) = a.run(&["unregister"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("unregistered"));
    assert!(
        !a.profile.path().join("agent.json").exists(),
        "the identity is forgotten"
    );

    // Votes with reasons, as an agent and as a person through the operator.
    let doomed = a.json(&["submit", "Drop the tables", "--json"]).await;
    let doomed = doomed["id"].as_str().expect("id").to_string();
    let b = &people[1];
    let (code, out, err) = b.run(&["reject", &doomed]).await;
    assert_eq!(code, 2, "a rejection needs --reason: {out}{err}");
    let person = b
        .json(&[
            "approve",
            &doomed,
            "--as",
            "ada",
            "--comment",
            "by hand",
            "--json",
        ])
        .await;
    assert_eq!(person["approval"]["voter"], "human:ada");
    let (code, out, err) = b
        .run(&[
            "reject",
            &doomed,
            "--as",
            "grace",
            "--reason",
            "drops production",
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("rejected job") && out.contains("grace (person)") && out.contains("failed"),
        "{out}"
    );
    let (_, human, _) = b.run(&["job", &doomed]).await;
    assert!(
        human.contains("approved by ada (person)")
            && human.contains("rejected by grace (person): drops production")
            && human.contains("rejected by human:grace: drops production"),
        "{human}"
    );
    let (code, _, err) = b.run(&["approve", &doomed, "--plan"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no plan waiting for review"), "{err}");
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(b.profile.path().join("agent.json")).expect("agent.json"),
    )
    .expect("agent.json is JSON");
    let me = saved["agent_id"].as_str().expect("agent_id").to_string();
    let (code, out, err) = b.run(&["roles", &me, "approver"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("has roles: approver"), "{out}");
    let (code, _, err) = b.run(&["roles", &me, "root"]).await;
    assert_eq!(code, 2, "an unknown role is a usage error: {err}");
    assert!(err.contains("unknown role 'root'"), "{err}");

    // Errors a person can act on, in one line, exit 1.
    let (code, _, err) = a.run(&["approve", &id]).await;
    assert_eq!(code, 1);
    assert!(err.contains("agora register"), "{err}");
    let (code, _, err) = a.run(&["events"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("--follow"), "{err}");
    let (code, _, err) = a.run(&["submit", "x", "--spec", "{nope"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("not valid JSON"), "{err}");
    // A submit retried with its idempotency key answers the job it made; another body with
    // the key is refused in one line.
    let keyed = [
        "submit",
        "Nightly",
        "--idempotency-key",
        "nightly-1",
        "--json",
    ];
    let (first, again) = (a.json(&keyed).await, a.json(&keyed).await);
    assert_eq!(first["id"], again["id"]);
    let (code, _, err) = a
        .run(&["submit", "Other", "--idempotency-key", "nightly-1"])
        .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("different body") && err.lines().count() == 1,
        "{err}"
    );
    let nowhere = Cli {
        url: "http://127.0.0.1:1".into(),
        profile: tempfile::tempdir().expect("p"),
    };
    let (code, _, err) = nowhere.run(&["jobs"]).await;
    assert_eq!(code, 1);
    assert!(err.starts_with("agora: request failed"), "{err}");
}
