//! Reports and accepts in flight: an agent with several slots may send `complete`, `fail`,
//! `progress` and `accept` frames for different tasks without waiting for each answer, and the
//! socket runs them at once (they reach the writer together and share one commit). Their acks
//! still go out in the order the frames came, and any other frame (or a second frame about a
//! task already in flight) waits until every flight has landed, so an agent sees the same
//! answers as if the frames had run one at a time.

use std::collections::HashSet;

use agora_shared::ws::{ClientFrame, ClientMsg};
use agora_shared::{FailTask, FinishedWithNext, ProgressTask, Task};
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use uuid::Uuid;

use super::{Conn, End};
use crate::error::ApiError;
use crate::store::{Held, TaskCompleteParams, TaskFailParams, TaskProgressParams, TaskStartParams};

/// Most frames of one socket in flight at once; the next one waits for them all.
const MOST: usize = 64;

/// What a socket has in flight.
#[derive(Default)]
pub(super) struct Flights {
    running: FuturesOrdered<BoxFuture<'static, Landed>>,
    /// The tasks the frames in flight are about.
    tasks: HashSet<Uuid>,
    /// Accepts in flight: their offers are no longer waiting, their tasks not yet held, and
    /// their slots still taken.
    pub accepting: usize,
}

impl Flights {
    pub(super) fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// The next flight to land, in the order they took off; pending while none is in flight.
    pub(super) async fn next(&mut self) -> Landed {
        match self.running.next().await {
            Some(landed) => landed,
            None => std::future::pending().await,
        }
    }
}

/// A frame's answer from the store, to apply and acknowledge.
pub(super) struct Landed {
    reference: Option<String>,
    kind: &'static str,
    task_id: Option<Uuid>,
    outcome: Outcome,
}

enum Outcome {
    /// An accept: the delivery's lease, and the started task.
    Started(Uuid, Result<Box<Task>, ApiError>),
    /// A complete or fail: the task, and the next one taken with it.
    Finished(Result<Box<FinishedWithNext>, ApiError>),
    Progressed(Result<Box<Task>, ApiError>),
    /// Refused before it reached the store (an unknown offer).
    Refused(ApiError),
}

/// The store's answer to a frame, unless the frame was refused before it reached the store
/// (the call is then never polled).
async fn answer<T>(
    checked: Result<(), ApiError>,
    call: impl std::future::Future<Output = crate::store::error::Result<T>>,
) -> Result<Box<T>, ApiError> {
    checked?;
    Ok(Box::new(call.await?))
}

/// Whether the frame may fly: a report or an accept.
pub(super) fn flies(msg: &ClientMsg) -> bool {
    matches!(
        msg,
        ClientMsg::Complete { .. }
            | ClientMsg::Fail { .. }
            | ClientMsg::Progress { .. }
            | ClientMsg::Accept { .. }
    )
}

impl Conn {
    /// Sends a frame that [`flies`] on its way, after landing the flights first when it must
    /// wait for them (too many in flight, or one about the same task).
    pub(super) async fn board(&mut self, frame: ClientFrame) -> Result<(), End> {
        let crowded = self.flights.running.len() >= MOST;
        if crowded
            || self
                .key(&frame.msg)
                .is_some_and(|t| self.flights.tasks.contains(&t))
        {
            self.land_all().await?;
        }
        self.take_off(frame);
        Ok(())
    }

    /// The task a frame that flies is about (none for an unknown offer).
    fn key(&self, msg: &ClientMsg) -> Option<Uuid> {
        match msg {
            ClientMsg::Accept { offer_id } => self.offers.get(offer_id).map(|o| o.held.task_id),
            ClientMsg::Complete { task_id, .. }
            | ClientMsg::Fail { task_id, .. }
            | ClientMsg::Progress { task_id, .. } => Some(*task_id),
            _ => None,
        }
    }

    /// Starts the frame's store call; its answer lands in order with the others'.
    fn take_off(&mut self, frame: ClientFrame) {
        let ClientFrame { reference, msg } = frame;
        let kind = msg.kind();
        let store = self.ctx.store.clone();
        let agent_id = self.agent();
        let (task_id, outcome): (Option<Uuid>, BoxFuture<'static, Outcome>) = match msg {
            ClientMsg::Accept { offer_id } => match self.offers.remove(&offer_id) {
                Some(offer) => {
                    self.flights.accepting += 1;
                    let Held { task_id, lease_id } = offer.held;
                    let start = TaskStartParams {
                        agent_id,
                        task_id,
                        lease_id: Some(lease_id),
                        heartbeat_secs: None,
                    };
                    let started = async move {
                        Outcome::Started(lease_id, answer(Ok(()), store.task_start(start)).await)
                    };
                    (Some(task_id), started.boxed())
                }
                None => {
                    let unknown = ApiError::NotFound(format!(
                        "offer {offer_id} is unknown, expired or already answered"
                    ));
                    (None, std::future::ready(Outcome::Refused(unknown)).boxed())
                }
            },
            ClientMsg::Complete {
                task_id,
                result,
                lease_id,
            } => {
                let checked = agora_shared::validate::json_size(
                    "result",
                    &result,
                    self.ctx.config.max_spec_bytes,
                )
                .map_err(ApiError::from);
                let params = TaskCompleteParams {
                    agent_id,
                    task_id,
                    result,
                    lease_id,
                    next: self.wants_next(task_id),
                };
                let done = async move {
                    Outcome::Finished(answer(checked, store.task_complete(params)).await)
                };
                (Some(task_id), done.boxed())
            }
            ClientMsg::Fail {
                task_id,
                error,
                retryable,
                lease_id,
            } => {
                let body = FailTask {
                    error,
                    retryable,
                    lease_id,
                };
                let checked = body.validate().map_err(ApiError::from);
                let params = TaskFailParams {
                    agent_id,
                    task_id,
                    error: body.error,
                    retryable: body.retryable.unwrap_or(true),
                    lease_id: body.lease_id,
                    next: self.wants_next(task_id),
                };
                let done = async move {
                    Outcome::Finished(answer(checked, store.task_fail(params)).await)
                };
                (Some(task_id), done.boxed())
            }
            ClientMsg::Progress {
                task_id,
                progress,
                message,
                extend_secs,
                lease_id,
            } => {
                let body = ProgressTask {
                    progress,
                    message,
                    extend_secs,
                    lease_id,
                };
                let checked = body.validate().map_err(ApiError::from);
                let params = TaskProgressParams {
                    agent_id,
                    task_id,
                    progress: body.progress,
                    message: body.message,
                    extend_secs: body.extend_secs,
                    lease_id: body.lease_id,
                };
                let done = async move {
                    Outcome::Progressed(answer(checked, store.task_progress(params)).await)
                };
                (Some(task_id), done.boxed())
            }
            other => {
                let e = anyhow::anyhow!("a {} frame cannot fly", other.kind());
                let refused = std::future::ready(Outcome::Refused(ApiError::Internal(e)));
                (None, refused.boxed())
            }
        };
        if let Some(task_id) = task_id {
            self.flights.tasks.insert(task_id);
        }
        self.flights.running.push_back(
            outcome
                .map(move |outcome| Landed {
                    reference,
                    kind,
                    task_id,
                    outcome,
                })
                .boxed(),
        );
    }

    /// Applies a landed frame's answer to the socket's state, then acknowledges it (and offers
    /// the next task taken with a report). The state changes first: a socket closing meanwhile
    /// still lets go of what the answer gave it.
    pub(super) fn land(&mut self, landed: Landed) -> Result<(), End> {
        let Landed {
            reference,
            kind,
            task_id,
            outcome,
        } = landed;
        if let Some(task_id) = task_id {
            self.flights.tasks.remove(&task_id);
        }
        let mut next = None;
        let answer = match outcome {
            Outcome::Started(lease, started) => {
                self.flights.accepting -= 1;
                match started {
                    Ok(task) => {
                        self.held.insert(task.id, lease);
                        Ok(Some(*task))
                    }
                    Err(e) => {
                        self.capacity(1);
                        Err(e)
                    }
                }
            }
            Outcome::Finished(done) => done.map(|done| {
                let (task, taken) = self.finished(*done);
                next = taken;
                Some(task)
            }),
            Outcome::Progressed(task) => task.map(|t| Some(*t)),
            Outcome::Refused(e) => Err(e),
        };
        if let Err(end) = self.ack(reference, kind, answer) {
            self.unshown.extend(next.map(|c| Held::of(&c)));
            return Err(end);
        }
        match next {
            Some(next) => self.offer(next),
            None => Ok(()),
        }
    }

    /// Lands the flights whose answers are in, in order, without waiting for the others. A
    /// command from the dispatcher or the event router (a revoke, an offer) is handled after
    /// them: it may be about what they did (a task an accept started, or the next task a report
    /// took, revoked by a later commit), whose answer was sent before that commit.
    pub(super) fn land_ready(&mut self) -> Result<(), End> {
        while let Some(Some(landed)) = self.flights.running.next().now_or_never() {
            self.land(landed)?;
        }
        Ok(())
    }

    /// Lands every flight, in order.
    pub(super) async fn land_all(&mut self) -> Result<(), End> {
        while !self.flights.is_empty() {
            let landed = self.flights.next().await;
            self.land(landed)?;
        }
        Ok(())
    }
}
