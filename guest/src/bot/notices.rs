//! Notices: command output, queue positions, errors. Each is stored
//! (`out/`) until the homeserver has it, so it goes through rate limits,
//! outages and restarts; a send retried reuses its request id.

use super::pump::{MAX_FAILURES, MAX_RETRY_AFTER_MS, backoff};
use super::{Bot, Place};
use crate::host::Host;
use crate::rate::Spend;
use crate::render;
use crate::state::{
    Contexts, Outgoing, QueuePlace, Records, Route, StoredContent, TimerPurpose, out_key,
    route_key, timer_key,
};
use crate::types::{LogLevel, MatrixErrorKind, MatrixResult, MessageContent};

impl Bot {
    /// Answer a message (one just in, or one from a queue) with a notice,
    /// in its thread; in a group room it mentions the sender.
    pub(super) fn notice<'a>(
        &mut self,
        host: &mut dyn Host,
        to: impl Into<Place<'a>>,
        text: &str,
    ) -> Result<(), String> {
        self.notice_at(host, to.into(), text, None)
    }

    /// A notice telling a message its place in a queue: checked again
    /// when it goes.
    pub(super) fn queue_notice<'a>(
        &mut self,
        host: &mut dyn Host,
        to: impl Into<Place<'a>>,
        text: &str,
        place: QueuePlace,
    ) -> Result<(), String> {
        self.notice_at(host, to.into(), text, Some(place))
    }

    fn notice_at(
        &mut self,
        host: &mut dyn Host,
        to: Place<'_>,
        text: &str,
        place: Option<QueuePlace>,
    ) -> Result<(), String> {
        let mentions = if to.is_direct {
            Vec::new()
        } else {
            vec![to.sender.to_string()]
        };
        let content = notice_content(text, Some(to.event_id), to.thread_root, mentions);
        self.post(host, to.room_id, &content, place)
    }

    pub(super) fn send_notice(
        &mut self,
        host: &mut dyn Host,
        room_id: &str,
        text: &str,
        reply_to: Option<&str>,
        thread_root: Option<&str>,
        mentions: Vec<String>,
    ) -> Result<(), String> {
        let content = notice_content(text, reply_to, thread_root, mentions);
        self.post(host, room_id, &content, None)
    }

    /// Store a notice and send it (when the rate budget allows).
    fn post(
        &mut self,
        host: &mut dyn Host,
        room_id: &str,
        content: &MessageContent,
        place: Option<QueuePlace>,
    ) -> Result<(), String> {
        let req = host.next_id()?;
        let out = Outgoing {
            room_id: room_id.to_string(),
            content: StoredContent::from(content),
            attempts: 1,
            unknown_failures: 0,
            hold_ms: 0,
            file: None,
            place,
        };
        host.save(&out_key(req), &out)?;
        self.transmit(host, req, &out)
    }

    /// Send the queue notices this call stored.
    pub(super) fn send_placed(&mut self, host: &mut dyn Host) -> Result<(), String> {
        for req in std::mem::take(&mut self.placed) {
            if let Some(out) = host.load(&out_key(req))? {
                self.transmit_now(host, req, &out)?;
            }
        }
        Ok(())
    }

    /// A queue notice about to go, told its place as it is now: `None`
    /// if the message has left the queue (its reply or its notice answers
    /// it now).
    fn placed_now(
        host: &mut dyn Host,
        req: u64,
        out: &Outgoing,
    ) -> Result<Option<Outgoing>, String> {
        let Some(place) = &out.place else {
            return Ok(Some(out.clone()));
        };
        let ctx = host.context(&place.context_id)?;
        let Some(i) = ctx.queue.iter().position(|q| q.event_id == place.event_id) else {
            host.remove(&out_key(req));
            host.remove(&route_key(req));
            return Ok(None);
        };
        if i == place.index {
            return Ok(Some(out.clone()));
        }
        let now = (place.position + i).saturating_sub(place.index);
        let (was, is) = (
            format!("(position {})", place.position),
            format!("(position {now})"),
        );
        let mut out = out.clone();
        out.content.body = out.content.body.replacen(&was, &is, 1);
        out.content.formatted_body = out.content.formatted_body.map(|f| f.replacen(&was, &is, 1));
        if let Some(p) = &mut out.place {
            p.index = i;
            p.position = now;
        }
        host.save(&out_key(req), &out)?;
        Ok(Some(out))
    }

    /// Send a stored notice or file now if the homeserver's rate budget
    /// allows it while leaving every open reply its final text, else when
    /// it will.
    /// (A queue notice goes at the end of the call, which may still move
    /// the queue.)
    pub(super) fn transmit(
        &mut self,
        host: &mut dyn Host,
        req: u64,
        out: &Outgoing,
    ) -> Result<(), String> {
        if out.place.is_some() {
            self.placed.push(req);
            return Ok(());
        }
        self.transmit_now(host, req, out)
    }

    fn transmit_now(
        &mut self,
        host: &mut dyn Host,
        req: u64,
        out: &Outgoing,
    ) -> Result<(), String> {
        let Some(out) = Self::placed_now(host, req, out)? else {
            return Ok(());
        };
        let now = host.now();
        let open = self.replies.open_count(host);
        let wait = self.rate.wait_ms(now, Spend::Answer, open).unwrap_or(0);
        if wait > 0 {
            let timer = host.next_id()?;
            host.save(&timer_key(timer), &TimerPurpose::Resend { request: req })?;
            host.set_timer(timer, wait);
            return Ok(());
        }
        host.save(&route_key(req), &Route::Notice)?;
        self.spend_into(&out.room_id, now);
        super::files::send_outgoing(host, req, &out);
        Ok(())
    }

    pub(super) fn on_notice_result(
        &mut self,
        host: &mut dyn Host,
        r: &MatrixResult,
    ) -> Result<(), String> {
        let Some(mut out) = host.load(&out_key(r.request))? else {
            return Ok(());
        };
        let err = match &r.outcome {
            Ok(_) => {
                host.remove(&out_key(r.request));
                host.remove(&route_key(r.request));
                return Ok(());
            }
            Err(e) => e,
        };
        let delay = match err.kind {
            MatrixErrorKind::RateLimited => {
                err.retry_after_ms.unwrap_or(1000).min(MAX_RETRY_AFTER_MS)
            }
            // An outage passes: the notice waits for it.
            MatrixErrorKind::Unavailable => backoff(out.attempts),
            MatrixErrorKind::Other if out.unknown_failures < MAX_FAILURES => {
                out.unknown_failures += 1;
                backoff(out.attempts)
            }
            _ => {
                host.log(
                    LogLevel::Error,
                    &format!(
                        "giving up {} to {} after {} attempts: {:?} {}",
                        if out.file.is_some() {
                            "a file"
                        } else {
                            "a notice"
                        },
                        out.room_id,
                        out.attempts,
                        err.kind,
                        err.message
                    ),
                );
                host.remove(&out_key(r.request));
                host.remove(&route_key(r.request));
                // The agent's file cannot go (too large for the homeserver,
                // no longer kept): its place in the room says so.
                if out.file.is_some()
                    && !crate::planted::on(crate::planted::Bug::AgentFileLostSilently)
                {
                    let content = MessageContent::from(&out.content);
                    let text = format!(
                        "📎 {} could not be sent: {}",
                        content.body, // a file's message is its name
                        super::cut(&err.message, 2 * super::ECHO_MAX)
                    );
                    self.send_notice(
                        host,
                        &out.room_id,
                        &text,
                        content.reply_to.as_deref(),
                        content.thread_root.as_deref(),
                        content.mentions,
                    )?;
                }
                return Ok(());
            }
        };
        // A rate limit is no failure: only failures count toward giving up
        // (a notice waits behind a long reply's edits as long as it must).
        if err.kind == MatrixErrorKind::RateLimited {
            out.hold_ms = delay;
        } else {
            out.attempts += 1;
        }
        host.save(&out_key(r.request), &out)?;
        let timer = host.next_id()?;
        host.save(
            &timer_key(timer),
            &TimerPurpose::Resend { request: r.request },
        )?;
        host.set_timer(timer, delay);
        Ok(())
    }

    /// Send a notice again after a 429 or a failure.
    pub(super) fn on_resend_timer(
        &mut self,
        host: &mut dyn Host,
        id: u64,
        request: u64,
    ) -> Result<(), String> {
        host.remove(&timer_key(id));
        if let Some(out) = host.load(&out_key(request))? {
            self.transmit(host, request, &out)?;
        }
        Ok(())
    }
}

/// A notice's content: plain text rendered as Markdown, not live.
fn notice_content(
    text: &str,
    reply_to: Option<&str>,
    thread_root: Option<&str>,
    mentions: Vec<String>,
) -> MessageContent {
    MessageContent {
        body: text.to_string(),
        formatted_body: render::to_html(text),
        notice: true,
        live: false,
        thread_root: thread_root.map(str::to_string),
        reply_to: reply_to.map(str::to_string),
        mentions,
    }
}
