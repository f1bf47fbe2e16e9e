//! The push hub: WebSocket agents get task offers the moment work is pending, and anyone may
//! follow events.
//!
//! - [`dispatcher`]: one task that owns the queue of free agent slots. When a commit makes work
//!   pending (or an agent frees a slot) it claims for free slots with the same claim statement
//!   as REST, in batches, and hands each claimed task to its connection as an offer.
//! - [`socket`]: one task per WebSocket: the protocol, offers and their expiry, pings, and
//!   letting go of tasks when the socket dies.

pub mod dispatcher;
pub mod socket;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use agora_shared::ClaimedTask;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::store::Store;

/// What the dispatcher and the event router send a connection.
#[derive(Debug)]
pub enum ConnCmd {
    /// A task claimed for this agent: offer it.
    Offer(Box<ClaimedTask>),
    /// A delivery of this agent ended without it asking (failed, released, cancelled). Only
    /// the delivery named by `lease_id` is revoked: a late event of an earlier delivery of the
    /// same task never touches a newer one. `None` (events written before leases) matches any.
    Revoke(Box<Revoke>),
    /// The agent was unregistered (here or on another replica): close the socket.
    Close { reason: &'static str },
    /// The router missed events: check the agent's tasks against the database.
    Recheck,
}

/// A delivery taken back ([`ConnCmd::Revoke`]; boxed, so that every socket's inbox, whose
/// slots are as large as the largest command, stays small).
#[derive(Debug)]
pub struct Revoke {
    pub task_id: Uuid,
    pub lease_id: Option<Uuid>,
    pub reason: String,
}

/// What connections tell the dispatcher.
#[derive(Debug)]
pub enum DispatchMsg {
    /// The connection's free slots changed by `delta` (ready, a task finished, an offer ended).
    Capacity {
        conn_id: u64,
        agent_id: Uuid,
        /// Whether the agent asked for offers that start at once (its latest `ready`).
        auto_start: bool,
        delta: i64,
        inbox: mpsc::Sender<ConnCmd>,
    },
    /// The connection is gone.
    Gone { conn_id: u64 },
}

/// A live connection, so that a second socket of the same agent can replace it.
struct LiveConn {
    conn_id: u64,
    /// Where the router delivers revocations for this agent.
    inbox: mpsc::Sender<ConnCmd>,
    /// Tells the old connection to close; it answers on the inner sender when it has let go.
    replace: oneshot::Sender<oneshot::Sender<()>>,
}

/// Shared handle to the hub; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    /// Control messages to the dispatcher.
    dispatch: mpsc::UnboundedSender<DispatchMsg>,
    /// True while the dispatcher has more offers to hand out.
    offering: watch::Receiver<bool>,
    /// Agent id → its live socket.
    live: Mutex<HashMap<Uuid, LiveConn>>,
    next_conn_id: AtomicU64,
    /// Every socket's task, until it has let go of its tasks: shutdown waits for them before it
    /// closes the store (an upgraded connection is no longer the HTTP server's to wait for).
    sockets: tokio_util::task::TaskTracker,
}

impl Hub {
    /// Starts the dispatcher and the revocation router, both watched by `supervisor`.
    pub fn start(
        store: Store,
        draining: watch::Receiver<bool>,
        shutdown: watch::Receiver<bool>,
        supervisor: &crate::supervise::Supervisor,
    ) -> Hub {
        let (tx, rx) = mpsc::unbounded_channel();
        let (offering_tx, offering) = watch::channel(false);
        supervisor.watch(
            "the dispatcher",
            tokio::spawn(dispatcher::run(
                store.clone(),
                rx,
                offering_tx,
                draining,
                shutdown.clone(),
            )),
        );
        let hub = Hub {
            inner: Arc::new(HubInner {
                dispatch: tx,
                offering,
                live: Mutex::new(HashMap::new()),
                next_conn_id: AtomicU64::new(1),
                sockets: tokio_util::task::TaskTracker::new(),
            }),
        };
        supervisor.watch(
            "the revocation router",
            tokio::spawn(route_revocations(hub.clone(), store.subscribe(), shutdown)),
        );
        hub
    }

    /// True while the dispatcher has more offers to hand out.
    pub fn offering(&self) -> watch::Receiver<bool> {
        self.inner.offering.clone()
    }

    /// Held by a socket's task from its upgrade until it has let go of its tasks.
    pub(crate) fn socket_token(&self) -> tokio_util::task::task_tracker::TaskTrackerToken {
        self.inner.sockets.token()
    }

    /// At shutdown: waits up to `within` for every socket to finish (releasing what it held);
    /// false when some did not.
    pub async fn sockets_finished(&self, within: std::time::Duration) -> bool {
        self.inner.sockets.close();
        tokio::time::timeout(within, self.inner.sockets.wait())
            .await
            .is_ok()
    }

    /// The agents with a live socket here.
    pub fn connected_agents(&self) -> Vec<Uuid> {
        self.inner
            .live
            .lock()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    pub(crate) fn dispatch(&self, msg: DispatchMsg) {
        // The dispatcher only stops at shutdown, when nobody needs it.
        let _ = self.inner.dispatch.send(msg);
    }

    /// Registers a new socket of `agent`. If one was live, it is told to close and this waits
    /// until it has let go of its offers.
    pub(crate) async fn attach(
        &self,
        agent: Uuid,
        inbox: mpsc::Sender<ConnCmd>,
    ) -> (u64, oneshot::Receiver<oneshot::Sender<()>>) {
        let conn_id = self.inner.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let old = self.inner.live.lock().ok().and_then(|mut m| {
            m.insert(
                agent,
                LiveConn {
                    conn_id,
                    inbox,
                    replace: tx,
                },
            )
        });
        if let Some(old) = old {
            let (done_tx, done_rx) = oneshot::channel();
            if old.replace.send(done_tx).is_ok() {
                let _ = done_rx.await;
            }
        }
        (conn_id, rx)
    }

    /// Forgets the socket, unless a newer one of the same agent took its place.
    pub(crate) fn detach(&self, agent: Uuid, conn_id: u64) {
        if let Ok(mut m) = self.inner.live.lock() {
            if m.get(&agent).map(|c| c.conn_id) == Some(conn_id) {
                m.remove(&agent);
            }
        }
        self.dispatch(DispatchMsg::Gone { conn_id });
    }

    /// Tells the agent's live socket to close at once, as a replacement would, without
    /// waiting for it (its inbox was full).
    fn evict(&self, agent: Uuid) {
        let old = self
            .inner
            .live
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&agent));
        if let Some(old) = old {
            let (done, _) = oneshot::channel();
            let _ = old.replace.send(done);
        }
    }

    fn inbox_of(&self, agent: Uuid) -> Option<mpsc::Sender<ConnCmd>> {
        self.inner
            .live
            .lock()
            .ok()?
            .get(&agent)
            .map(|c| c.inbox.clone())
    }

    fn all_inboxes(&self) -> Vec<mpsc::Sender<ConnCmd>> {
        self.inner
            .live
            .lock()
            .map(|m| m.values().map(|c| c.inbox.clone()).collect())
            .unwrap_or_default()
    }
}

/// Reads the event feed once for all sockets and tells each agent about its own deliveries
/// being taken away (cancel, timeout, recovery), and closes the sockets of an agent that was
/// unregistered (on any replica: every replica reads the same feed). Sockets that asked for
/// events subscribe on their own.
async fn route_revocations(
    hub: Hub,
    mut events: tokio::sync::broadcast::Receiver<crate::frames::Live>,
    mut shutdown: watch::Receiver<bool>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let received = tokio::select! {
            r = events.recv() => r,
            _ = shutdown.changed() => return,
        };
        match received {
            Ok(e) => {
                let Some(agent) = e.agent_id else { continue };
                let Some(cmd) = command_for(&e) else { continue };
                if let Some(inbox) = hub.inbox_of(agent) {
                    let closing = matches!(cmd, ConnCmd::Close { .. });
                    if inbox.try_send(cmd).is_err() {
                        // A full inbox: the socket re-checks its tasks against the database,
                        // or is closed when it was unregistered.
                        if closing {
                            hub.evict(agent);
                        } else {
                            let _ = inbox.try_send(ConnCmd::Recheck);
                        }
                    }
                }
            }
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    skipped = n,
                    "revocation router fell behind; sockets re-check their tasks"
                );
                for inbox in hub.all_inboxes() {
                    let _ = inbox.try_send(ConnCmd::Recheck);
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// What an event means for its agent's socket, if anything.
fn command_for(e: &agora_shared::Event) -> Option<ConnCmd> {
    if let Some((lease_id, reason)) = e.payload.taken_back() {
        return Some(ConnCmd::Revoke(Box::new(Revoke {
            task_id: e.task_id?,
            lease_id,
            reason: reason.to_string(),
        })));
    }
    match e.payload {
        agora_shared::EventData::AgentUnregistered(_) => Some(ConnCmd::Close {
            reason: "the agent was unregistered",
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every socket's inbox allocates slots as large as its largest command, 32 at a time,
    /// whether or not anything is ever sent: 1.8 KB an idle agent when a revocation was 64 bytes.
    #[test]
    fn a_command_is_three_words_at_most() {
        assert!(
            std::mem::size_of::<ConnCmd>() <= 24,
            "{}",
            std::mem::size_of::<ConnCmd>()
        );
    }
}
