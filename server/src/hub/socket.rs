//! One WebSocket agent: the protocol of `agora_shared::ws`, its offers and their expiry, pings,
//! and letting go of its tasks when the socket dies.
//!
//! The loop is generic over the socket's two halves so it can run over any transport. Writes
//! go through a bounded queue to a writer task: a client that stops reading fills the queue
//! and is disconnected instead of stalling the loop.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agora_shared::ws::{ClientFrame, ClientMsg, ServerMsg, PROTOCOL_VERSION};
use agora_shared::{ClaimedTask, FinishedWithNext, Task, TaskStatus};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use chrono::Utc;
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use uuid::Uuid;

use super::{ConnCmd, DispatchMsg, Hub};
use crate::config::Config;
use crate::error::ApiError;
use crate::json::parse_json;
use crate::store::{Held, NextTask, Store};

mod pipeline;

/// Frames waiting to be written before the client counts as not reading (the byte budget,
/// `WS_OUTBOX_BYTES`, usually comes first).
const OUTBOX: usize = 1024;

/// The frames waiting for the writer task, bounded in count and in bytes: a client that stops
/// reading costs at most `WS_OUTBOX_BYTES` before it is disconnected (its offers then go back
/// to pending), whatever the size of the specs it is offered.
struct Outbox {
    tx: mpsc::Sender<Message>,
    /// Bytes queued and not yet taken by the socket.
    queued: Arc<AtomicUsize>,
    budget: usize,
}

fn frame_len(m: &Message) -> usize {
    match m {
        Message::Text(t) => t.len(),
        Message::Binary(b) => b.len(),
        Message::Ping(b) | Message::Pong(b) => b.len(),
        Message::Close(_) => 0,
    }
}

impl Outbox {
    fn push(&self, m: Message) -> Result<(), End> {
        let n = frame_len(&m);
        let queued = self.queued.load(Ordering::Relaxed);
        // One frame larger than the budget still goes when nothing else waits.
        if queued > 0 && queued.saturating_add(n) > self.budget {
            return Err(End::TooSlow);
        }
        self.queued.fetch_add(n, Ordering::Relaxed);
        self.tx.try_send(m).map_err(|e| {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(_) => End::TooSlow,
                mpsc::error::TrySendError::Closed(_) => End::Closed,
            }
        })
    }
}

/// Most slots an agent may announce.
const MAX_SLOTS: u32 = 1000;

/// What a socket needs from the server.
pub struct SocketCtx {
    pub store: Store,
    pub hub: Hub,
    pub config: Arc<Config>,
    pub agent_id: Uuid,
    pub draining: watch::Receiver<bool>,
    pub shutdown: watch::Receiver<bool>,
}

/// Why the loop ended.
enum End {
    Closed,
    Unresponsive,
    TooSlow,
    Replaced(oneshot::Sender<()>),
    Unregistered,
    Shutdown,
}

struct Offer {
    held: Held,
    expires_at: Instant,
}

struct Conn {
    ctx: SocketCtx,
    conn_id: u64,
    out: Outbox,
    inbox: mpsc::Sender<ConnCmd>,
    slots: u32,
    /// The agent asked for offers that start at once (and its next task with each report).
    auto_start: bool,
    /// Started tasks taken with reports whose acks could not be sent (the socket was
    /// closing): never shown, they go back with no attempt counted when the socket ends.
    unshown: Vec<Held>,
    /// Offer id → the delivery offered, until accepted, declined or expired.
    offers: HashMap<Uuid, Offer>,
    /// Task id → the lease of the accepted delivery this socket holds.
    held: HashMap<Uuid, Uuid>,
    /// Offer id → the delivery of a started offer (`auto_start`), which may still be declined
    /// while it is held.
    started: HashMap<Uuid, Held>,
    /// The event feed, only once the agent subscribed to events.
    events: Option<broadcast::Receiver<crate::frames::Live>>,
    subscribed_all: bool,
    subscribed_jobs: HashSet<Uuid>,
    last_inbound: Instant,
    last_touch: Instant,
    /// Reports and accepts running while the socket reads on (`pipeline.rs`).
    flights: pipeline::Flights,
}

pub async fn run<S, R, E>(ctx: SocketCtx, sink: S, mut stream: R)
where
    S: Sink<Message> + Send + Unpin + 'static,
    R: Stream<Item = Result<Message, E>> + Unpin,
{
    let agent_id = ctx.agent_id;
    let (inbox, mut inbox_rx) = mpsc::channel(256);
    let (conn_id, mut replaced) = ctx.hub.attach(agent_id, inbox.clone()).await;
    let held = match ctx.store.tasks_running_for_agent(agent_id).await {
        Ok(held) => held.into_iter().map(|h| (h.task_id, h.lease_id)).collect(),
        Err(e) => {
            tracing::warn!(error = %e, %agent_id, "could not load the agent's running tasks");
            HashMap::new()
        }
    };
    let (tx, out_rx) = mpsc::channel(OUTBOX);
    let queued = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn(write_frames(sink, out_rx, queued.clone()));
    let out = Outbox {
        tx,
        queued,
        budget: ctx.config.ws_outbox_bytes,
    };
    let mut shutdown = ctx.shutdown.clone();
    let mut draining = ctx.draining.clone();
    let ping_every = ctx.config.ws_ping();
    let now = Instant::now();
    let mut conn = Conn {
        ctx,
        conn_id,
        out,
        inbox,
        slots: 0,
        auto_start: false,
        unshown: Vec::new(),
        offers: HashMap::new(),
        held,
        started: HashMap::new(),
        events: None,
        subscribed_all: false,
        subscribed_jobs: HashSet::new(),
        last_inbound: now,
        last_touch: now,
        flights: pipeline::Flights::default(),
    };
    let hello = ServerMsg::Hello {
        agent_id,
        protocol: PROTOCOL_VERSION,
        ping_interval_secs: ping_every.as_secs_f64(),
        offer_ttl_secs: conn.ctx.config.offer_ttl().as_secs_f64(),
    };
    let mut ping = tokio::time::interval_at(now + ping_every, ping_every);
    // Each handler's future is boxed while it runs: the loop's own future, held for as long as
    // the agent is connected, stays small (an idle socket's task took 4.2 KB).
    let end = match conn.send(&hello) {
        Err(end) => end,
        Ok(()) => loop {
            let next_expiry = conn.offers.values().map(|o| o.expires_at).min();
            let step = tokio::select! {
                frame = stream.next() => match frame {
                    Some(Ok(msg)) => Box::pin(conn.on_frame(msg)).await,
                    _ => Err(End::Closed),
                },
                landed = conn.flights.next(), if !conn.flights.is_empty() => conn.land(landed),
                Some(cmd) = inbox_rx.recv() => match conn.land_ready() {
                    Ok(()) => Box::pin(conn.on_cmd(cmd)).await,
                    Err(end) => Err(end),
                },
                ev = recv_event(&mut conn.events), if conn.events.is_some() => Box::pin(conn.on_event(ev)).await,
                _ = ping.tick() => conn.on_ping(ping_every),
                _ = tokio::time::sleep_until(next_expiry.unwrap_or_else(Instant::now)), if next_expiry.is_some() => {
                    Box::pin(conn.expire_offers()).await
                }
                done = &mut replaced => match done {
                    Ok(done) => Err(End::Replaced(done)),
                    // The hub dropped our entry without asking: keep going.
                    Err(_) => Ok(()),
                },
                _ = draining.changed(), if !*draining.borrow() => Box::pin(conn.drain()).await,
                _ = shutdown.changed() => Err(End::Shutdown),
            };
            if let Err(end) = step {
                break end;
            }
        },
    };
    // What the frames in flight did is the socket's to let go of too (a next task taken with a
    // report is held, or left unshown).
    while !conn.flights.is_empty() {
        let landed = conn.flights.next().await;
        let _ = conn.land(landed);
    }
    // Offers that reached the inbox but were never shown go back, no attempt counted (even a
    // started one: the agent never saw it).
    inbox_rx.close();
    let mut unshown = std::mem::take(&mut conn.unshown);
    while let Ok(cmd) = inbox_rx.try_recv() {
        if let ConnCmd::Offer(c) = cmd {
            unshown.push(Held::of(&c));
        }
    }
    if !unshown.is_empty() {
        let reason = "its agent disconnected before the offer".to_string();
        if let Err(e) = conn
            .ctx
            .store
            .tasks_abandon(agent_id, unshown, reason, false)
            .await
        {
            tracing::warn!(error = %e, %agent_id, "could not release offers never shown");
        }
    }
    conn.finish(end, writer).await;
}

async fn recv_event(
    events: &mut Option<broadcast::Receiver<crate::frames::Live>>,
) -> Result<crate::frames::Live, broadcast::error::RecvError> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The room a frame's text starts with: a task offer's, so that it is not grown on the way.
const FRAME_ROOM: usize = 1024;

/// Frames written to the socket together at most (see [`write_frames`]).
const FRAMES_PER_WRITE: usize = 64;

/// Writes the connection's frames as they are queued: each with whatever else is queued by
/// then (up to [`FRAMES_PER_WRITE`]), flushed once: a report's answer and the agent's next
/// offer go in one write, not one each.
async fn write_frames<S: Sink<Message> + Unpin>(
    mut sink: S,
    mut rx: mpsc::Receiver<Message>,
    queued: Arc<AtomicUsize>,
) {
    'frames: while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut fed = 0;
        while let Some(m) = next.take() {
            let closing = matches!(m, Message::Close(_));
            let n = frame_len(&m);
            let sent = sink.feed(m).await.is_ok();
            queued.fetch_sub(n, Ordering::Relaxed);
            if !sent {
                break 'frames;
            }
            if closing {
                let _ = sink.flush().await;
                break 'frames;
            }
            fed += 1;
            if fed < FRAMES_PER_WRITE {
                next = rx.try_recv().ok();
            }
        }
        if sink.flush().await.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
}

impl Conn {
    fn agent(&self) -> Uuid {
        self.ctx.agent_id
    }

    fn send(&self, msg: &ServerMsg) -> Result<(), End> {
        // Room for a task offer at once (about 1 KB), not grown and copied on the way.
        let mut bytes = Vec::with_capacity(FRAME_ROOM);
        serde_json::to_writer(&mut bytes, msg).map_err(|_| End::Closed)?;
        // The outbox's byte budget counts a frame's length, and a queued frame keeps its
        // allocation: a small one (an ack) gives the spare room back, so that a socket that
        // never reads holds at most twice its budget, as when the text grew by doubling.
        if bytes.len() < bytes.capacity() / 2 {
            bytes.shrink_to_fit();
        }
        let text = String::from_utf8(bytes).map_err(|_| End::Closed)?;
        self.out.push(Message::Text(text.into()))
    }

    fn capacity(&self, delta: i64) {
        if delta != 0 {
            self.announce(delta);
        }
    }

    /// Slots taken: offers waiting for an answer (or accepted, in flight) and tasks held.
    fn used(&self) -> usize {
        self.offers.len() + self.flights.accepting + self.held.len()
    }

    /// Tells the dispatcher the free slots changed by `delta` (and whether offers start).
    fn announce(&self, delta: i64) {
        self.ctx.hub.dispatch(DispatchMsg::Capacity {
            conn_id: self.conn_id,
            agent_id: self.agent(),
            auto_start: self.auto_start,
            delta,
            inbox: self.inbox.clone(),
        });
    }

    fn ack(
        &self,
        reference: Option<String>,
        kind: &str,
        result: Result<Option<Task>, ApiError>,
    ) -> Result<(), End> {
        let (ok, error, task) = match result {
            Ok(task) => (true, None, task.map(Box::new)),
            Err(e) => {
                if matches!(e, ApiError::Database(_) | ApiError::Internal(_)) {
                    tracing::error!(error = ?e, agent_id = %self.agent(), "websocket call failed");
                }
                (false, Some(e.body()), None)
            }
        };
        self.send(&ServerMsg::Ack {
            reference,
            kind: kind.to_string(),
            ok,
            error,
            task,
        })
    }

    async fn on_frame(&mut self, msg: Message) -> Result<(), End> {
        self.last_inbound = Instant::now();
        self.touch().await;
        match msg {
            Message::Text(text) => self.on_text(text.as_str()).await,
            Message::Binary(_) => self.ack(
                None,
                "binary",
                Err(ApiError::validation(
                    "frame",
                    "send JSON text frames, not binary",
                )),
            ),
            Message::Close(_) => Err(End::Closed),
            // Pongs (and pings, answered by the library) only prove the agent is alive.
            Message::Ping(_) | Message::Pong(_) => Ok(()),
        }
    }

    /// Any inbound frame is a heartbeat; the database hears of it at most every few seconds.
    async fn touch(&mut self) {
        let every = (self.ctx.config.agent_stale() / 3).min(Duration::from_secs(10));
        if self.last_touch.elapsed() >= every {
            self.last_touch = Instant::now();
            if let Err(e) = self.ctx.store.agent_heartbeat(self.agent()).await {
                tracing::warn!(error = %e, agent_id = %self.agent(), "heartbeat from websocket failed");
            }
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        // A frame as the SDK writes it is read in one pass and has no unknown field; any other
        // is read the derived way, which names what is wrong with it.
        let (frame, unknown) = match ClientFrame::read_plain(text) {
            Some(frame) => (frame, None),
            None => match parse_json::<ClientFrame>(text.as_bytes()) {
                Ok(frame) => {
                    let unknown = serde_json::from_str(text)
                        .ok()
                        .and_then(|raw| frame.unknown_field(&raw));
                    (frame, unknown)
                }
                Err(e) => {
                    self.land_all().await?;
                    return self.ack(None, "unknown", Err(e));
                }
            },
        };
        if unknown.is_none() && pipeline::flies(&frame.msg) {
            return self.board(frame).await;
        }
        // Any other frame is answered after the frames in flight, so acks keep the frames' order.
        self.land_all().await?;
        if let Some(field) = unknown {
            let kind = frame.msg.kind();
            let e =
                ApiError::validation(&field, format!("unknown field `{field}` in a {kind} frame"));
            return self.ack(frame.reference, kind, Err(e));
        }
        let kind = frame.msg.kind();
        let result = self.handle(frame.msg).await;
        self.ack(frame.reference, kind, result)
    }

    /// Answers one message: the task it changed, if any.
    async fn handle(&mut self, msg: ClientMsg) -> Result<Option<Task>, ApiError> {
        match msg {
            ClientMsg::Ready { slots, auto_start } => {
                agora_shared::validate::range("slots", slots, 0, MAX_SLOTS)?;
                let delta = i64::from(slots) - i64::from(self.slots);
                let changed = auto_start != self.auto_start;
                self.slots = slots;
                self.auto_start = auto_start;
                if delta != 0 || changed {
                    self.announce(delta);
                }
                Ok(None)
            }
            ClientMsg::Decline { offer_id, reason } => {
                self.decline(offer_id, reason).await.map(Some)
            }
            ClientMsg::Subscribe { job_id } => {
                self.subscribe(job_id).await?;
                Ok(None)
            }
            flying => Err(ApiError::Internal(anyhow::anyhow!(
                "a {} frame is answered in flight",
                flying.kind()
            ))),
        }
    }

    async fn decline(&mut self, offer_id: Uuid, reason: Option<String>) -> Result<Task, ApiError> {
        // A reason too long to keep is refused before the offer is touched.
        agora_shared::validate::optional_text(
            "reason",
            reason.as_deref(),
            agora_shared::MAX_MESSAGE,
        )?;
        let reason = reason.unwrap_or_else(|| "declined".into());
        if let Some(held) = self.started.remove(&offer_id) {
            return self.decline_started(held, reason).await;
        }
        let offer = self.take_offer(offer_id)?;
        self.capacity(1);
        Ok(self
            .ctx
            .store
            .task_decline(self.agent(), offer.held, reason)
            .await?)
    }

    /// A started offer declined (say, a plan task for a worker that cannot plan): it goes back
    /// to pending with no attempt counted, as an offer would.
    async fn decline_started(&mut self, held: Held, reason: String) -> Result<Task, ApiError> {
        if self.held.get(&held.task_id) != Some(&held.lease_id) {
            return Err(ApiError::NotFound(format!(
                "task {} of that offer is no longer this agent's",
                held.task_id
            )));
        }
        let released = self
            .ctx
            .store
            .tasks_abandon(self.agent(), vec![held], reason, false)
            .await?;
        self.let_go(held.task_id, Some(held.lease_id));
        if released == 0 {
            return Err(ApiError::NotFound(format!(
                "task {} of that offer is no longer this agent's",
                held.task_id
            )));
        }
        Ok(self.ctx.store.task_get(held.task_id).await?)
    }

    fn take_offer(&mut self, offer_id: Uuid) -> Result<Offer, ApiError> {
        self.offers.remove(&offer_id).ok_or_else(|| {
            ApiError::NotFound(format!(
                "offer {offer_id} is unknown, expired or already answered"
            ))
        })
    }

    /// With `auto_start`, a report takes the agent's next task in its commit, when the slot it
    /// frees is the agent's to fill (slots not lowered meanwhile, the server not draining).
    fn wants_next(&self, task_id: Uuid) -> Option<NextTask> {
        let used = self.used() - usize::from(self.held.contains_key(&task_id));
        let room = used < self.slots as usize && !*self.ctx.draining.borrow();
        (self.auto_start && room).then_some(NextTask::Start)
    }

    /// The task is no longer this agent's; a next task taken with the report keeps the slot
    /// (it is offered after the ack, and returned for that), else the slot is free again.
    fn finished(&mut self, done: FinishedWithNext) -> (Task, Option<Box<ClaimedTask>>) {
        let task_id = done.task.id;
        match done.next {
            Some(next) => {
                crate::telemetry::claimed("push", 1);
                self.held.remove(&task_id);
                self.started.retain(|_, h| h.task_id != task_id);
                (done.task, Some(Box::new(next)))
            }
            None => {
                self.let_go(task_id, None);
                (done.task, None)
            }
        }
    }

    /// Events of one job, or of all, from now on.
    async fn subscribe(&mut self, job_id: Option<Uuid>) -> Result<(), ApiError> {
        if self.events.is_none() {
            self.events = Some(self.ctx.store.subscribe());
        }
        match job_id {
            Some(j) => {
                self.ctx.store.job_get(j).await?;
                self.subscribed_jobs.insert(j);
            }
            None => self.subscribed_all = true,
        }
        Ok(())
    }

    /// The delivery is no longer this agent's (done, failed, revoked): its slot is free again.
    /// With `lease` only that delivery is let go; a newer delivery of the same task stays.
    fn let_go(&mut self, task_id: Uuid, lease: Option<Uuid>) -> bool {
        let matches = |l: Uuid| lease.is_none_or(|want| want == l);
        let was_held = match self.held.get(&task_id) {
            Some(l) if matches(*l) => self.held.remove(&task_id).is_some(),
            _ => false,
        };
        if was_held && !self.started.is_empty() {
            self.started.retain(|_, h| h.task_id != task_id);
        }
        let offer = self
            .offers
            .iter()
            .find(|(_, o)| o.held.task_id == task_id && matches(o.held.lease_id))
            .map(|(id, _)| *id);
        if let Some(offer_id) = offer {
            self.offers.remove(&offer_id);
        }
        let freed = was_held || offer.is_some();
        if freed {
            self.capacity(1);
        }
        freed
    }

    async fn on_cmd(&mut self, cmd: ConnCmd) -> Result<(), End> {
        let claimed = match cmd {
            ConnCmd::Offer(c) => c,
            ConnCmd::Revoke(revoke) => {
                let super::Revoke {
                    task_id,
                    lease_id,
                    reason,
                } = *revoke;
                if self.let_go(task_id, lease_id) {
                    self.send(&ServerMsg::TaskRevoked { task_id, reason })?;
                }
                return Ok(());
            }
            ConnCmd::Recheck => return self.recheck_tasks().await,
            ConnCmd::Close { reason } => {
                tracing::info!(agent_id = %self.agent(), reason, "closing the socket");
                return Err(End::Unregistered);
            }
        };
        let task_id = claimed.task.id;
        let used = self.used();
        if used >= self.slots as usize || *self.ctx.draining.borrow() {
            // Offered after the agent lowered its slots: hand it back, no attempt counted (the
            // slot count evens out).
            self.capacity(1);
            if let Err(e) = self
                .ctx
                .store
                .tasks_abandon(
                    self.agent(),
                    vec![Held::of(&claimed)],
                    "over the agent's slots".into(),
                    false,
                )
                .await
            {
                tracing::warn!(error = %e, %task_id, "could not release an extra offer");
            }
            return Ok(());
        }
        self.offer(claimed)
    }

    /// Shows the agent a task claimed for it: an offer to accept, or with `auto_start` a task
    /// already started (held from now on, its deadline as `expires_at`).
    fn offer(&mut self, claimed: Box<ClaimedTask>) -> Result<(), End> {
        let held = Held::of(&claimed);
        let offer_id = Uuid::new_v4();
        let started = claimed.task.status == TaskStatus::Running;
        let expires_at = if started {
            self.held.insert(held.task_id, held.lease_id);
            self.started.insert(offer_id, held);
            claimed.task.deadline.unwrap_or_else(Utc::now)
        } else {
            let ttl = self.ctx.config.offer_ttl();
            self.offers.insert(
                offer_id,
                Offer {
                    held,
                    expires_at: Instant::now() + ttl,
                },
            );
            Utc::now() + chrono::Duration::from_std(ttl).unwrap_or_default()
        };
        let ClaimedTask {
            task,
            job,
            lease_id,
            inputs,
            inputs_omitted,
        } = *claimed;
        self.send(&ServerMsg::TaskOffer {
            offer_id,
            task: Box::new(task),
            job: Box::new(job),
            expires_at,
            lease_id,
            inputs,
            inputs_omitted,
            started,
        })
    }

    async fn on_event(
        &mut self,
        ev: Result<crate::frames::Live, broadcast::error::RecvError>,
    ) -> Result<(), End> {
        match ev {
            Ok(e) => {
                let wanted = self.subscribed_all
                    || e.job_id.is_some_and(|j| self.subscribed_jobs.contains(&j));
                if wanted {
                    // Encoded once for every subscriber.
                    self.out.push(Message::Text(e.ws()))?;
                }
                Ok(())
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                // Event subscriptions over WebSocket are best effort; SSE is the lossless feed.
                tracing::debug!(agent_id = %self.agent(), skipped = n, "websocket subscriber fell behind the event feed");
                Ok(())
            }
            Err(broadcast::error::RecvError::Closed) => Err(End::Shutdown),
        }
    }

    /// After missing events: revoke whatever delivery the database no longer gives this agent.
    async fn recheck_tasks(&mut self) -> Result<(), End> {
        let mine: Vec<Held> = self
            .held
            .iter()
            .map(|(t, l)| Held {
                task_id: *t,
                lease_id: *l,
            })
            .chain(self.offers.values().map(|o| o.held))
            .collect();
        for held in mine {
            if let Ok(Some(reason)) = self.ctx.store.task_taken_back(self.agent(), held).await {
                if self.let_go(held.task_id, Some(held.lease_id)) {
                    let task_id = held.task_id;
                    self.send(&ServerMsg::TaskRevoked { task_id, reason })?;
                }
            }
        }
        Ok(())
    }

    fn on_ping(&mut self, every: Duration) -> Result<(), End> {
        if self.last_inbound.elapsed() > every * 2 {
            return Err(End::Unresponsive);
        }
        self.out.push(Message::Ping(Default::default()))
    }

    /// The server is draining: offers not yet accepted go back to pending; running tasks may
    /// still finish.
    async fn drain(&mut self) -> Result<(), End> {
        let now = Instant::now();
        for o in self.offers.values_mut() {
            o.expires_at = now;
        }
        self.release_offers("the server is draining").await
    }

    async fn expire_offers(&mut self) -> Result<(), End> {
        self.release_offers("offer expired").await
    }

    async fn release_offers(&mut self, reason: &str) -> Result<(), End> {
        let now = Instant::now();
        let expired: Vec<(Uuid, Held)> = self
            .offers
            .iter()
            .filter(|(_, o)| o.expires_at <= now)
            .map(|(id, o)| (*id, o.held))
            .collect();
        for (offer_id, held) in expired {
            let task_id = held.task_id;
            self.offers.remove(&offer_id);
            self.capacity(1);
            if let Err(e) = self
                .ctx
                .store
                .task_decline(self.agent(), held, reason.into())
                .await
            {
                tracing::debug!(error = %e, %task_id, "expired offer was already gone");
            }
            self.send(&ServerMsg::TaskRevoked {
                task_id,
                reason: reason.into(),
            })?;
        }
        Ok(())
    }

    /// Lets go of everything and closes the socket.
    async fn finish(mut self, end: End, writer: tokio::task::JoinHandle<()>) {
        let agent = self.agent();
        self.ctx.hub.detach(agent, self.conn_id);
        // What becomes of the running tasks: handed on (a failed attempt) when the agent's socket
        // failed; kept for the agent's newer socket; released (no attempt) when the server
        // stopped after its drain grace, which was not the agent's doing.
        let (reason, keep_running, charge) = match &end {
            End::Closed => ("its WebSocket closed", false, true),
            End::Unresponsive => ("its WebSocket stopped answering pings", false, true),
            End::TooSlow => ("its WebSocket stopped reading", false, true),
            End::Replaced(_) => (
                "a newer connection of the agent replaced this one",
                true,
                true,
            ),
            // Unregistering released every task of the agent already.
            End::Unregistered => ("the agent was unregistered", false, false),
            End::Shutdown => (
                "the server shut down before the task finished",
                false,
                false,
            ),
        };
        let mut ids: Vec<Held> = self.offers.drain().map(|(_, o)| o.held).collect();
        if !keep_running {
            ids.extend(
                self.held
                    .drain()
                    .map(|(task_id, lease_id)| Held { task_id, lease_id }),
            );
        }
        if !ids.is_empty() {
            if let Err(e) = self
                .ctx
                .store
                .tasks_abandon(agent, ids, reason.to_string(), charge)
                .await
            {
                tracing::warn!(error = %e, %agent, "could not let go of the socket's tasks");
            }
        }
        tracing::info!(%agent, reason, "websocket closed");
        let close = Message::Close(Some(CloseFrame {
            code: 1000,
            reason: Utf8Bytes::from(reason),
        }));
        let _ = self.out.tx.try_send(close);
        drop(self.out);
        if let End::Replaced(done) = end {
            let _ = done.send(());
        }
        // A client that does not read cannot hold the writer forever.
        let mut writer = writer;
        if tokio::time::timeout(Duration::from_secs(2), &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    }
}
