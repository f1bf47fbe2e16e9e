//! Fault hooks for the supervision tests, compiled into debug builds only: a release build
//! ignores the variables. `AGORA_FAULT_WRITER_DIES_AFTER_SECS=N` makes the SQLite writer thread
//! panic N seconds after it starts.

use tokio::time::Instant;

/// When the writer thread is to die, if a test asked for it.
pub fn writer_death_at() -> Option<Instant> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let secs: f64 = std::env::var("AGORA_FAULT_WRITER_DIES_AFTER_SECS")
        .ok()?
        .parse()
        .ok()?;
    (secs.is_finite() && secs >= 0.0)
        .then(|| Instant::now() + std::time::Duration::from_secs_f64(secs))
}

/// Resolves at `when`; never without one.
pub async fn at(when: Option<Instant>) {
    match when {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
