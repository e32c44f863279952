//! The sending side of the Matrix front end: the guest's Matrix effects
//! carried out through matrix-sdk.
//!
//! - Messages, edits and reactions of one room go out in order, one at a
//!   time, from a task of that room; rooms do not wait for each other.
//! - Every send carries a transaction id made from the guest's request id
//!   (stored before the effect was issued) and the database's instance id:
//!   a send retried after a failure or a restart cannot appear twice.
//! - matrix-sdk's own retries are off for these requests: a 429 goes back
//!   to the guest at once with its `Retry-After`, so the guest can fold
//!   the edits it holds into one instead of queueing stale ones.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use matrix_sdk::config::RequestConfig;
use matrix_sdk::ruma::api::client::receipt::create_receipt::v3::ReceiptType;
use matrix_sdk::ruma::api::client::typing::create_typing_event::v3::{
    Request as TypingRequest, Typing, TypingInfo,
};
use matrix_sdk::ruma::api::error::RetryAfter;
use matrix_sdk::ruma::events::receipt::ReceiptThread;
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, OwnedTransactionId};
use matrix_sdk::{Client, Room};
use serde_json::json;
use surfaces_embed::{
    AttachmentContent, EditTarget, Event, MatrixEffect, MatrixError, MatrixErrorKind, MatrixResult,
    MessageContent, matrix_content,
};
use tokio::sync::{mpsc, watch};

use super::shared::Shared;
use crate::channels::EventSender;
use crate::front::FrontEnd;
use crate::media::Kept;
use crate::metrics::{Metrics, Outcome};

/// One request of a room's queue.
enum Job {
    Send {
        request: u64,
        content: MessageContent,
    },
    Edit {
        request: u64,
        target: EditTarget,
        content: MessageContent,
    },
    React {
        request: u64,
        event_id: String,
        key: String,
    },
    /// A file the agent sent, kept until now.
    File {
        request: u64,
        content: AttachmentContent,
    },
}

impl Job {
    fn request(&self) -> u64 {
        match self {
            Job::Send { request, .. }
            | Job::Edit { request, .. }
            | Job::React { request, .. }
            | Job::File { request, .. } => *request,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Job::Send { .. } => "send",
            Job::Edit { .. } => "edit",
            Job::React { .. } => "react",
            Job::File { .. } => "file",
        }
    }
}

pub struct SdkPort {
    client: Client,
    events: EventSender,
    txn_prefix: Arc<str>,
    rooms: HashMap<String, mpsc::UnboundedSender<Job>>,
    /// Per room, the typing state to show; one task per room sends each
    /// latest state in turn, so an "off" never overtakes its "on".
    typing: HashMap<String, watch::Sender<(bool, u32)>>,
    pending: Arc<AtomicUsize>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    metrics: Arc<Metrics>,
    kept: Arc<Kept>,
}

impl SdkPort {
    pub(crate) fn new(
        client: Client,
        events: EventSender,
        txn_prefix: &str,
        shared: Arc<Shared>,
        stop: watch::Sender<bool>,
        metrics: Arc<Metrics>,
        kept: Arc<Kept>,
    ) -> SdkPort {
        SdkPort {
            client,
            events,
            txn_prefix: Arc::from(txn_prefix),
            rooms: HashMap::new(),
            typing: HashMap::new(),
            pending: Arc::new(AtomicUsize::new(0)),
            shared,
            stop,
            metrics,
            kept,
        }
    }

    fn queue(&mut self, room_id: String, job: Job) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        let tx = self.rooms.entry(room_id.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let worker = Worker {
                client: self.client.clone(),
                room_id: room_id.clone(),
                events: self.events.clone(),
                txn_prefix: self.txn_prefix.clone(),
                pending: self.pending.clone(),
                shared: self.shared.clone(),
                metrics: self.metrics.clone(),
                kept: self.kept.clone(),
            };
            tokio::spawn(worker.run(rx));
            tx
        });
        // The worker never ends while its sender lives.
        let _ = tx.send(job);
    }

    /// Join and leave are answered like sends, but need no room order.
    fn membership(&self, request: u64, room_id: String, join: bool) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        let client = self.client.clone();
        let events = self.events.clone();
        let pending = self.pending.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let outcome = match parse_room(&room_id) {
                Err(e) => Err(e),
                Ok(id) if join => client
                    .join_room_by_id(&id)
                    .await
                    .map(|room| room.room_id().to_string())
                    .map_err(|e| sdk_error(&e)),
                Ok(id) => match client.get_room(&id) {
                    None => Err(not_in_room(&room_id)),
                    Some(room) => room
                        .leave()
                        .await
                        .map(|()| room_id.clone())
                        .map_err(|e| sdk_error(&e)),
                },
            };
            if let Err(e) = &outcome {
                tracing::warn!(room = %room_id, join, "membership change failed: {}", e.message);
            }
            count(&metrics, if join { "join" } else { "leave" }, &outcome);
            let _ = events.send(Event::MatrixResult(MatrixResult { request, outcome }));
            pending.fetch_sub(1, Ordering::SeqCst);
        });
    }

    fn typing(&mut self, room_id: String, typing: bool, timeout_ms: u32) {
        if let Some(tx) = self.typing.get(&room_id)
            && tx.send((typing, timeout_ms)).is_ok()
        {
            return;
        }
        let (tx, rx) = watch::channel((typing, timeout_ms));
        tokio::spawn(typist(self.client.clone(), room_id.clone(), rx));
        self.typing.insert(room_id, tx);
    }

    fn receipt(&self, room_id: String, event_id: String) {
        let client = self.client.clone();
        tokio::spawn(async move {
            let Some(room) = parse_room(&room_id)
                .ok()
                .and_then(|id| client.get_room(&id))
            else {
                tracing::debug!(room = %room_id, "no read receipt: the bot is not in this room");
                return;
            };
            let Ok(event) = OwnedEventId::try_from(event_id.as_str()) else {
                tracing::debug!(event = %event_id, "no read receipt: not an event id");
                return;
            };
            if let Err(e) = room
                .send_single_receipt(ReceiptType::Read, ReceiptThread::Unthreaded, event)
                .await
            {
                tracing::debug!(room = %room_id, "read receipt failed: {e}");
            }
        });
    }
}

impl FrontEnd for SdkPort {
    fn execute(&mut self, effect: MatrixEffect) {
        match effect {
            MatrixEffect::Send {
                request,
                room_id,
                content,
            } => self.queue(room_id, Job::Send { request, content }),
            MatrixEffect::Edit {
                request,
                room_id,
                target,
                content,
            } => self.queue(
                room_id,
                Job::Edit {
                    request,
                    target,
                    content,
                },
            ),
            MatrixEffect::React {
                request,
                room_id,
                event_id,
                key,
            } => self.queue(
                room_id,
                Job::React {
                    request,
                    event_id,
                    key,
                },
            ),
            MatrixEffect::SendAttachment {
                request,
                room_id,
                content,
            } => self.queue(room_id, Job::File { request, content }),
            MatrixEffect::SetTyping {
                room_id,
                typing,
                timeout_ms,
            } => self.typing(room_id, typing, timeout_ms),
            MatrixEffect::ReadReceipt { room_id, event_id } => self.receipt(room_id, event_id),
            MatrixEffect::Join { request, room_id } => self.membership(request, room_id, true),
            MatrixEffect::Leave { request, room_id } => self.membership(request, room_id, false),
        }
    }

    fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    fn stop_receiving(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Sends one room's requests in order.
struct Worker {
    client: Client,
    room_id: String,
    events: EventSender,
    txn_prefix: Arc<str>,
    pending: Arc<AtomicUsize>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    kept: Arc<Kept>,
}

/// Send a room's typing state, each latest one in turn, until the port
/// goes away.
async fn typist(client: Client, room_id: String, mut state: watch::Receiver<(bool, u32)>) {
    loop {
        let (typing, timeout_ms) = *state.borrow_and_update();
        let (Ok(room), Some(user)) = (parse_room(&room_id), client.user_id()) else {
            tracing::debug!(room = %room_id, "no typing notice: not a room id, or not logged in");
            return;
        };
        let typing = if typing {
            Typing::Yes(TypingInfo::new(Duration::from_millis(u64::from(
                timeout_ms.max(1000),
            ))))
        } else {
            Typing::No
        };
        let request = TypingRequest::new(user.to_owned(), room, typing);
        if let Err(e) = client.send(request).await {
            tracing::debug!(room = %room_id, "typing notice failed: {e}");
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

impl Worker {
    async fn run(self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = jobs.recv().await {
            let kind = job.kind();
            let request = job.request();
            // A panic in one request must not kill the room's worker (its
            // later sends would vanish): it fails that request only.
            let outcome = match AssertUnwindSafe(self.carry_out(job)).catch_unwind().await {
                Ok((_, outcome)) => outcome,
                Err(panic) => Err(MatrixError {
                    kind: MatrixErrorKind::Other,
                    message: format!("internal error: {}", super::panic_message(panic)),
                    retry_after_ms: None,
                }),
            };
            count(&self.metrics, kind, &outcome);
            if let Err(e) = &outcome {
                tracing::warn!(room = %self.room_id, request, kind = ?e.kind, "send failed: {}", e.message);
            }
            let _ = self
                .events
                .send(Event::MatrixResult(MatrixResult { request, outcome }));
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    async fn carry_out(&self, job: Job) -> (u64, Result<String, MatrixError>) {
        let room = match parse_room(&self.room_id) {
            Ok(id) => self.client.get_room(&id),
            Err(e) => return (job.request(), Err(e)),
        };
        match job {
            Job::Send { request, content } => {
                let body = matrix_content(&content, None);
                let outcome = self.send(room, request, "m.room.message", body).await;
                if let Ok(event_id) = &outcome {
                    self.shared.remember_send(request, event_id);
                }
                (request, outcome)
            }
            Job::Edit {
                request,
                target,
                content,
            } => {
                let original = match target {
                    EditTarget::Event(id) => Some(id),
                    EditTarget::Request(r) => self.shared.event_of_request(r),
                };
                let Some(original) = original else {
                    return (
                        request,
                        Err(MatrixError {
                            kind: MatrixErrorKind::NotFound,
                            message: "edit of a message this run never sent".into(),
                            retry_after_ms: None,
                        }),
                    );
                };
                let body = matrix_content(&content, Some(&original));
                (
                    request,
                    self.send(room, request, "m.room.message", body).await,
                )
            }
            Job::React {
                request,
                event_id,
                key,
            } => {
                let body = json!({
                    "m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}
                });
                (request, self.send(room, request, "m.reaction", body).await)
            }
            Job::File { request, content } => {
                if room.is_none() {
                    return (request, Err(not_in_room(&self.room_id)));
                }
                let txn: OwnedTransactionId = format!("{}.{request}", self.txn_prefix).into();
                let outcome =
                    super::media::send_kept(&self.client, &self.kept, &self.room_id, txn, &content)
                        .await;
                if let Ok(id) = &outcome {
                    self.shared.remember_sent(id);
                }
                (request, outcome)
            }
        }
    }

    async fn send(
        &self,
        room: Option<Room>,
        request: u64,
        event_type: &str,
        body: serde_json::Value,
    ) -> Result<String, MatrixError> {
        let room = room.ok_or_else(|| not_in_room(&self.room_id))?;
        let txn: OwnedTransactionId = format!("{}.{request}", self.txn_prefix).into();
        room.send_raw(event_type, body)
            .with_transaction_id(&txn)
            .with_request_config(RequestConfig::new().disable_retry())
            .await
            .map(|r| {
                let id = r.response.event_id.to_string();
                self.shared.remember_sent(&id);
                id
            })
            .map_err(|e| sdk_error(&e))
    }
}

fn count(metrics: &Metrics, kind: &'static str, outcome: &Result<String, MatrixError>) {
    let outcome = match outcome {
        Ok(_) => "ok",
        Err(e) => match e.kind {
            MatrixErrorKind::RateLimited => "rate_limited",
            MatrixErrorKind::TooLarge => "too_large",
            MatrixErrorKind::Forbidden => "forbidden",
            MatrixErrorKind::NotFound => "not_found",
            MatrixErrorKind::Unavailable => "unavailable",
            MatrixErrorKind::Other => "other",
        },
    };
    metrics
        .matrix_requests
        .get_or_create(&Outcome { kind, outcome })
        .inc();
}

fn parse_room(room_id: &str) -> Result<OwnedRoomId, MatrixError> {
    OwnedRoomId::try_from(room_id).map_err(|e| MatrixError {
        kind: MatrixErrorKind::NotFound,
        message: format!("{room_id:?} is not a room id: {e}"),
        retry_after_ms: None,
    })
}

fn not_in_room(room_id: &str) -> MatrixError {
    MatrixError {
        kind: MatrixErrorKind::NotFound,
        message: format!("the bot is not in {room_id}"),
        retry_after_ms: None,
    }
}

/// What the guest needs to know about a failed request.
pub(crate) fn sdk_error(e: &matrix_sdk::Error) -> MatrixError {
    let message = e.to_string();
    let Some(api) = e.as_client_api_error() else {
        let kind = match e {
            // No answer at all: the network or the server is down.
            matrix_sdk::Error::Http(h) if matches!(**h, matrix_sdk::HttpError::Reqwest(_)) => {
                MatrixErrorKind::Unavailable
            }
            _ => MatrixErrorKind::Other,
        };
        return MatrixError {
            kind,
            message,
            retry_after_ms: None,
        };
    };
    let status = api.status_code.as_u16();
    let retry_after_ms = match e.client_api_error_kind() {
        Some(matrix_sdk::ruma::api::error::ErrorKind::LimitExceeded(limit)) => {
            limit.retry_after.map(|r| match r {
                RetryAfter::Delay(d) => d.as_millis() as u64,
                RetryAfter::DateTime(t) => t
                    .duration_since(SystemTime::now())
                    .map_or(0, |d| d.as_millis() as u64),
            })
        }
        _ => None,
    };
    let kind = match status {
        429 => MatrixErrorKind::RateLimited,
        413 => MatrixErrorKind::TooLarge,
        403 => MatrixErrorKind::Forbidden,
        404 => MatrixErrorKind::NotFound,
        500..=599 => MatrixErrorKind::Unavailable,
        _ => MatrixErrorKind::Other,
    };
    MatrixError {
        kind,
        message,
        retry_after_ms,
    }
}
