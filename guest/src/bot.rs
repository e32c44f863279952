//! The conversation state machine.
//!
//! Flow of one user message: `on_message` decides whether the bot is
//! addressed, answers commands at once, and puts other text in its context's
//! queue. `start_next` hands the queue's head to the agent and opens a
//! [`Reply`]. Agent chunks append to the reply's text; `pump` turns the text
//! into one Matrix message (several, past one event's capacity) that is sent
//! once and then edited in place, at most once per `edit_interval_ms`, one
//! request at a time. The agent's end (or error) closes the reply; the final
//! edit drops the live marker and carries the whole text.

use std::collections::BTreeMap;

use crate::commands::{self, Command};
use crate::config::{Config, Scope};
use crate::host::Host;
use crate::render;
use crate::state::*;
use crate::types::{
    AgentEnd, AgentError, AgentErrorKind, AgentMessage, AgentStatus, ConnectionState, EditTarget,
    Event, GuestInfo, HostInfo, Invite, LogLevel, MatrixErrorKind, MatrixResult, MembersChanged,
    MessageContent, ReloadResult, RoomMessage, Sender,
};

/// How long a typing notice lasts; renewed before it runs out.
const TYPING_TIMEOUT_MS: u32 = 30_000;
const TYPING_RENEW_MS: u64 = 20_000;
/// Failures (other than 429) of one message before it is given up.
const MAX_FAILURES: u32 = 8;
/// Times a message is sent again after the connection dropped before the
/// agent answered it.
const MAX_LOST: u32 = 3;
/// A homeserver's `retry_after_ms` is trusted up to this.
const MAX_RETRY_AFTER_MS: u64 = 10 * 60 * 1000;
/// Smallest event budget we shrink to after a 413.
const MIN_BUDGET: usize = 8 * 1024;
/// Echoed user input (command names, agent messages) is cut to this.
const ECHO_MAX: usize = 64;
/// The `reload-result` request id of swaps the host started on its own.
const HOST_RELOAD: u64 = 0;

pub struct Bot {
    cfg: Config,
    info: HostInfo,
    /// Reply texts, rebuilt from their chunks when missing.
    texts: BTreeMap<u64, String>,
    /// Reply records as last kept, so a chunk costs no decoding (see
    /// [`Bot::take_reply`]).
    replies: BTreeMap<u64, Reply>,
    /// Each reply record as it is in the store (text extent zeroed), so an
    /// unchanged record is not written again.
    replies_in_store: BTreeMap<u64, Reply>,
    /// When this instance last pruned the record of messages seen.
    seen_pruned_ms: Option<u64>,
}

/// How long a message's id is remembered: far longer than any redelivery
/// (a sync batch replayed after a crash, a gap filled after a restart).
const SEEN_KEEP_MS: u64 = 3 * 24 * 3600 * 1000;
const SEEN_PRUNE_EVERY_MS: u64 = 3600 * 1000;
const SEEN_PRUNE_MAX: usize = 256;

impl Bot {
    pub fn new(info: HostInfo, host: &mut dyn Host) -> Result<Bot, String> {
        let cfg = Config::parse(&info.settings)?;
        if info.max_event_bytes < 8 * 1024 {
            return Err(format!(
                "max-event-bytes {} is too small to stream replies",
                info.max_event_bytes
            ));
        }
        host.log(
            LogLevel::Info,
            &format!(
                "surfaces-guest {} ready ({}, scope {:?})",
                env!("CARGO_PKG_VERSION"),
                if info.resumed { "resumed" } else { "fresh" },
                cfg.scope
            ),
        );
        let resumed = info.resumed;
        let mut bot = Bot {
            cfg,
            info,
            texts: BTreeMap::new(),
            replies: BTreeMap::new(),
            replies_in_store: BTreeMap::new(),
            seen_pruned_ms: None,
        };
        if !resumed {
            bot.recover(host)?;
        }
        Ok(bot)
    }

    /// After a host restart: agent requests, timers and Matrix requests of
    /// the previous run are gone. Replies cut by the restart end with a
    /// note (or go back to their queue if nothing was shown), replies that
    /// were finishing are finished, undelivered notices are sent again.
    fn recover(&mut self, host: &mut dyn Host) -> Result<(), String> {
        let mut db = Db { host };
        let mut lost = Vec::new();
        for key in db.host.store_keys("ctx/") {
            let Some(mut ctx) = db.get::<Context>(&key)? else {
                continue;
            };
            ctx.conn = Conn::Unknown;
            ctx.conn_detail = None;
            ctx.retry_timer = None;
            lost.extend(ctx.in_flight);
            db.put(&key, &ctx)?;
        }
        for key in db.host.store_keys("timer/") {
            db.delete(&key);
        }
        for key in db.host.store_keys("route/") {
            db.delete(&key);
        }
        let replies = stored_replies(db.host);
        for req in replies {
            let Some(mut r) = self.take_reply(db.host, req)? else {
                continue;
            };
            r.flush_timer = None;
            r.typing_timer = None;
            r.hold_until = 0;
            for part in &mut r.parts {
                if part.in_flight.take().is_some() && part.event_id.is_none() {
                    // The first send may or may not have landed: its retry
                    // reuses the transaction id, and an edit follows.
                    part.retried = true;
                }
            }
            let open = r.ending.is_none();
            self.keep_reply(db.host, req, r)?;
            if open && !lost.contains(&req) {
                lost.push(req); // a stream no context knew about any more
            }
        }
        for req in lost {
            self.on_agent_error(
                db.host,
                AgentError {
                    request: req,
                    kind: AgentErrorKind::Disconnected,
                    message: "the host restarted".into(),
                },
            )?;
        }
        let mut db = Db { host };
        let replies = stored_replies(db.host);
        for req in replies {
            if let Some(mut r) = self.take_reply(db.host, req)? {
                if self.pump(db.host, req, &mut r)? {
                    self.discard_reply(db.host, req, &r)?;
                } else {
                    self.keep_reply(db.host, req, r)?;
                }
            }
        }
        for key in db.host.store_keys("out/") {
            let Some(req) = key.strip_prefix("out/").and_then(|k| k.parse::<u64>().ok()) else {
                continue;
            };
            if let Some(out) = db.get::<Outgoing>(&key)? {
                db.put(&route_key(req), &Route::Notice)?;
                db.host
                    .send(req, &out.room_id, &MessageContent::from(&out.content));
            }
        }
        Ok(())
    }

    pub fn guest_info(&self) -> GuestInfo {
        GuestInfo {
            name: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    pub fn handle(&mut self, host: &mut dyn Host, event: Event) -> Result<(), String> {
        match event {
            Event::Message(m) => self.on_message(host, m),
            Event::Invite(i) => self.on_invite(host, i),
            Event::MembersChanged(m) => self.on_members(host, m),
            Event::MatrixResult(r) => self.on_matrix_result(host, r),
            Event::AgentChunk(c) => self.on_chunk(host, c.request, &c.text),
            Event::AgentEnd(e) => self.on_end(host, e),
            Event::AgentError(e) => self.on_agent_error(host, e),
            Event::AgentStatus(s) => self.on_status(host, s),
            Event::Timer(id) => self.on_timer(host, id),
            Event::ReloadResult(r) => self.on_reload(host, r),
        }
    }

    // ---- incoming messages -------------------------------------------------

    fn on_message(&mut self, host: &mut dyn Host, mut m: RoomMessage) -> Result<(), String> {
        if m.sender == self.info.bot_user_id || m.is_notice {
            return Ok(());
        }
        let body = m.body.clone();
        let text = self.strip_mention(body.trim());
        let command = text.strip_prefix(self.cfg.command_prefix.as_str());
        let addressed = m.is_direct || m.mentions_bot;
        if !addressed && command.is_none() {
            return Ok(());
        }
        // In a group room, "!word" that is none of our commands is meant for
        // someone else (another bot): stay quiet unless we were mentioned.
        if let Some(rest) = command
            && !addressed
            && matches!(
                commands::parse(rest, &self.cfg.command_prefix),
                Command::Unknown(_)
            )
        {
            return Ok(());
        }
        if self.already_seen(host, &m.event_id)? {
            host.log(
                LogLevel::Debug,
                &format!("{} was handled before: ignored", m.event_id),
            );
            return Ok(());
        }
        if self.cfg.scope == Scope::Thread && m.thread_root.is_none() {
            // Per-thread contexts: a conversation started in the main
            // timeline goes on in a thread rooted at its first message.
            m.thread_root = Some(m.event_id.clone());
        }
        let now = host.now();
        let mut db = Db { host };
        let key = user_key(&m.sender);
        let mut user: User = match db.get(&key)? {
            Some(u) => u,
            None => {
                let name = m
                    .sender_display_name
                    .clone()
                    .unwrap_or_else(|| localpart(&m.sender).to_string());
                let greeting = format!(
                    "👋 Hi {name}! I pass what you write to an AI agent and stream its reply \
                     here. Commands start with `{p}`: send `{p}help` for the list.",
                    p = self.cfg.command_prefix
                );
                self.notice(db.host, &m, &greeting)?;
                User {
                    first_seen_ms: now,
                    ..User::default()
                }
            }
        };
        let mut db = Db { host };
        if m.sender_display_name.is_some() && user.display_name != m.sender_display_name {
            user.display_name = m.sender_display_name.clone();
        }
        if m.is_direct && user.dm_room.as_deref() != Some(m.room_id.as_str()) {
            user.dm_room = Some(m.room_id.clone());
        }
        db.put(&key, &user)?;

        if let Some(rest) = command {
            let cmd = commands::parse(rest, &self.cfg.command_prefix);
            return self.on_command(host, &m, cmd, user);
        }
        if text.is_empty() {
            let hint = format!(
                "Yes? Write your question, or `{}help` for commands.",
                self.cfg.command_prefix
            );
            return self.notice(host, &m, &hint);
        }
        let queued = Queued {
            room_id: m.room_id.clone(),
            event_id: m.event_id.clone(),
            sender: m.sender.clone(),
            display_name: m.sender_display_name.clone(),
            text: text.to_string(),
            thread_root: m.thread_root.clone(),
            is_direct: m.is_direct,
            attempts: 0,
        };
        self.enqueue(host, &m, queued)
    }

    /// Whether the message was handled before (a homeserver or the host may
    /// deliver one twice, e.g. a sync batch replayed after a crash); if
    /// not, remember it, in the same transaction as its handling.
    fn already_seen(&mut self, host: &mut dyn Host, event_id: &str) -> Result<bool, String> {
        let now = host.now();
        let mut db = Db { host };
        if db.get::<u64>(&seen_key(event_id))?.is_some() {
            return Ok(true);
        }
        db.put(&seen_key(event_id), &now)?;
        db.put(&seen_at_key(now, event_id), &())?;
        if self
            .seen_pruned_ms
            .is_none_or(|t| now.saturating_sub(t) >= SEEN_PRUNE_EVERY_MS)
        {
            let cutoff = now.saturating_sub(SEEN_KEEP_MS);
            // Bounded: a backlog (after a long outage) goes over several
            // messages rather than past one call's time budget; the next
            // message goes on while expired records remain.
            let mut done = true;
            for (n, key) in db.host.store_keys(SEEN_AT).into_iter().enumerate() {
                let Some((ms, id)) = key[SEEN_AT.len()..].split_once('/') else {
                    continue;
                };
                if ms.parse::<u64>().is_ok_and(|ms| ms >= cutoff) {
                    break;
                }
                if n == SEEN_PRUNE_MAX {
                    done = false;
                    break;
                }
                db.delete(&seen_key(id));
                db.delete(&key);
            }
            if done {
                self.seen_pruned_ms = Some(now);
            }
        }
        Ok(false)
    }

    /// In a group room people write "bot: question"; drop that address.
    fn strip_mention<'a>(&self, text: &'a str) -> &'a str {
        for name in [&self.info.bot_user_id, &self.info.bot_display_name] {
            if name.is_empty() {
                continue;
            }
            if let Some(rest) = strip_prefix_ci(text, name) {
                let rest = rest.trim_start_matches([':', ',']);
                if rest.is_empty()
                    || rest.starts_with(char::is_whitespace)
                    || rest.len() < text.len() - name.len()
                {
                    return rest.trim_start();
                }
            }
        }
        text
    }

    fn context_id(&self, room_id: &str, thread_root: Option<&str>, event_id: &str) -> String {
        match self.cfg.scope {
            Scope::Shared => "shared".to_string(),
            Scope::Room => format!("room:{room_id}"),
            Scope::Thread => format!("thread:{room_id}:{}", thread_root.unwrap_or(event_id)),
        }
    }

    fn enqueue(&mut self, host: &mut dyn Host, m: &RoomMessage, q: Queued) -> Result<(), String> {
        let ctx_id = self.context_id(&q.room_id, q.thread_root.as_deref(), &q.event_id);
        let mut db = Db { host };
        let mut ctx: Context = db.get(&ctx_key(&ctx_id))?.unwrap_or_default();
        let waiting = !ctx.queue.is_empty()
            || ctx.in_flight.is_some()
            || ctx.retry_timer.is_some()
            || ctx.conn == Conn::Disconnected;
        if waiting && ctx.queue.len() >= self.cfg.queue_limit {
            let text = format!(
                "⚠️ The agent is busy and {} messages are already waiting. \
                 Please send this again in a little while.",
                ctx.queue.len()
            );
            return self.notice(host, m, &text);
        }
        ctx.queue.push_back(q);
        db.put(&ctx_key(&ctx_id), &ctx)?;
        self.start_next(host, &ctx_id)?;
        let mut db = Db { host };
        let ctx: Context = db.get(&ctx_key(&ctx_id))?.unwrap_or_default();
        let Some(position) = ctx.queue.iter().position(|x| x.event_id == m.event_id) else {
            return Ok(()); // on its way to the agent
        };
        let why = if ctx.conn == Conn::Disconnected {
            "The agent is reconnecting"
        } else {
            "The agent is busy"
        };
        let text = format!(
            "⏳ {why}: your message is queued (position {}).",
            position + 1
        );
        self.notice(host, m, &text)
    }

    /// Give the head of the context's queue to the agent, if it is free.
    fn start_next(&mut self, host: &mut dyn Host, ctx_id: &str) -> Result<(), String> {
        let mut db = Db { host };
        let mut ctx: Context = db.get(&ctx_key(ctx_id))?.unwrap_or_default();
        if ctx.in_flight.is_some() || ctx.retry_timer.is_some() || ctx.conn == Conn::Disconnected {
            return Ok(());
        }
        let Some(q) = ctx.queue.pop_front() else {
            return Ok(());
        };
        let req = db.next_id()?;
        let user: User = db.get(&user_key(&q.sender))?.unwrap_or_default();
        let skills = self
            .cfg
            .skills
            .iter()
            .filter(|s| user.skills.get(*s).copied().unwrap_or(false))
            .cloned()
            .collect();
        let message = AgentMessage {
            text: q.text.clone(),
            sender: Sender {
                id: q.sender.clone(),
                display_name: q.display_name.clone(),
            },
            skills,
            attachments: Vec::new(),
        };
        db.host.agent_submit(req, ctx_id, &message);
        db.host.read_receipt(&q.room_id, &q.event_id);
        db.host.set_typing(&q.room_id, true, TYPING_TIMEOUT_MS);
        let typing_timer = db.next_id()?;
        db.put(
            &timer_key(typing_timer),
            &TimerPurpose::Typing { reply: req },
        )?;
        db.host.set_timer(typing_timer, TYPING_RENEW_MS);
        let reply = Reply {
            context_id: ctx_id.to_string(),
            origin: q,
            chunks: 0,
            len: 0,
            ending: None,
            stop_requested: false,
            abandoned: false,
            parts: vec![Part::default()],
            budget: (self.info.max_event_bytes as usize).saturating_sub(render::EDIT_OVERHEAD),
            hold_until: 0,
            failures: 0,
            flush_timer: None,
            typing_timer: Some(typing_timer),
        };
        self.texts.insert(req, String::new());
        self.keep_reply(db.host, req, reply)?;
        ctx.in_flight = Some(req);
        db.put(&ctx_key(ctx_id), &ctx)?;
        Ok(())
    }

    // ---- commands ------------------------------------------------------------

    fn is_admin(&self, user: &str) -> bool {
        self.cfg.admins.iter().any(|a| a == user)
    }

    fn on_command(
        &mut self,
        host: &mut dyn Host,
        m: &RoomMessage,
        cmd: Command,
        user: User,
    ) -> Result<(), String> {
        let p = self.cfg.command_prefix.clone();
        let ctx_id = self.context_id(&m.room_id, m.thread_root.as_deref(), &m.event_id);
        let mut db = Db { host };
        let text = match cmd {
            Command::Help => commands::help(&p, self.is_admin(&m.sender)),
            Command::New => 'new: {
                let mut ctx: Context = db.get(&ctx_key(&ctx_id))?.unwrap_or_default();
                if let Some(req) = ctx.in_flight
                    && let Some(r) = self.take_reply(db.host, req)?
                    && r.origin.sender != m.sender
                    && !self.is_admin(&m.sender)
                {
                    break 'new format!(
                        "A reply for {} is being written in this context: wait for it to \
                         finish, or ask them or an admin to `{p}stop` it.",
                        r.origin.sender
                    );
                }
                let stopped = if let Some(req) = ctx.in_flight {
                    db.host.agent_cancel(&ctx_id);
                    if let Some(mut r) = self.take_reply(db.host, req)? {
                        r.stop_requested = true;
                        self.keep_reply(db.host, req, r)?;
                    }
                    " The reply in progress was stopped."
                } else {
                    ""
                };
                db.host.agent_reset(&ctx_id);
                ctx.tokens = 0;
                ctx.messages = 0;
                ctx.agent_tokens = None;
                db.put(&ctx_key(&ctx_id), &ctx)?;
                format!("🆕 Started a fresh agent context.{stopped}")
            }
            Command::Context => {
                let ctx: Context = db.get(&ctx_key(&ctx_id))?.unwrap_or_default();
                let mut s = format!(
                    "**Context** `{ctx_id}`: {} tokens used over {} since it started.",
                    commands::thousands(ctx.tokens),
                    count(ctx.messages, "message")
                );
                if let Some(t) = ctx.agent_tokens {
                    s.push_str(&format!(
                        " The agent reports {} tokens in its context.",
                        commands::thousands(t)
                    ));
                }
                s
            }
            Command::Usage => format!(
                "**Usage** for {}: {} tokens over {}.",
                m.sender,
                commands::thousands(user.tokens),
                count(user.messages, "message")
            ),
            Command::Stop => {
                let ctx: Context = db.get(&ctx_key(&ctx_id))?.unwrap_or_default();
                match ctx.in_flight {
                    None => "Nothing to stop: no reply is being written.".to_string(),
                    Some(req) => {
                        let Some(mut r) = self.take_reply(db.host, req)? else {
                            return Err(format!("reply {req} in flight has no record"));
                        };
                        if r.origin.sender != m.sender && !self.is_admin(&m.sender) {
                            format!(
                                "Only {} (who asked) or an admin can stop this reply.",
                                r.origin.sender
                            )
                        } else if r.stop_requested {
                            "Already stopping.".to_string()
                        } else {
                            r.stop_requested = true;
                            self.keep_reply(db.host, req, r)?;
                            db.host.agent_cancel(&ctx_id);
                            "⏹️ Stopping the reply.".to_string()
                        }
                    }
                }
            }
            Command::Status => {
                let ctx: Context = db.get(&ctx_key(&ctx_id))?.unwrap_or_default();
                let conn = match ctx.conn {
                    Conn::Unknown => "not connected yet",
                    Conn::Connecting => "connecting",
                    Conn::Ready => "ready",
                    Conn::Busy => "busy",
                    Conn::Disconnected => "disconnected",
                };
                let detail = ctx
                    .conn_detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                let swap = match db.get::<LastReload>(LAST_RELOAD)? {
                    Some(LastReload {
                        outcome: Err(why), ..
                    }) => format!("\n- last swap: refused ({why})"),
                    _ => String::new(),
                };
                format!(
                    "**Status**\n\n\
                     - agent: {conn}{detail}, context `{ctx_id}`\n\
                     - reply in progress: {}\n\
                     - queue: {} waiting\n\
                     - guest: {} {}\n\
                     - host: {}{swap}",
                    if ctx.in_flight.is_some() { "yes" } else { "no" },
                    ctx.queue.len(),
                    env!("CARGO_PKG_NAME"),
                    env!("CARGO_PKG_VERSION"),
                    self.info.host_version
                )
            }
            Command::Skills => {
                if self.cfg.skills.is_empty() {
                    "No skills are configured.".to_string()
                } else {
                    let mut s = String::from("**Your skills**\n\n");
                    for name in &self.cfg.skills {
                        let on = user.skills.get(name).copied().unwrap_or(false);
                        s.push_str(&format!("- `{name}`: {}\n", if on { "on" } else { "off" }));
                    }
                    s.push_str(&format!("\nSwitch one with `{p}skill NAME on|off`."));
                    s
                }
            }
            Command::Skill { name, on } => {
                if self.cfg.skills.contains(&name) {
                    let mut user = user;
                    user.skills.insert(name.clone(), on);
                    db.put(&user_key(&m.sender), &user)?;
                    format!(
                        "Skill `{name}` is now {} for you.",
                        if on { "on" } else { "off" }
                    )
                } else {
                    format!(
                        "There is no skill `{}`. Known skills: {}.",
                        cut(&name, ECHO_MAX),
                        list_or_none(&self.cfg.skills)
                    )
                }
            }
            Command::Reload => {
                if self.is_admin(&m.sender) {
                    let req = db.next_id()?;
                    db.put(
                        &route_key(req),
                        &Route::Reload {
                            room_id: m.room_id.clone(),
                            reply_to: m.event_id.clone(),
                            thread_root: m.thread_root.clone(),
                        },
                    )?;
                    db.host.reload(req);
                    "🔄 Reloading the guest…".to_string()
                } else {
                    "`reload` is for admins only.".to_string()
                }
            }
            Command::Misused(text) => cut(&text, 4 * ECHO_MAX).to_string(),
            Command::Unknown(name) => {
                let mut s = if name.is_empty() {
                    "That is just the command prefix.".to_string()
                } else {
                    format!("Unknown command `{p}{}`.", cut(&name, ECHO_MAX))
                };
                if let Some(near) = commands::suggest(&name) {
                    s.push_str(&format!(" Did you mean `{p}{near}`?"));
                }
                s.push_str(&format!(" Send `{p}help` for the list."));
                s
            }
        };
        self.notice(host, m, &text)
    }

    // ---- notices ------------------------------------------------------------

    /// Answer `m` with a notice (delivered even through rate limits).
    fn notice(&mut self, host: &mut dyn Host, m: &RoomMessage, text: &str) -> Result<(), String> {
        self.notice_in(host, Place::from(m), text)
    }

    fn notice_to(&mut self, host: &mut dyn Host, q: &Queued, text: &str) -> Result<(), String> {
        self.notice_in(host, Place::from(q), text)
    }

    /// A notice replying to a message, in its thread; in a group room it
    /// mentions the sender.
    fn notice_in(&mut self, host: &mut dyn Host, to: Place<'_>, text: &str) -> Result<(), String> {
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

    fn send_notice(
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
        let mut db = Db { host };
        let req = db.next_id()?;
        db.put(
            &out_key(req),
            &Outgoing {
                room_id: room_id.to_string(),
                content: StoredContent::from(&content),
                attempts: 1,
            },
        )?;
        db.put(&route_key(req), &Route::Notice)?;
        db.host.send(req, room_id, &content);
        Ok(())
    }

    fn on_notice_result(&mut self, host: &mut dyn Host, r: &MatrixResult) -> Result<(), String> {
        let mut db = Db { host };
        let Some(mut out) = db.get::<Outgoing>(&out_key(r.request))? else {
            return Ok(());
        };
        let err = match &r.outcome {
            Ok(_) => {
                db.delete(&out_key(r.request));
                db.delete(&route_key(r.request));
                return Ok(());
            }
            Err(e) => e,
        };
        let delay = match err.kind {
            MatrixErrorKind::RateLimited => {
                err.retry_after_ms.unwrap_or(1000).min(MAX_RETRY_AFTER_MS)
            }
            MatrixErrorKind::Unavailable | MatrixErrorKind::Other
                if out.attempts < MAX_FAILURES =>
            {
                backoff(out.attempts)
            }
            _ => {
                db.host.log(
                    LogLevel::Error,
                    &format!(
                        "giving up a notice to {} after {} attempts: {:?} {}",
                        out.room_id, out.attempts, err.kind, err.message
                    ),
                );
                db.delete(&out_key(r.request));
                db.delete(&route_key(r.request));
                return Ok(());
            }
        };
        out.attempts += 1;
        db.put(&out_key(r.request), &out)?;
        let timer = db.next_id()?;
        db.put(
            &timer_key(timer),
            &TimerPurpose::Resend { request: r.request },
        )?;
        db.host.set_timer(timer, delay);
        Ok(())
    }

    // ---- streaming replies ---------------------------------------------------

    fn text(&mut self, host: &mut dyn Host, req: u64) -> &str {
        self.texts.entry(req).or_insert_with(|| {
            let mut s = String::new();
            for key in host.store_keys(&chunk_prefix(req)) {
                if let Some(bytes) = host.store_get(&key) {
                    s.push_str(&String::from_utf8_lossy(&bytes));
                }
            }
            s
        })
    }

    /// The reply record, out of the cache or the store. Its text extent
    /// (`chunks`, `len`) is not stored: it is counted from the chunks, so
    /// a chunk does not rewrite the record. Give it back with
    /// [`Bot::keep_reply`]; one taken and not kept is read again next time.
    fn take_reply(&mut self, host: &mut dyn Host, req: u64) -> Result<Option<Reply>, String> {
        if let Some(r) = self.replies.remove(&req) {
            return Ok(Some(r));
        }
        let key = reply_key(req);
        let Some(bytes) = host.store_get(&key) else {
            return Ok(None);
        };
        let mut r: Reply =
            serde_json::from_slice(&bytes).map_err(|e| format!("corrupt record {key}: {e}"))?;
        self.replies_in_store.insert(req, r.clone());
        r.chunks = host.store_keys(&chunk_prefix(req)).len() as u32;
        r.len = self.text(host, req).len();
        Ok(Some(r))
    }

    /// Store the reply record (unless it is unchanged) and cache it.
    fn keep_reply(&mut self, host: &mut dyn Host, req: u64, mut r: Reply) -> Result<(), String> {
        // Compare without the text extent, which is not stored.
        let extent = (r.chunks, r.len);
        (r.chunks, r.len) = (0, 0);
        if self.replies_in_store.get(&req) != Some(&r) {
            let bytes = serde_json::to_vec(&r).map_err(|e| format!("encode reply {req}: {e}"))?;
            host.store_put(&reply_key(req), &bytes);
            self.replies_in_store.insert(req, r.clone());
        }
        (r.chunks, r.len) = extent;
        self.replies.insert(req, r);
        Ok(())
    }

    fn on_chunk(&mut self, host: &mut dyn Host, req: u64, chunk: &str) -> Result<(), String> {
        let Some(mut r) = self.take_reply(host, req)? else {
            return Ok(()); // a reply we already closed
        };
        if r.ending.is_some() || chunk.is_empty() {
            return self.keep_reply(host, req, r);
        }
        self.text(host, req);
        host.store_put(&chunk_key(req, r.chunks), chunk.as_bytes());
        r.chunks += 1;
        r.len += chunk.len();
        if let Some(t) = self.texts.get_mut(&req) {
            t.push_str(chunk);
        }
        self.pump(host, req, &mut r)?;
        self.keep_reply(host, req, r)
    }

    fn on_end(&mut self, host: &mut dyn Host, e: AgentEnd) -> Result<(), String> {
        let mut db = Db { host };
        let Some(mut r) = self.take_reply(db.host, e.request)? else {
            return Ok(());
        };
        if r.ending.is_some() {
            return Ok(());
        }
        r.ending = Some(if r.stop_requested {
            Ending::Cut("⏹️ *Stopped.*".into())
        } else {
            Ending::Complete
        });
        let ctx_id = r.context_id.clone();
        let mut ctx: Context = db.get(&ctx_key(&ctx_id))?.unwrap_or_default();
        ctx.tokens = ctx.tokens.saturating_add(e.tokens_used);
        ctx.messages = ctx.messages.saturating_add(1);
        ctx.busy_attempts = 0;
        if ctx.in_flight == Some(e.request) {
            ctx.in_flight = None;
        }
        db.put(&ctx_key(&ctx_id), &ctx)?;
        let ukey = user_key(&r.origin.sender);
        let mut user: User = db.get(&ukey)?.unwrap_or_default();
        user.tokens = user.tokens.saturating_add(e.tokens_used);
        user.messages = user.messages.saturating_add(1);
        db.put(&ukey, &user)?;
        self.close_reply(host, e.request, r)?;
        self.start_next(host, &ctx_id)
    }

    fn on_agent_error(&mut self, host: &mut dyn Host, e: AgentError) -> Result<(), String> {
        let mut db = Db { host };
        let Some(r) = self.take_reply(db.host, e.request)? else {
            return Ok(());
        };
        if r.ending.is_some() {
            return Ok(());
        }
        let ctx_id = r.context_id.clone();
        let mut ctx: Context = db.get(&ctx_key(&ctx_id))?.unwrap_or_default();
        if ctx.in_flight == Some(e.request) {
            ctx.in_flight = None;
        }
        db.host.log(
            LogLevel::Warn,
            &format!(
                "agent request {} failed: {:?} {}",
                e.request, e.kind, e.message
            ),
        );
        let nothing_shown = r.chunks == 0 && !r.stop_requested;
        // Refused, or lost before a word: the message goes back to the head
        // of the queue rather than being lost (within limits, so that one
        // message cannot block its queue forever).
        let requeue = nothing_shown
            && match e.kind {
                AgentErrorKind::Busy => ctx.busy_attempts < self.cfg.busy_retries,
                AgentErrorKind::Disconnected => r.origin.attempts < MAX_LOST,
                _ => false,
            };
        if requeue {
            let mut origin = r.origin.clone();
            let first_time = match e.kind {
                AgentErrorKind::Busy => {
                    ctx.busy_attempts += 1;
                    ctx.busy_attempts == 1
                }
                _ => {
                    origin.attempts += 1;
                    origin.attempts == 1
                }
            };
            let attempt = ctx.busy_attempts.max(origin.attempts);
            // Retry after a pause; a `ready` status cuts the pause short.
            let timer = db.next_id()?;
            db.put(
                &timer_key(timer),
                &TimerPurpose::Retry {
                    context_id: ctx_id.clone(),
                },
            )?;
            db.host.set_timer(timer, backoff(attempt));
            if let Some(old) = ctx.retry_timer.replace(timer) {
                db.host.cancel_timer(old);
                db.delete(&timer_key(old));
            }
            ctx.queue.push_front(origin.clone());
            db.put(&ctx_key(&ctx_id), &ctx)?;
            self.discard_reply(host, e.request, &r)?;
            if first_time {
                let text = match e.kind {
                    AgentErrorKind::Busy => {
                        "⏳ The agent is busy: your message is queued (position 1) and will be retried."
                    }
                    _ => {
                        "⏳ The connection to the agent was lost before it answered: \
                         your message is queued and will be sent when it is back."
                    }
                };
                self.notice_to(host, &origin, text)?;
            }
            return Ok(());
        }
        ctx.busy_attempts = 0;
        db.put(&ctx_key(&ctx_id), &ctx)?;
        let p = &self.cfg.command_prefix;
        let note = match e.kind {
            AgentErrorKind::Busy => {
                "⚠️ The agent stayed busy, so your message was not sent. Please try again in a \
                 moment."
                    .to_string()
            }
            AgentErrorKind::Disconnected if r.chunks == 0 && !r.stop_requested => {
                "⚠️ The connection to the agent kept dropping before it answered. Please try \
                 again later."
                    .to_string()
            }
            AgentErrorKind::Disconnected => {
                "⚠️ *Reply incomplete: the connection to the agent was lost.*".to_string()
            }
            AgentErrorKind::Protocol => {
                "⚠️ *Reply incomplete: the agent sent something malformed.*".to_string()
            }
            AgentErrorKind::ContextOverflow => format!(
                "⚠️ The agent's context is full. Send `{p}new` to start a fresh context, then \
                 ask again."
            ),
            AgentErrorKind::BadRequest => format!(
                "⚠️ The agent rejected this message: {}",
                cut(&e.message, 4 * ECHO_MAX)
            ),
            AgentErrorKind::Internal => {
                format!("⚠️ The agent failed: {}", cut(&e.message, 4 * ECHO_MAX))
            }
        };
        let mut r = r;
        r.ending = Some(Ending::Cut(note));
        self.close_reply(host, e.request, r)?;
        self.start_next(host, &ctx_id)
    }

    /// The agent is done with this reply: stop typing, show the final text.
    fn close_reply(&mut self, host: &mut dyn Host, req: u64, mut r: Reply) -> Result<(), String> {
        host.set_typing(&r.origin.room_id, false, 0);
        if let Some(t) = r.typing_timer.take() {
            host.cancel_timer(t);
            host.store_delete(&timer_key(t));
        }
        if self.pump(host, req, &mut r)? {
            return self.discard_reply(host, req, &r);
        }
        self.keep_reply(host, req, r)
    }

    /// Forget a reply and everything stored for it.
    fn discard_reply(&mut self, host: &mut dyn Host, req: u64, r: &Reply) -> Result<(), String> {
        for t in [r.flush_timer, r.typing_timer].into_iter().flatten() {
            host.cancel_timer(t);
            host.store_delete(&timer_key(t));
        }
        if r.typing_timer.is_some() {
            host.set_typing(&r.origin.room_id, false, 0);
        }
        for key in host.store_keys(&chunk_prefix(req)) {
            host.store_delete(&key);
        }
        host.store_delete(&reply_key(req));
        self.texts.remove(&req);
        self.replies.remove(&req);
        self.replies_in_store.remove(&req);
        Ok(())
    }

    /// Bring the reply's messages up to date with its text, within the
    /// throttle and rate limits, one Matrix request in flight at a time.
    /// Returns true once the reply is over and its final text is shown.
    fn pump(&mut self, host: &mut dyn Host, req: u64, r: &mut Reply) -> Result<bool, String> {
        if r.abandoned {
            return Ok(r.ending.is_some());
        }
        if self.text(host, req).len() != r.len {
            // The cache and the store disagree (it should not happen): the
            // store is the truth.
            self.texts.remove(&req);
            let rebuilt = self.text(host, req).len();
            if rebuilt != r.len {
                return Err(format!(
                    "reply {req}: stored text is {rebuilt} bytes, record says {}",
                    r.len
                ));
            }
        }
        // Lend the text out of the cache (no copy per chunk).
        let full = self.texts.remove(&req).unwrap_or_default();
        let result = self.pump_text(host, req, r, &full);
        self.texts.insert(req, full);
        result
    }

    fn pump_text(
        &mut self,
        host: &mut dyn Host,
        req: u64,
        r: &mut Reply,
        full: &str,
    ) -> Result<bool, String> {
        let now = host.now();
        let interval = self.cfg.edit_interval_ms;
        loop {
            let idx = r.parts.len() - 1;
            if r.parts[idx].in_flight.is_some() {
                return Ok(false);
            }
            if now < r.hold_until {
                self.schedule_flush(host, req, r, r.hold_until - now)?;
                return Ok(false);
            }
            let part = &r.parts[idx];
            let (body, is_final) = part_body(r, part, full)?;
            if body.is_empty() && !is_final {
                return Ok(false); // nothing to show yet
            }
            let fp = render::fingerprint(&[body.as_bytes(), &[u8::from(is_final)]]);
            if part.shown == Some(fp) {
                if !is_final {
                    return Ok(false);
                }
                let Some(start) = part.end else {
                    return Ok(true); // the final text is shown
                };
                let note_pending = matches!(r.ending, Some(Ending::Cut(_)));
                if start >= full.len() && !note_pending {
                    // Nothing for a next part (yet): it opens when text comes.
                    return Ok(r.ending.is_some());
                }
                // This part is full and shown: the text goes on in a new one.
                let fence = render::open_fence(&full[..start]);
                r.parts.push(Part {
                    start,
                    fence,
                    ..Part::default()
                });
                continue;
            }
            if let Some(last) = part.last_update
                && now < last + interval
            {
                self.schedule_flush(host, req, r, last + interval - now)?;
                return Ok(false);
            }
            // About to send: freeze the part where it must end if the text
            // no longer fits in one event.
            if part.end.is_none() && !render::fits(&body, part.fence.as_deref(), r.budget) {
                let tail = full.get(part.start..).unwrap_or_default();
                let cut = render::split_point(tail, part.fence.as_deref(), r.budget);
                // A note alone always fits (notes are short, budgets are
                // not): an empty tail needs no split.
                if !tail.is_empty() {
                    r.parts[idx].end = Some(r.parts[idx].start + cut);
                    continue;
                }
            }
            let html = render::to_html(&render::with_fence(part.fence.as_deref(), &body));
            let content = MessageContent {
                body,
                formatted_body: html,
                notice: false,
                live: !is_final,
                thread_root: r.origin.thread_root.clone(),
                reply_to: Some(r.origin.event_id.clone()),
                mentions: if idx == 0 && !r.origin.is_direct {
                    vec![r.origin.sender.clone()]
                } else {
                    Vec::new()
                },
            };
            let room_id = r.origin.room_id.clone();
            let mut db = Db { host: &mut *host };
            let part = &mut r.parts[idx];
            let request = match (&part.event_id, part.send_request) {
                (Some(event_id), _) => {
                    let request = db.next_id()?;
                    let target = EditTarget::Event(event_id.clone());
                    db.host.edit(request, &room_id, &target, &content);
                    request
                }
                (None, Some(request)) => {
                    // A retry of the first send: same request, same
                    // transaction id, so it cannot appear twice.
                    db.host.send(request, &room_id, &content);
                    request
                }
                (None, None) => {
                    let request = db.next_id()?;
                    part.send_request = Some(request);
                    db.host.send(request, &room_id, &content);
                    request
                }
            };
            db.put(&route_key(request), &Route::Part { reply: req })?;
            part.in_flight = Some(Flight {
                request,
                fingerprint: fp,
            });
            part.last_update = Some(now);
            return Ok(false);
        }
    }

    fn schedule_flush(
        &mut self,
        host: &mut dyn Host,
        req: u64,
        r: &mut Reply,
        delay: u64,
    ) -> Result<(), String> {
        let mut db = Db { host };
        let id = match r.flush_timer {
            Some(id) => id,
            None => {
                let id = db.next_id()?;
                db.put(&timer_key(id), &TimerPurpose::Flush { reply: req })?;
                r.flush_timer = Some(id);
                id
            }
        };
        db.host.set_timer(id, delay);
        Ok(())
    }

    fn on_part_result(
        &mut self,
        host: &mut dyn Host,
        reply: u64,
        res: MatrixResult,
    ) -> Result<(), String> {
        let mut db = Db { host };
        db.delete(&route_key(res.request));
        let Some(mut r) = self.take_reply(db.host, reply)? else {
            return Ok(());
        };
        let Some(idx) = r.parts.iter().position(|p| {
            p.in_flight
                .as_ref()
                .is_some_and(|f| f.request == res.request)
        }) else {
            return Ok(()); // stale
        };
        let now = db.host.now();
        let flight = r.parts[idx].in_flight.take();
        match res.outcome {
            Ok(event_id) => {
                let part = &mut r.parts[idx];
                if part.event_id.is_none() {
                    part.event_id = Some(event_id);
                }
                // A retried first send may have landed the first time, with
                // older content (the transaction id returns that event):
                // don't trust it to show this content; an edit follows.
                part.shown = if part.retried {
                    None
                } else {
                    flight.map(|f| f.fingerprint)
                };
                part.retried = false;
                r.failures = 0;
            }
            Err(err) => {
                if r.parts[idx].event_id.is_none() {
                    r.parts[idx].retried = true;
                }
                let abandon = match err.kind {
                    MatrixErrorKind::RateLimited => {
                        let wait = err.retry_after_ms.unwrap_or(1000).min(MAX_RETRY_AFTER_MS);
                        r.hold_until = now.saturating_add(wait);
                        false
                    }
                    MatrixErrorKind::TooLarge => {
                        // Our estimate was off: aim lower and split again.
                        r.budget = (r.budget * 2 / 3).max(MIN_BUDGET);
                        let part = &mut r.parts[idx];
                        part.end = None;
                        r.failures += 1;
                        r.failures > MAX_FAILURES
                    }
                    MatrixErrorKind::Forbidden | MatrixErrorKind::NotFound => true,
                    MatrixErrorKind::Unavailable | MatrixErrorKind::Other => {
                        r.failures += 1;
                        r.hold_until = now.saturating_add(backoff(r.failures));
                        r.failures > MAX_FAILURES
                    }
                };
                if abandon {
                    db.host.log(
                        LogLevel::Error,
                        &format!(
                            "giving up reply {reply} in {}: {:?} {}",
                            r.origin.room_id, err.kind, err.message
                        ),
                    );
                    if r.ending.is_none() {
                        // Keep the record until the agent ends, so its
                        // remaining chunks are recognised and dropped.
                        db.host.agent_cancel(&r.context_id);
                        r.stop_requested = true;
                        r.abandoned = true;
                        return self.keep_reply(db.host, reply, r);
                    }
                    return self.discard_reply(host, reply, &r);
                }
            }
        }
        if self.pump(host, reply, &mut r)? {
            return self.discard_reply(host, reply, &r);
        }
        self.keep_reply(host, reply, r)
    }

    // ---- other events -----------------------------------------------------

    fn on_matrix_result(&mut self, host: &mut dyn Host, r: MatrixResult) -> Result<(), String> {
        let mut db = Db { host };
        match db.get::<Route>(&route_key(r.request))? {
            Some(Route::Part { reply }) => self.on_part_result(host, reply, r),
            Some(Route::Notice) => self.on_notice_result(host, &r),
            Some(Route::Reload { .. }) | Some(Route::Membership) | None => {
                if let Err(e) = &r.outcome {
                    db.host.log(
                        LogLevel::Warn,
                        &format!("request {} failed: {:?} {}", r.request, e.kind, e.message),
                    );
                }
                db.delete(&route_key(r.request));
                Ok(())
            }
        }
    }

    fn on_status(&mut self, host: &mut dyn Host, s: AgentStatus) -> Result<(), String> {
        let mut db = Db { host };
        let key = ctx_key(&s.context_id);
        let mut ctx: Context = db.get(&key)?.unwrap_or_default();
        ctx.conn = match s.state {
            ConnectionState::Connecting => Conn::Connecting,
            ConnectionState::Ready => Conn::Ready,
            ConnectionState::Busy => Conn::Busy,
            ConnectionState::Disconnected => Conn::Disconnected,
        };
        ctx.conn_detail = s.detail;
        if s.context_tokens.is_some() {
            ctx.agent_tokens = s.context_tokens;
        }
        if ctx.conn == Conn::Ready
            && let Some(timer) = ctx.retry_timer.take()
        {
            db.host.cancel_timer(timer);
            db.delete(&timer_key(timer));
        }
        db.put(&key, &ctx)?;
        if ctx.conn != Conn::Disconnected {
            self.start_next(host, &s.context_id)?;
        }
        Ok(())
    }

    fn on_timer(&mut self, host: &mut dyn Host, id: u64) -> Result<(), String> {
        let mut db = Db { host };
        let Some(purpose) = db.get::<TimerPurpose>(&timer_key(id))? else {
            return Ok(());
        };
        match purpose {
            TimerPurpose::Flush { reply } => {
                let Some(mut r) = self.take_reply(db.host, reply)? else {
                    db.delete(&timer_key(id));
                    return Ok(());
                };
                if self.pump(host, reply, &mut r)? {
                    return self.discard_reply(host, reply, &r);
                }
                self.keep_reply(host, reply, r)
            }
            TimerPurpose::Typing { reply } => {
                match self.take_reply(db.host, reply)? {
                    Some(r) if r.ending.is_none() => {
                        db.host
                            .set_typing(&r.origin.room_id, true, TYPING_TIMEOUT_MS);
                        db.host.set_timer(id, TYPING_RENEW_MS);
                    }
                    _ => db.delete(&timer_key(id)),
                }
                Ok(())
            }
            TimerPurpose::Retry { context_id } => {
                db.delete(&timer_key(id));
                let key = ctx_key(&context_id);
                let mut ctx: Context = db.get(&key)?.unwrap_or_default();
                if ctx.retry_timer == Some(id) {
                    ctx.retry_timer = None;
                    db.put(&key, &ctx)?;
                }
                self.start_next(host, &context_id)
            }
            TimerPurpose::Resend { request } => {
                db.delete(&timer_key(id));
                if let Some(out) = db.get::<Outgoing>(&out_key(request))? {
                    db.host
                        .send(request, &out.room_id, &MessageContent::from(&out.content));
                }
                Ok(())
            }
        }
    }

    fn on_invite(&mut self, host: &mut dyn Host, i: Invite) -> Result<(), String> {
        if !self.cfg.auto_join {
            return Ok(());
        }
        let mut db = Db { host };
        let req = db.next_id()?;
        db.put(&route_key(req), &Route::Membership)?;
        db.host.log(
            LogLevel::Info,
            &format!("joining {} on invite from {}", i.room_id, i.inviter),
        );
        db.host.join(req, &i.room_id);
        Ok(())
    }

    fn on_members(&mut self, host: &mut dyn Host, m: MembersChanged) -> Result<(), String> {
        if m.joined <= 1 {
            let mut db = Db { host };
            let req = db.next_id()?;
            db.put(&route_key(req), &Route::Membership)?;
            db.host.log(
                LogLevel::Info,
                &format!("leaving {}: nobody else is here", m.room_id),
            );
            db.host.leave(req, &m.room_id);
        }
        Ok(())
    }

    fn on_reload(&mut self, host: &mut dyn Host, r: ReloadResult) -> Result<(), String> {
        if r.request == HOST_RELOAD {
            return self.on_host_reload(host, r.outcome);
        }
        let mut db = Db { host };
        let Some(Route::Reload {
            room_id,
            reply_to,
            thread_root,
        }) = db.get::<Route>(&route_key(r.request))?
        else {
            return Ok(());
        };
        db.delete(&route_key(r.request));
        let text = match r.outcome {
            Ok(version) => format!("✅ Reloaded: now running guest {version}."),
            Err(why) => format!("⚠️ Reload refused, the previous guest keeps running: {why}"),
        };
        self.send_notice(
            host,
            &room_id,
            &text,
            Some(&reply_to),
            thread_root.as_deref(),
            Vec::new(),
        )
    }
}

impl Bot {
    /// The host swapped (or failed to swap) the guest on its own: keep the
    /// outcome for `status`, and tell the admins when the swap was refused.
    fn on_host_reload(
        &mut self,
        host: &mut dyn Host,
        outcome: Result<String, String>,
    ) -> Result<(), String> {
        let now = host.now();
        let mut db = Db { host };
        db.put(
            LAST_RELOAD,
            &LastReload {
                at_ms: now,
                outcome: outcome.clone(),
            },
        )?;
        let Err(why) = outcome else {
            return Ok(());
        };
        let text = format!("⚠️ A new guest was refused; the running one keeps serving: {why}");
        for admin in self.cfg.admins.clone() {
            let mut db = Db { host };
            let user: Option<User> = db.get(&user_key(&admin))?;
            if let Some(room) = user.and_then(|u| u.dm_room) {
                self.send_notice(host, &room, &text, None, None, Vec::new())?;
            }
        }
        Ok(())
    }
}

/// The text a part shows now, and whether that is its final text.
fn part_body(r: &Reply, part: &Part, full: &str) -> Result<(String, bool), String> {
    let end = part.end.unwrap_or(full.len());
    let Some(text) = full.get(part.start..end) else {
        return Err(format!(
            "part {}..{end} is not within the reply's {} bytes",
            part.start,
            full.len()
        ));
    };
    let is_final = part.end.is_some() || r.ending.is_some();
    let note = match (&r.ending, part.end) {
        (Some(Ending::Cut(note)), None) => Some(note.as_str()),
        _ => None,
    };
    let body = join_note(text, note);
    if body.is_empty() && is_final {
        return Ok(("*(The agent returned an empty reply.)*".to_string(), true));
    }
    Ok((body, is_final))
}

/// The request ids of every reply in the store.
fn stored_replies(host: &mut dyn Host) -> Vec<u64> {
    host.store_keys("reply/")
        .iter()
        .filter_map(|k| k.strip_prefix("reply/")?.parse().ok())
        .collect()
}

/// Where a user message was, to answer it there.
struct Place<'a> {
    room_id: &'a str,
    event_id: &'a str,
    sender: &'a str,
    thread_root: Option<&'a str>,
    is_direct: bool,
}

impl<'a> From<&'a RoomMessage> for Place<'a> {
    fn from(m: &'a RoomMessage) -> Self {
        Place {
            room_id: &m.room_id,
            event_id: &m.event_id,
            sender: &m.sender,
            thread_root: m.thread_root.as_deref(),
            is_direct: m.is_direct,
        }
    }
}

impl<'a> From<&'a Queued> for Place<'a> {
    fn from(q: &'a Queued) -> Self {
        Place {
            room_id: &q.room_id,
            event_id: &q.event_id,
            sender: &q.sender,
            thread_root: q.thread_root.as_deref(),
            is_direct: q.is_direct,
        }
    }
}

fn join_note(text: &str, note: Option<&str>) -> String {
    match note {
        None => text.to_string(),
        Some(n) if text.is_empty() => n.to_string(),
        Some(n) => format!("{text}\n\n{n}"),
    }
}

/// 1 s, 2 s, 4 s ... capped at one minute.
fn backoff(attempt: u32) -> u64 {
    1000u64
        .saturating_mul(1 << attempt.saturating_sub(1).min(6))
        .min(60_000)
}

/// `1 message`, `2 messages`, `1,234 messages`.
fn count(n: u64, noun: &str) -> String {
    let s = if n == 1 { "" } else { "s" };
    format!("{} {noun}{s}", commands::thousands(n))
}

/// At most `max` characters of `s`.
fn cut(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// `@alice:example.org` -> `alice`.
fn localpart(user_id: &str) -> &str {
    let s = user_id.strip_prefix('@').unwrap_or(user_id);
    s.split(':').next().unwrap_or(s)
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
