//! The terminal front end: talk to the bot from a shell, no homeserver.
//!
//! Each line read is a message from `@you:localhost` in a direct room; the
//! bot's messages are printed, and a streamed reply grows in place as its
//! edits arrive (only the new text is printed). End of input shuts the bot
//! down gracefully, so `echo hello | surfaces run` prints one full answer.

use std::collections::HashMap;
use std::io::Write;

use surfaces_embed::{EditTarget, Event, MatrixEffect, MatrixResult, RoomMessage};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::channels::EventSender;
use crate::front::FrontEnd;
use crate::time::now_ms;

pub const ROOM: &str = "!terminal:localhost";
pub const USER: &str = "@you:localhost";

/// Prints the bot's side of the conversation.
pub struct Terminal<W: Write + Send> {
    events: EventSender,
    out: W,
    /// Distinguishes this run's event ids from earlier runs'.
    run: u64,
    next_event: u64,
    /// Request id -> event id of the messages the bot sent.
    sent: HashMap<u64, String>,
    /// Event id -> the text shown so far.
    shown: HashMap<String, String>,
    /// The event whose text is being streamed on the current line.
    open_line: Option<String>,
}

impl<W: Write + Send> Terminal<W> {
    pub fn new(events: EventSender, out: W) -> Self {
        Terminal {
            events,
            out,
            run: now_ms(),
            next_event: 0,
            sent: HashMap::new(),
            shown: HashMap::new(),
            open_line: None,
        }
    }

    fn answer(&self, request: u64, outcome: Result<String, surfaces_embed::MatrixError>) {
        let _ = self
            .events
            .send(Event::MatrixResult(MatrixResult { request, outcome }));
    }

    fn event_id(&mut self) -> String {
        self.next_event += 1;
        format!("$bot{}.{}", self.run, self.next_event)
    }

    fn end_line(&mut self) {
        if self.open_line.take().is_some() {
            let _ = writeln!(self.out);
        }
    }

    fn show(&mut self, event_id: &str, body: &str, live: bool) {
        let before = self.shown.get(event_id).cloned().unwrap_or_default();
        let same_line = self.open_line.as_deref() == Some(event_id);
        if same_line && body.starts_with(&before) {
            let _ = write!(self.out, "{}", &body[before.len()..]);
        } else {
            self.end_line();
            let edited = if before.is_empty() { "" } else { " (edited)" };
            let _ = write!(self.out, "bot{edited}: {body}");
            self.open_line = Some(event_id.to_string());
        }
        self.shown.insert(event_id.to_string(), body.to_string());
        if !live {
            self.end_line();
        }
        let _ = self.out.flush();
    }
}

impl<W: Write + Send> FrontEnd for Terminal<W> {
    fn execute(&mut self, effect: MatrixEffect) {
        match effect {
            MatrixEffect::Send {
                request, content, ..
            } => {
                let event_id = self.event_id();
                self.show(&event_id, &content.body, content.live);
                self.sent.insert(request, event_id.clone());
                self.answer(request, Ok(event_id));
            }
            MatrixEffect::Edit {
                request,
                target,
                content,
                ..
            } => {
                let original = match target {
                    EditTarget::Request(r) => self.sent.get(&r).cloned(),
                    EditTarget::Event(e) => Some(e),
                };
                match original {
                    Some(event_id) => {
                        self.show(&event_id, &content.body, content.live);
                        let id = self.event_id();
                        self.answer(request, Ok(id));
                    }
                    None => self.answer(
                        request,
                        Err(surfaces_embed::MatrixError {
                            kind: surfaces_embed::MatrixErrorKind::NotFound,
                            message: "edit of a message that was never sent".into(),
                            retry_after_ms: None,
                        }),
                    ),
                }
            }
            MatrixEffect::React {
                request,
                event_id,
                key,
                ..
            } => {
                self.end_line();
                let _ = writeln!(self.out, "bot reacts {key} to {event_id}");
                let id = self.event_id();
                self.answer(request, Ok(id));
            }
            MatrixEffect::Join { request, room_id } | MatrixEffect::Leave { request, room_id } => {
                self.answer(request, Ok(room_id));
            }
            // The terminal keeps no files: the guest hears so at once.
            MatrixEffect::SendAttachment { request, .. } => self.answer(
                request,
                Err(surfaces_embed::MatrixError {
                    kind: surfaces_embed::MatrixErrorKind::NotFound,
                    message: "the terminal shows no files".into(),
                    retry_after_ms: None,
                }),
            ),
            // Typing and receipts have no place in a terminal.
            MatrixEffect::SetTyping { .. } | MatrixEffect::ReadReceipt { .. } => {}
        }
    }
}

/// Read lines from stdin as messages until end of input; then return.
pub async fn read_stdin(events: EventSender) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    // Event ids must not repeat across runs: the store outlives a run.
    let run = now_ms();
    let mut n = 0u64;
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                let body = line.trim_end().to_string();
                if body.is_empty() {
                    continue;
                }
                n += 1;
                let message = RoomMessage {
                    room_id: ROOM.into(),
                    event_id: format!("$you{run}.{n}"),
                    sender: USER.into(),
                    sender_display_name: Some("you".into()),
                    body,
                    thread_root: None,
                    reply_to: None,
                    is_direct: true,
                    mentions_bot: false,
                    is_notice: false,
                    origin_server_ts: now_ms(),
                    attachments: Vec::new(),
                };
                if events.send(Event::Message(message)).is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("reading the terminal: {e}");
                return;
            }
        }
    }
}
