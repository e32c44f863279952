//! The guest's Matrix effects at the fake homeserver: sends, edits and
//! membership arrive after a latency, may meet an outage, a rate limit or
//! a size limit, and their answers may be lost on the way back, as with
//! Synapse behind a real network.

use surfaces_embed::{EditTarget, Event, MatrixEffect, MatrixError, MatrixErrorKind, MatrixResult};

use super::facts::{Arrival, ReplyUpdate};
use super::transcript::show;
use super::{Pending, World};

impl World<'_> {
    /// A Matrix effect: logged, then on its way to the homeserver.
    pub(super) fn matrix_effect(&mut self, effect: MatrixEffect) {
        match &effect {
            MatrixEffect::Leave { room_id, .. } => {
                self.facts.leaving.insert(room_id.clone());
                let held = self.held_when_alone.remove(room_id).unwrap_or_default();
                self.facts.excused.extend(held);
            }
            MatrixEffect::Join { room_id, .. } => {
                self.facts.leaving.remove(room_id);
            }
            MatrixEffect::Send { room_id, .. }
            | MatrixEffect::SendAttachment { room_id, .. }
            | MatrixEffect::Edit { room_id, .. }
            | MatrixEffect::React { room_id, .. }
            | MatrixEffect::SetTyping { room_id, .. }
            | MatrixEffect::ReadReceipt { room_id, .. }
                if self.facts.leaving.contains(room_id) =>
            {
                self.facts
                    .sent_after_leaving
                    .push(format!("{} into {room_id}", effect_name(&effect)));
            }
            MatrixEffect::Send { .. }
            | MatrixEffect::SendAttachment { .. }
            | MatrixEffect::Edit { .. }
            | MatrixEffect::React { .. }
            | MatrixEffect::SetTyping { .. }
            | MatrixEffect::ReadReceipt { .. } => {}
        }
        match effect {
            MatrixEffect::Send {
                request,
                ref room_id,
                ref content,
            } => {
                self.log(format!("bot send #{request} {room_id}: {}", show(content)));
                self.note_reply_update(request, content.live, true, content.body.len());
                // A send tried again tells what was true when first sent.
                if !self.facts.sends.contains_key(&request) {
                    self.check_position(content);
                }
                self.facts
                    .sends
                    .entry(request)
                    .or_insert((self.now, content.live));
                let d = self.latency();
                self.after(d, Pending::HsArrive(effect));
            }
            MatrixEffect::SendAttachment {
                request,
                ref room_id,
                ref content,
            } => {
                self.log(format!("bot file #{request} {room_id}: {}", content.media));
                let d = self.latency();
                self.after(d, Pending::HsArrive(effect));
            }
            MatrixEffect::Edit {
                request,
                ref room_id,
                ref target,
                ref content,
            } => {
                let t = match target {
                    EditTarget::Event(e) => e.clone(),
                    EditTarget::Request(r) => format!("request #{r}"),
                };
                self.log(format!(
                    "bot edit #{request} {room_id} {t}: {}",
                    show(content)
                ));
                if let EditTarget::Event(e) = target {
                    self.facts
                        .updates
                        .entry(e.clone())
                        .or_default()
                        .push((self.now, content.live));
                }
                self.note_reply_update(request, content.live, false, content.body.len());
                let d = self.latency();
                self.after(d, Pending::HsArrive(effect));
            }
            MatrixEffect::React {
                request,
                room_id,
                event_id,
                key,
            } => {
                self.log(format!("bot react #{request} {room_id} {event_id} {key}"));
                self.after(
                    1,
                    Pending::Deliver(Event::MatrixResult(MatrixResult {
                        request,
                        outcome: Ok(String::new()),
                    })),
                );
            }
            MatrixEffect::SetTyping {
                room_id, typing, ..
            } => {
                self.log(format!(
                    "bot typing {} {room_id}",
                    if typing { "on" } else { "off" }
                ));
            }
            MatrixEffect::ReadReceipt { room_id, event_id } => {
                self.log(format!("bot read {room_id} {event_id}"));
            }
            MatrixEffect::Join { .. } | MatrixEffect::Leave { .. } => {
                let d = self.latency();
                self.after(d, Pending::HsArrive(effect));
            }
        }
    }

    pub(super) fn hs_arrive(&mut self, effect: MatrixEffect, epoch: u64) {
        let bot = self.scenario.bot.user_id.clone();
        let unavailable = self.scenario.homeserver.unavailable;
        let lost = self.scenario.homeserver.lost_response;
        let mut flow = None;
        let live = match &effect {
            MatrixEffect::Send { content, .. } | MatrixEffect::Edit { content, .. } => content.live,
            _ => false,
        };
        let (request, result) = match effect {
            MatrixEffect::Send {
                request,
                room_id,
                content,
            } => {
                // A send tried again keeps its request id (its transaction
                // id), so the request is the flow.
                flow = Some(format!(
                    "send #{request} of a {} into {room_id}",
                    if content.notice { "notice" } else { "message" }
                ));
                let r = if self.fault(unavailable) {
                    Err(unavailable_error())
                } else {
                    self.hs.send(
                        &bot,
                        &format!("s{request}"),
                        &room_id,
                        &content,
                        None,
                        self.now,
                    )
                };
                (request, r)
            }
            MatrixEffect::SendAttachment {
                request,
                room_id,
                content,
            } => {
                flow = Some(format!("file #{request} into {room_id}"));
                let r = if self.fault(unavailable) {
                    Err(unavailable_error())
                } else {
                    self.hs_send_file(request, &room_id, &content)
                };
                (request, r)
            }
            MatrixEffect::Edit {
                request,
                room_id,
                target,
                content,
            } => {
                let target = match target {
                    EditTarget::Event(e) => Some(e),
                    EditTarget::Request(r) => self.req_events.get(&r).cloned(),
                };
                flow = Some(format!(
                    "edits of {}",
                    target.as_deref().unwrap_or("an unknown event")
                ));
                let r = if self.fault(unavailable) {
                    Err(unavailable_error())
                } else if let Some(target) = target {
                    self.hs.send(
                        &bot,
                        &format!("s{request}"),
                        &room_id,
                        &content,
                        Some(&target),
                        self.now,
                    )
                } else {
                    Err(MatrixError {
                        kind: MatrixErrorKind::NotFound,
                        message: "edit names a request that sent nothing".into(),
                        retry_after_ms: None,
                    })
                };
                (request, r)
            }
            MatrixEffect::Join { request, room_id } => {
                let r = if self.joins_failed < self.scenario.homeserver.failed_joins {
                    self.joins_failed += 1;
                    Err(unavailable_error())
                } else {
                    self.hs
                        .join(&bot, &room_id, self.now)
                        .map(|_| room_id.clone())
                };
                if r.is_ok() {
                    self.log(format!("bot joined {room_id}"));
                }
                (request, r)
            }
            MatrixEffect::Leave { request, room_id } => {
                let r = self
                    .hs
                    .leave(&bot, &room_id, self.now)
                    .map(|_| String::new());
                if r.is_ok() {
                    self.log(format!("bot left {room_id}"));
                }
                (request, r)
            }
            // Answered or done at once (`matrix_effect`): never scheduled.
            MatrixEffect::React { .. }
            | MatrixEffect::SetTyping { .. }
            | MatrixEffect::ReadReceipt { .. } => return,
        };
        if let Some(flow) = flow {
            self.facts.arrivals.push(Arrival {
                request,
                flow,
                at: self.now,
                retry_after_ms: result.as_ref().err().and_then(|e| match e.kind {
                    MatrixErrorKind::RateLimited => e.retry_after_ms,
                    _ => None,
                }),
                received: false,
                landed: result.as_ref().is_ok_and(|id| id.starts_with('$')),
                lost: false,
                refused: result.is_err(),
                live,
            });
        }
        match &result {
            Ok(id) => {
                if id.starts_with('$') {
                    self.req_events.insert(request, id.clone());
                    // The first send of a message counts as its first update;
                    // a retry that the transaction id folds into it does not.
                    if let Some(first) = self.facts.sends.get(&request).copied()
                        && !self.facts.updates.contains_key(id)
                    {
                        self.facts.updates.insert(id.clone(), vec![first]);
                    }
                }
                self.log(format!("hs #{request} ok {id}"));
            }
            Err(e) => self.log(format!(
                "hs #{request} {:?}{}",
                e.kind,
                e.retry_after_ms
                    .map(|ms| format!(" retry after {ms}ms"))
                    .unwrap_or_default()
            )),
        }
        // The homeserver may store the event and the response still get
        // lost on the way back.
        let result = match result {
            Ok(id) if id.starts_with('$') && self.fault(lost) => {
                self.log(format!("fault: the response to #{request} is lost"));
                if let Some(a) = self
                    .facts
                    .arrivals
                    .last_mut()
                    .filter(|a| a.request == request)
                {
                    a.lost = true;
                }
                Err(unavailable_error())
            }
            other => other,
        };
        let d = self.latency();
        // The response goes to the host run that sent the request.
        self.at_epoch(
            self.now + d,
            Pending::Deliver(Event::MatrixResult(MatrixResult {
                request,
                outcome: result,
            })),
            epoch,
        );
    }
}

fn unavailable_error() -> MatrixError {
    MatrixError {
        kind: MatrixErrorKind::Unavailable,
        message: "503: homeserver unavailable".into(),
        retry_after_ms: None,
    }
}

impl World<'_> {
    /// A send or edit of a reply's message: which agent request's reply
    /// it is for, the guest's store says (its route).
    fn note_reply_update(&mut self, request: u64, live: bool, send: bool, len: usize) {
        let reply = self
            .kv
            .get(&format!("route/{request:020}"))
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.pointer("/Part/reply").and_then(|r| r.as_u64()));
        if let Some(reply) = reply {
            self.facts
                .reply_updates
                .entry(reply)
                .or_default()
                .push(ReplyUpdate {
                    request,
                    at: self.now,
                    live,
                    send,
                    len,
                });
        }
    }

    /// A queue notice ("⏳ ... (position N)") must tell the message's place
    /// in its context's queue as the store holds it now.
    fn check_position(&mut self, content: &surfaces_embed::MessageContent) {
        let Some(n) = content
            .body
            .strip_prefix('⏳')
            .and_then(|b| b.split("(position ").nth(1))
            .and_then(|b| b.split(')').next())
            .and_then(|n| n.parse::<usize>().ok())
        else {
            return;
        };
        let Some(target) = content.reply_to.as_deref() else {
            return;
        };
        let place = self
            .kv
            .keys("ctx/")
            .unwrap_or_default()
            .into_iter()
            .find_map(|k| {
                let bytes = self.kv.get(&k).ok()??;
                let ctx: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
                ctx.get("queue")?
                    .as_array()?
                    .iter()
                    .position(|q| q.get("event_id").and_then(|e| e.as_str()) == Some(target))
            });
        if let Some(i) = place
            && i + 1 != n
        {
            self.facts.false_positions.push(format!(
                "{target} was told position {n}, its place in the queue is {}",
                i + 1
            ));
        }
    }
}

/// A Matrix effect in a few words, with its request id where it has one.
fn effect_name(effect: &MatrixEffect) -> String {
    match effect {
        MatrixEffect::Send { request, .. } => format!("send #{request}"),
        MatrixEffect::SendAttachment { request, .. } => format!("file #{request}"),
        MatrixEffect::Edit { request, .. } => format!("edit #{request}"),
        MatrixEffect::React { request, .. } => format!("reaction #{request}"),
        MatrixEffect::Join { request, .. } => format!("join #{request}"),
        MatrixEffect::Leave { request, .. } => format!("leave #{request}"),
        MatrixEffect::SetTyping { typing, .. } => {
            format!("typing {}", if *typing { "on" } else { "off" })
        }
        MatrixEffect::ReadReceipt { event_id, .. } => format!("read receipt for {event_id}"),
    }
}

impl World<'_> {
    /// The messages from `room` the guest's store still holds, queued,
    /// being answered or with a notice waiting to go: leaving the room, it
    /// drops them, and no answer is owed to them any more.
    pub(super) fn pending_in(&self, room: &str) -> Vec<String> {
        let mut ids = Vec::new();
        for prefix in ["ctx/", "reply/", "out/", "file/"] {
            for key in self.kv.keys(prefix).unwrap_or_default() {
                let Some(record) = self
                    .kv
                    .get(&key)
                    .ok()
                    .flatten()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                else {
                    continue;
                };
                if let Some(serde_json::Value::Array(queue)) = record.get("queue") {
                    ids.extend(queue.iter().filter_map(|m| message_in(m, room)));
                } else if let Some(serde_json::Value::Array(files)) = record.get("files")
                    && record.get("room_id").and_then(|r| r.as_str()) == Some(room)
                {
                    // Files waiting for their sender's text.
                    ids.extend(files.iter().filter_map(|f| {
                        f.get("event_id")
                            .and_then(|e| e.as_str())
                            .map(str::to_string)
                    }));
                } else if let Some(origin) = record.get("origin") {
                    ids.extend(message_in(origin, room));
                } else if record.get("room_id").and_then(|r| r.as_str()) == Some(room)
                    && let Some(to) = record.pointer("/content/reply_to").and_then(|t| t.as_str())
                {
                    // A notice answering it.
                    ids.push(to.to_string());
                }
            }
        }
        ids
    }
}

/// A stored message's event id, if it was sent in `room`.
fn message_in(m: &serde_json::Value, room: &str) -> Option<String> {
    if m.get("room_id").and_then(|r| r.as_str()) != Some(room) {
        return None;
    }
    m.get("event_id")
        .and_then(|e| e.as_str())
        .map(str::to_string)
}
