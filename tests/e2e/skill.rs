//! The curl agent skill (`skill/`): its scripts, run with bash against the real server, take a
//! job from submission to completion; its API reference matches `/api/openapi.json`; shellcheck
//! finds nothing in its scripts.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::helpers::{require_tool, spawn_app, test_backend};

fn skill_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../skill")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_skill_scripts_run_a_job_to_completion() {
    if !require_tool("curl") {
        return;
    }
    let app = spawn_app().await;
    let url = app.base.trim_end_matches("/api").to_string();
    let script = skill_dir().join("tests/skill_test.sh");
    // On SQLite every JSON mode whose tools exist (jq, python3 and the sed fallback); the
    // PostgreSQL pass checks the store with one mode, the scripts being the same.
    let modes: &[&str] = if test_backend() == "postgres" {
        &["jq"]
    } else {
        &[]
    };
    let out = tokio::process::Command::new("bash")
        .arg(&script)
        .arg(&url)
        .args(modes)
        .output()
        .await
        .expect("run skill_test.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "skill_test.sh failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("completed"), "{stdout}");
}

#[tokio::test]
async fn the_api_reference_lists_every_endpoint_of_the_openapi_document() {
    let app = spawn_app().await;
    let doc = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .expect("openapi");
    let doc: serde_json::Value = doc.json().await.expect("openapi JSON");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            documented.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let reference = std::fs::read_to_string(skill_dir().join("references/API_REFERENCE.md"))
        .expect("API_REFERENCE.md");
    let listed: BTreeSet<String> = reference
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .filter(|h| h.contains(" /api/"))
        .map(|h| h.trim().to_string())
        .collect();
    let missing: Vec<_> = documented.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&documented).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "API_REFERENCE.md is out of step with /api/openapi.json\nmissing: {missing:?}\nnot in the API: {stale:?}"
    );
}

#[test]
fn shellcheck_finds_nothing_in_the_skill_scripts() {
    if !require_tool("shellcheck") {
        return;
    }
    let dir = skill_dir();
    let out = std::process::Command::new("shellcheck")
        .arg(dir.join("scripts/agora.sh"))
        .arg(dir.join("scripts/agora-config.sh"))
        .arg(dir.join("tests/skill_test.sh"))
        .output()
        .expect("run shellcheck");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
