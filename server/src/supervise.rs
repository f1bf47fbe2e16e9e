//! Supervision of the parts the server cannot run without: the writer (SQLite's thread or
//! PostgreSQL's task), PostgreSQL's event pump, the SSE segment joiner, the dispatcher, the
//! revocation router, the token evictor, the scheduler and the git writer. Each runs until the server stops; one that ends before (a
//! panic, or a loop that returned) fails the server: readiness and health answer 503 naming
//! it, the server drains and stops, and the process exits non-zero with the cause in the log.
//! Crash recovery is proven elsewhere (the crash tests), so a restart is the cure; limping on
//! without a dispatcher or a writer is not.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Clone)]
pub struct Supervisor {
    failed: Arc<watch::Sender<Option<String>>>,
    /// True once the server stops on purpose: parts that end then are not failures.
    stopping: watch::Receiver<bool>,
}

impl Supervisor {
    pub fn new(stopping: watch::Receiver<bool>) -> Supervisor {
        Supervisor {
            failed: Arc::new(watch::channel(None).0),
            stopping,
        }
    }

    /// Why the server failed, if a part died.
    pub fn failure(&self) -> Option<String> {
        self.failed.borrow().clone()
    }

    /// Resolves with the cause when a part dies.
    pub async fn failed(&self) -> String {
        match first_some(self.failed.subscribe()).await {
            Some(cause) => cause,
            None => std::future::pending().await,
        }
    }

    /// Watches a spawned part. The returned handle finishes when the part does.
    pub fn watch(&self, part: &'static str, handle: JoinHandle<()>) -> JoinHandle<()> {
        self.watch_end(part, async move {
            match handle.await {
                Ok(()) => how_it_ended(Ok(())),
                Err(e) if e.is_panic() => how_it_ended(Err(e.into_panic())),
                Err(_) => "was cancelled".to_string(),
            }
        })
    }

    /// Watches a part through a future that resolves, with what happened, when it has ended.
    pub fn watch_end(
        &self,
        part: &'static str,
        ended: impl Future<Output = String> + Send + 'static,
    ) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let how = ended.await;
            this.fail(part, &how);
        })
    }

    fn fail(&self, part: &str, how: &str) {
        if *self.stopping.borrow() {
            return;
        }
        let cause = format!("{part} {how}");
        tracing::error!(%cause, "a vital part of the server died; stopping (exit code 1)");
        self.failed.send_if_modified(|f| {
            let first = f.is_none();
            if first {
                *f = Some(cause);
            }
            first
        });
    }
}

/// Spawns a part that reports how it ended (stopped, or panicked and why) on the returned
/// watch, for [`Supervisor::watch_end`].
pub fn spawn_reporting(
    run: impl Future<Output = ()> + Send + 'static,
) -> (JoinHandle<()>, watch::Receiver<Option<String>>) {
    use futures::FutureExt;
    let (ended_tx, ended) = watch::channel(None);
    let task = tokio::spawn(async move {
        let run = std::panic::AssertUnwindSafe(run).catch_unwind().await;
        let _ = ended_tx.send(Some(how_it_ended(run)));
    });
    (task, ended)
}

/// How a part ended, from running it under `catch_unwind`: "stopped" or "panicked: …".
pub fn how_it_ended(run: std::thread::Result<()>) -> String {
    match run {
        Ok(()) => "stopped".to_string(),
        Err(payload) => format!("panicked: {}", panic_message(&*payload)),
    }
}

/// What a part's end signal first carries; `None` if its sender went away without a word.
pub async fn first_some(mut rx: watch::Receiver<Option<String>>) -> Option<String> {
    let seen = rx.wait_for(Option::is_some).await.map(|v| v.clone());
    seen.ok().flatten()
}

/// The text a panic was raised with.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_part_that_dies_fails_the_server_once_and_a_stop_is_not_a_failure() {
        let (stop, stopping) = watch::channel(false);
        let s = Supervisor::new(stopping);
        assert_eq!(s.failure(), None);
        let died = s.watch("the dispatcher", tokio::spawn(async { panic!("boom") }));
        let _ = died.await;
        assert_eq!(
            s.failure().as_deref(),
            Some("the dispatcher panicked: boom")
        );
        let _ = s.watch("the scheduler", tokio::spawn(async {})).await;
        assert_eq!(
            s.failed().await,
            "the dispatcher panicked: boom",
            "the first cause stays"
        );

        let (_, stopping) = watch::channel(false);
        let calm = Supervisor::new(stopping);
        let _ = stop.send(true);
        let s2 = Supervisor::new(stop.subscribe());
        let _ = s2.watch("the git writer", tokio::spawn(async {})).await;
        assert_eq!(s2.failure(), None, "ended after the stop: not a failure");
        let _ = calm.watch("the scheduler", tokio::spawn(async {})).await;
        assert_eq!(calm.failure().as_deref(), Some("the scheduler stopped"));
    }
}
