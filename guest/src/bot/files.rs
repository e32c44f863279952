//! Files to and from the agent.
//!
//! Clients send a file and the question about it as two messages: a file
//! sent without text waits (`attachment_wait_ms`) for its sender's next
//! text in the same place, which takes it to the agent; if none comes, a
//! file that was for the bot (in a direct chat, mentioning it, replying to
//! it) goes alone, and one that was not is forgotten. A file larger than
//! the host passes to the agent is refused in words at once (the text
//! still goes). The bytes stay with the host: the guest passes ids.
//!
//! Files the agent sends with a reply follow the reply's text, once it is
//! shown, as messages of their own in its thread (notices' delivery: they
//! go through rate limits, outages and restarts).

use surfaces_contract::human_bytes;

use super::{Bot, Place};
use crate::host::Host;
use crate::state::{
    Attached, FileKind, HELD, Held, Outgoing, Queued, Records, Reply, StoredContent, TimerPurpose,
    held_key, out_key, timer_key,
};
use crate::types::{
    AgentAttachment, Attachment, AttachmentContent, LogLevel, Media, MediaKind, MessageContent,
    RoomMessage,
};

/// A file as the guest keeps it.
pub(super) fn attached(event_id: &str, m: &Media) -> Attached {
    Attached {
        event_id: event_id.to_string(),
        id: m.id.clone(),
        name: m.name.clone(),
        mime: m.mime.clone(),
        size: m.size,
        kind: match m.kind {
            MediaKind::Image => FileKind::Image,
            MediaKind::File => FileKind::File,
            MediaKind::Audio => FileKind::Audio,
            MediaKind::Voice => FileKind::Voice,
            MediaKind::Video => FileKind::Video,
        },
    }
}

/// A file as the agent gets it: the host turns the id into its bytes.
/// `files` as the agent sees them, each under its own name (see
/// [`agent_names`]).
pub(super) fn for_agent(files: &[Attached]) -> Vec<Attachment> {
    files
        .iter()
        .zip(agent_names(files))
        .map(|(f, name)| Attachment {
            name,
            mime: f.mime.clone(),
            url: f.id.clone(),
        })
        .collect()
}

/// The names `files` go to the agent under: a name met before gets " (2)",
/// " (3)", ... before its extension (phones call every photo image.jpg), so
/// the agent and the host's errors tell the files apart.
pub fn agent_names(files: &[Attached]) -> Vec<String> {
    let mut names: Vec<String> = Vec::with_capacity(files.len());
    for f in files {
        let (stem, ext) = match f.name.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() => (stem, format!(".{ext}")),
            _ => (f.name.as_str(), String::new()),
        };
        let mut name = f.name.clone();
        let mut n = 1;
        while names.contains(&name) {
            n += 1;
            name = format!("{stem} ({n}){ext}");
        }
        names.push(name);
    }
    names
}

impl Bot {
    /// Files that came with a message. Those too large are refused in words
    /// (when the message was for the bot); the others go with its caption
    /// when it has one for the agent (returned), or wait for a text.
    pub(super) fn on_files(
        &mut self,
        host: &mut dyn Host,
        m: &RoomMessage,
        for_bot: bool,
        with_caption: bool,
    ) -> Result<Vec<Attached>, String> {
        let max = self.info.max_attachment_bytes;
        let (fits, refused): (Vec<Attached>, Vec<Attached>) = m
            .attachments
            .iter()
            .map(|a| attached(&m.event_id, a))
            .partition(|f| f.size.is_none_or(|n| n <= max));
        if for_bot && !refused.is_empty() {
            self.refuse_files(host, m, &refused, with_caption)?;
        }
        // Not yet for the bot: files wait for a text that is, the refused
        // ones too (that text says so).
        let refused = if for_bot { Vec::new() } else { refused };
        if with_caption || (fits.is_empty() && refused.is_empty()) {
            return Ok(fits);
        }
        let key = held_key(&m.room_id, m.thread_root.as_deref(), &m.sender);
        let mut held = match host.load(&key)? {
            Some(h) => h,
            None => {
                let timer = host.next_id()?;
                host.save(
                    &timer_key(timer),
                    &TimerPurpose::Files {
                        key: key.as_str().to_string(),
                    },
                )?;
                Held {
                    room_id: m.room_id.clone(),
                    sender: m.sender.clone(),
                    display_name: m.sender_display_name.clone(),
                    thread_root: m.thread_root.clone(),
                    is_direct: m.is_direct,
                    files: Vec::new(),
                    addressed: false,
                    timer,
                    refused: Vec::new(),
                }
            }
        };
        held.files.extend(fits);
        held.refused.extend(refused);
        held.addressed |= for_bot;
        // Each file starts the wait again: a few sent in a row wait for
        // the text after the last.
        host.set_timer(held.timer, self.cfg.attachment_wait_ms);
        host.save(&key, &held)?;
        Ok(Vec::new())
    }

    /// A notice naming files too large for the agent.
    fn refuse_files<'a>(
        &mut self,
        host: &mut dyn Host,
        to: impl Into<Place<'a>>,
        refused: &[Attached],
        text_goes: bool,
    ) -> Result<(), String> {
        let names = refused
            .iter()
            .map(|f| {
                let size = f.size.map(human_bytes).unwrap_or_default();
                format!("{} ({size})", f.name)
            })
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            "📎 {names}: too large for the agent, which takes files up to {}. It was not \
             sent{}.",
            human_bytes(self.info.max_attachment_bytes),
            if text_goes { "; your text was" } else { "" }
        );
        self.notice(host, to, &text)
    }

    /// The files its sender sent just before this text `m`, in this place
    /// (those too large are refused in words now, the text being for the
    /// bot).
    pub(super) fn take_held(
        &mut self,
        host: &mut dyn Host,
        m: &RoomMessage,
        thread_root: Option<&str>,
    ) -> Result<Vec<Attached>, String> {
        let key = held_key(&m.room_id, thread_root, &m.sender);
        let Some(held) = host.load(&key)? else {
            return Ok(Vec::new());
        };
        host.cancel_timer(held.timer);
        host.remove(&timer_key(held.timer));
        host.remove(&key);
        if !held.refused.is_empty() {
            self.refuse_files(host, m, &held.refused, true)?;
        }
        if crate::planted::on(crate::planted::Bug::HeldFileDropped) {
            return Ok(Vec::new());
        }
        Ok(held.files)
    }

    /// A file deleted while it waited for its text goes nowhere: the
    /// sender took it back. Whether `target` was such a file.
    pub(super) fn unhold(
        &mut self,
        host: &mut dyn Host,
        room_id: &str,
        target: &str,
    ) -> Result<bool, String> {
        if crate::planted::on(crate::planted::Bug::DeletedFileSent) {
            return Ok(false);
        }
        for key in host.scan(&HELD) {
            let Some(mut held) = host.load(&key)? else {
                continue;
            };
            let before = held.files.len() + held.refused.len();
            if held.room_id != room_id {
                continue;
            }
            held.files.retain(|f| f.event_id != target);
            held.refused.retain(|f| f.event_id != target);
            if held.files.len() + held.refused.len() == before {
                continue;
            }
            if held.files.is_empty() && held.refused.is_empty() {
                host.cancel_timer(held.timer);
                host.remove(&timer_key(held.timer));
                host.remove(&key);
            } else {
                host.save(&key, &held)?;
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// No text came: files that were for the bot go to the agent alone.
    pub(super) fn on_files_timer(
        &mut self,
        host: &mut dyn Host,
        id: u64,
        key: &str,
    ) -> Result<(), String> {
        host.remove(&timer_key(id));
        let key: crate::state::Key<Held> = crate::state::Key::new(key.to_string());
        let Some(held) = host.load(&key)? else {
            return Ok(());
        };
        host.remove(&key);
        let Some(first) = held.files.first() else {
            return Ok(());
        };
        if !held.addressed {
            host.log(
                LogLevel::Debug,
                &format!(
                    "files from {} in {} not for the bot: forgotten",
                    held.sender, held.room_id
                ),
            );
            return Ok(());
        }
        let m = RoomMessage {
            room_id: held.room_id.clone(),
            event_id: first.event_id.clone(),
            sender: held.sender.clone(),
            sender_display_name: held.display_name.clone(),
            body: String::new(),
            thread_root: held.thread_root.clone(),
            reply_to: None,
            is_direct: held.is_direct,
            mentions_bot: !held.is_direct,
            is_notice: false,
            origin_server_ts: host.now(),
            attachments: Vec::new(),
        };
        let thread_root = match (self.cfg.scope, &held.thread_root) {
            (crate::config::Scope::Thread, None) => Some(first.event_id.clone()),
            (_, t) => t.clone(),
        };
        let q = Queued {
            room_id: held.room_id,
            event_id: first.event_id.clone(),
            sender: held.sender,
            display_name: held.display_name,
            text: String::new(),
            thread_root,
            is_direct: held.is_direct,
            attempts: 0,
            with: Vec::new(),
            files: held.files,
            queued_ms: cfg!(feature = "next-schema").then(|| host.now()),
        };
        self.enqueue(host, &m, q)
    }

    /// After a host start: the waits of held files start again (timers die
    /// with the host).
    pub(super) fn rearm_held(&mut self, host: &mut dyn Host) -> Result<(), String> {
        for key in host.scan(&HELD) {
            if let Some(held) = host.load(&key)? {
                host.save(
                    &timer_key(held.timer),
                    &TimerPurpose::Files {
                        key: key.as_str().to_string(),
                    },
                )?;
                host.set_timer(held.timer, self.cfg.attachment_wait_ms);
            }
        }
        Ok(())
    }

    /// A file the agent sent with reply `req`: kept with the reply.
    pub(super) fn on_agent_attachment(
        &mut self,
        host: &mut dyn Host,
        a: AgentAttachment,
    ) -> Result<(), String> {
        let found = self.with_reply(host, a.request, |_, _, r| {
            if r.ending.is_some() || r.abandoned {
                return Ok(super::Fate::Untouched);
            }
            r.files.push(attached("", &a.media));
            Ok(super::Fate::Keep)
        })?;
        if !found {
            host.log(
                LogLevel::Warn,
                &format!("a file for reply {} that is over: dropped", a.request),
            );
        }
        Ok(())
    }

    /// The reply's text is shown: its files follow, each a message of its
    /// own in the reply's thread, answering the question.
    pub(super) fn send_files(&mut self, host: &mut dyn Host, r: &Reply) -> Result<(), String> {
        if r.abandoned {
            return Ok(());
        }
        let to = Place::from(r.origin.get());
        for f in &r.files {
            let content = MessageContent {
                body: f.name.clone(),
                formatted_body: None,
                notice: false,
                live: false,
                thread_root: to.thread_root.map(str::to_string),
                reply_to: Some(to.event_id.to_string()),
                mentions: Vec::new(),
            };
            let out = Outgoing {
                room_id: to.room_id.to_string(),
                content: StoredContent::from(&content),
                attempts: 1,
                unknown_failures: 0,
                hold_ms: 0,
                file: Some(f.id.clone()),
                place: None,
            };
            let req = host.next_id()?;
            host.save(&out_key(req), &out)?;
            self.transmit(host, req, &out)?;
        }
        Ok(())
    }
}

/// Drop the file a host's `attachment` error names (its message starts
/// with the file's name, as `surfaces_embed::media` words it), or every
/// file when it names none of them.
pub fn drop_failed(files: &mut Vec<Attached>, message: &str) {
    let names = agent_names(files);
    // The longest name the error starts with: "a b.png is ..." is not
    // about "a".
    let failed = names
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            message.starts_with(&format!("{n} "))
                || message.starts_with(&format!("could not fetch {n}:"))
        })
        .max_by_key(|(_, n)| n.len())
        .map(|(i, _)| i);
    match failed {
        // Past the count a message takes: that file and those after it.
        Some(i) if message.contains(" files one message takes") => files.truncate(i),
        Some(i) => {
            files.remove(i);
        }
        None => files.clear(),
    }
}

/// Send (or send again) a stored notice or file.
pub(super) fn send_outgoing(host: &mut dyn Host, req: u64, out: &Outgoing) {
    let content = MessageContent::from(&out.content);
    match &out.file {
        Some(media) => host.send_attachment(
            req,
            &out.room_id,
            &AttachmentContent {
                media: media.clone(),
                thread_root: content.thread_root,
                reply_to: content.reply_to,
            },
        ),
        None => host.send(req, &out.room_id, &content),
    }
}
