//! Building and running the server: bind, open the store, start the scheduler, serve until a
//! stop signal, then drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::http::app;
use crate::hub::Hub;
use crate::scheduler;
use crate::state::AppState;
use crate::store::Store;
use crate::supervise::Supervisor;
use crate::tokens::TokenCache;

/// How long a server whose vital part died keeps answering 503 before it stops (at most
/// SHUTDOWN_GRACE_SECS).
const FAILED_LINGER: std::time::Duration = std::time::Duration::from_secs(3);

/// How long open connections get to close once the server stops (after the drain).
const HARD_STOP: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Application {
    listener: TcpListener,
    state: AppState,
    drain: watch::Sender<bool>,
    shutdown: watch::Sender<bool>,
}

impl Application {
    /// Opens the database, runs migrations and binds the port (0 picks a free one).
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        config.validate()?;
        config.check_protected_mode()?;
        crate::telemetry::init();
        if config.open_access() {
            tracing::warn!(
                host = %config.host,
                "ALLOW_OPEN: listening beyond loopback without REGISTRATION_TOKEN or ADMIN_TOKEN; anyone who reaches this server may register agents, approve and cancel jobs"
            );
        }
        let store = Store::connect_with(
            config.database_url.as_deref(),
            &config.db_path,
            config.queue_rules(),
        )
        .await?;
        let addr = format!("{}:{}", config.host, config.port);
        let listener = TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let (drain, draining) = watch::channel(false);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let supervisor = Supervisor::new(shutdown_rx.clone());
        let writer = match store.backend() {
            crate::store::Backend::Sqlite => "the SQLite writer",
            crate::store::Backend::Postgres => "the PostgreSQL writer",
        };
        supervisor.watch_end(writer, store.writer_ended());
        supervisor.watch_end("the PostgreSQL event pump", store.pump_ended());
        let hub = Hub::start(
            store.clone(),
            draining.clone(),
            shutdown_rx.clone(),
            &supervisor,
        );
        let git = config
            .git_enabled
            .then(|| crate::git::GitHistory::new(config.repos_dir.clone(), store.clone()));
        let tokens = Arc::new(TokenCache::default());
        let limits = Arc::new(crate::http::limits::Limits::from_config(&config));
        supervisor.watch(
            "the token evictor",
            tokio::spawn(crate::tokens::evict_unregistered(
                tokens.clone(),
                store.subscribe(),
                shutdown_rx.clone(),
            )),
        );
        let (sse, joiner) = crate::segments::Segments::start(
            store.subscribe(),
            hub.offering(),
            shutdown_rx.clone(),
        );
        supervisor.watch("the SSE segment joiner", joiner);
        let state = AppState {
            sse,
            git,
            hub,
            store,
            config: Arc::new(config),
            tokens,
            limits,
            draining,
            shutdown: shutdown_rx,
            supervisor,
        };
        Ok(Application {
            listener,
            state,
            drain,
            shutdown,
        })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    pub fn port(&self) -> u16 {
        self.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn store(&self) -> Store {
        self.state.store.clone()
    }

    /// Serves until `stop` resolves, then drains: no more offers or claims, readiness fails,
    /// and running WebSocket tasks get up to SHUTDOWN_GRACE_SECS to finish. Then it stops:
    /// sockets close (releasing what is still running), long-polls and streams end, open
    /// requests finish, the scheduler stops and the store closes.
    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application {
            listener,
            state,
            drain,
            shutdown,
        } = self;
        let (hub, drain_store, grace) = (
            state.hub.clone(),
            state.store.clone(),
            state.config.shutdown_grace(),
        );
        let sockets = state.hub.clone();
        let supervisor = state.supervisor.clone();
        let git_writer = state
            .git
            .as_ref()
            .map(|g| supervisor.watch("the git writer", g.start(state.shutdown.clone())));
        let scheduler = supervisor.watch(
            "the scheduler",
            tokio::spawn(scheduler::run(
                state.store.clone(),
                state.config.clone(),
                state.shutdown.clone(),
            )),
        );
        let store = state.store.clone();
        let limits = crate::serve::ConnLimits {
            header_timeout: state.config.header_timeout(),
            max_connections: state.config.max_connections,
        };
        let stopping = state.shutdown.clone();
        let router = app(state);
        tracing::info!(addr = %listener.local_addr()?, backend = store.backend().name(), "agora listening");
        let serve = crate::serve::serve(listener, router, limits, stopping);
        let failed = supervisor.clone();
        let trigger = async move {
            let failing = tokio::select! {
                _ = stop => false,
                cause = failed.failed() => {
                    tracing::error!(%cause, "stopping: the server cannot run without it");
                    true
                }
            };
            tracing::info!(grace_secs = grace.as_secs_f64(), "draining");
            let started = tokio::time::Instant::now();
            let _ = drain.send(true);
            wait_for_socket_tasks(&hub, &drain_store, grace).await;
            if failing {
                // Still answering (503) for a moment, so that load balancers see readiness fail
                // before the port closes.
                tokio::time::sleep_until(started + grace.min(FAILED_LINGER)).await;
            }
            tracing::info!("shutting down");
            let _ = shutdown.send(true);
            shutdown
        };
        // The server stops within SHUTDOWN_GRACE_SECS plus HARD_STOP, whatever its clients do: a
        // connection that still has not closed by then (a reader that stopped reading) is cut.
        let mut serve = tokio::spawn(serve);
        let served = tokio::select! {
            served = &mut serve => {
                // Serving ended on its own (an error): stop the rest too.
                served.unwrap_or_else(|e| Err(std::io::Error::other(e)))
            }
            shutdown = trigger => {
                let _ = shutdown.send(true);
                match tokio::time::timeout(HARD_STOP, &mut serve).await {
                    Ok(served) => served.unwrap_or_else(|e| Err(std::io::Error::other(e))),
                    Err(_) => {
                        tracing::warn!(secs = HARD_STOP.as_secs(), "connections still open after the stop deadline; closing them");
                        serve.abort();
                        Ok(())
                    }
                }
            }
        };
        // Sockets release what they still hold when told to stop; the store must outlive that.
        if !sockets.sockets_finished(HARD_STOP).await {
            tracing::warn!(
                secs = HARD_STOP.as_secs(),
                "some WebSocket agents had not let go of their tasks by the stop deadline"
            );
        }
        let _ = scheduler.await;
        if let Some(g) = git_writer {
            let _ = g.await;
        }
        store.close().await;
        served.context("serving HTTP")?;
        match supervisor.failure() {
            Some(cause) => Err(anyhow::anyhow!("stopped because {cause}")),
            None => Ok(()),
        }
    }
}

/// Waits until no agent connected here holds a claimed or running task, or `grace` is over.
async fn wait_for_socket_tasks(hub: &Hub, store: &Store, grace: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let connected = hub.connected_agents();
        let busy = match store.agents_holding_tasks().await {
            Ok(holding) => connected.iter().filter(|a| holding.contains(a)).count(),
            Err(e) => {
                tracing::warn!(error = %e, "drain: could not read the running tasks");
                0
            }
        };
        if busy == 0 {
            tracing::info!("drain: no WebSocket agent holds a task");
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::info!(agents = busy, "drain: grace over; their tasks are released");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Raises the soft open-file limit to the hard one: every WebSocket agent and SSE reader is a
/// file descriptor, and the usual soft limit (1,024) is far below what one server holds.
pub fn raise_open_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and fill a plain struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    tracing::debug!(open_file_limit = lim.rlim_cur, "file descriptors");
    lim.rlim_cur
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled: call it before the server starts listening, so that a signal that
/// arrives while it starts (it may already answer health checks) stops it cleanly instead of
/// killing it.
#[cfg(unix)]
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, Signal, SignalKind};
    let interrupt = signal(SignalKind::interrupt()).ok();
    let terminate = signal(SignalKind::terminate()).ok();
    async fn received(s: Option<Signal>) {
        match s {
            Some(mut s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    async move {
        tokio::select! {
            _ = received(interrupt) => {}
            _ = received(terminate) => {}
        }
    }
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
