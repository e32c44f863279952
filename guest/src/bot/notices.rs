//! Notices: command output, queue positions, errors. Each is stored
//! (`out/`) until the homeserver has it, so it goes through rate limits,
//! outages and restarts; a send retried reuses its request id.

use super::pump::{MAX_FAILURES, MAX_RETRY_AFTER_MS, backoff};
use super::{Bot, Place};
use crate::host::Host;
use crate::render;
use crate::state::{
    Outgoing, Records, Route, StoredContent, TimerPurpose, out_key, route_key, timer_key,
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
        let to = to.into();
        let mentions = if to.is_direct {
            Vec::new()
        } else {
            vec![to.sender.to_string()]
        };
        self.send_notice(
            host,
            to.room_id,
            text,
            Some(to.event_id),
            to.thread_root,
            mentions,
        )
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
        let content = MessageContent {
            body: text.to_string(),
            formatted_body: render::to_html(text),
            notice: true,
            live: false,
            thread_root: thread_root.map(str::to_string),
            reply_to: reply_to.map(str::to_string),
            mentions,
        };
        let req = host.next_id()?;
        host.save(
            &out_key(req),
            &Outgoing {
                room_id: room_id.to_string(),
                content: StoredContent::from(&content),
                attempts: 1,
                unknown_failures: 0,
                hold_ms: 0,
                file: None,
            },
        )?;
        host.save(&route_key(req), &Route::Notice)?;
        host.send(req, room_id, &content);
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
            // Its route is gone if a restart came between (recovery drops
            // the last run's routes).
            host.save(&route_key(request), &Route::Notice)?;
            super::files::send_outgoing(host, request, &out);
        }
        Ok(())
    }
}
