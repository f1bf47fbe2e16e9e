//! The caller's profile, shared with the skill's scripts: `~/.agora/config.json` (`{"url"}`)
//! and `~/.agora/agent.json` (`{"agent_id", "token", "name"}`). `AGORA_CONFIG_DIR` moves the
//! folder.

use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{AgentIdentity, Remote};

pub const DEFAULT_URL: &str = "http://localhost:3000";

#[derive(Serialize, Deserialize)]
pub struct SavedAgent {
    pub agent_id: Uuid,
    pub token: String,
    #[serde(default)]
    pub name: Option<String>,
}

fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os("AGORA_CONFIG_DIR") {
        return PathBuf::from(d);
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".agora")
}

fn read_json<T: for<'de> Deserialize<'de>>(name: &str) -> anyhow::Result<Option<T>> {
    let path = dir().join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{} is not valid", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The server's address: `--url`, `$AGORA_URL`, the config file, then the default.
pub fn url(remote: &Remote) -> anyhow::Result<String> {
    if let Some(u) = &remote.url {
        return Ok(u.clone());
    }
    if let Ok(u) = std::env::var("AGORA_URL") {
        if !u.is_empty() {
            return Ok(u);
        }
    }
    #[derive(Deserialize)]
    struct Config {
        url: Option<String>,
    }
    Ok(read_json::<Config>("config.json")?
        .and_then(|c| c.url)
        .unwrap_or_else(|| DEFAULT_URL.to_string()))
}

/// The agent to act as: flags or environment first, then the saved agent.
pub fn agent(identity: &AgentIdentity) -> anyhow::Result<(Uuid, String)> {
    if let (Some(id), Some(token)) = (identity.agent_id, &identity.token) {
        return Ok((id, token.clone()));
    }
    let saved = read_json::<SavedAgent>("agent.json")?.context(
        "no agent: run `agora register NAME` first, or set AGORA_AGENT_ID and AGORA_TOKEN",
    )?;
    Ok((saved.agent_id, saved.token))
}

pub fn save_agent(agent: &SavedAgent) -> anyhow::Result<PathBuf> {
    let d = dir();
    std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    let path = d.join("agent.json");
    // The token is a secret: only the owner may read the file.
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(&serde_json::to_vec_pretty(agent)?))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

pub fn forget_agent() -> anyhow::Result<()> {
    match std::fs::remove_file(dir().join("agent.json")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}
