//! A user's message: is the bot addressed, by whom, and what comes of it
//! (a command, a question for the agent, a hint).

use surfaces_contract::{Addressed, address};

use super::{Bot, Place};
use crate::commands;
use crate::config::Scope;
use crate::host::Host;
use crate::state::{Queued, Records, User, undecryptable_key, user_key};
use crate::types::{LogLevel, RoomMessage, Undecryptable};

/// A user hears that their messages cannot be decrypted at most this often
/// per room: a run of them is one problem.
const UNDECRYPTABLE_NOTICE_EVERY_MS: u64 = 24 * 3600 * 1000;

impl Bot {
    pub(super) fn on_message(
        &mut self,
        host: &mut dyn Host,
        mut m: RoomMessage,
    ) -> Result<(), String> {
        if m.sender == self.info.bot_user_id {
            return Ok(());
        }
        let body = m.body.clone();
        let addressed = address(
            &body,
            m.is_direct,
            m.mentions_bot,
            m.is_notice,
            &self.cfg.command_prefix,
            &self.info.bot_user_id,
            &self.info.bot_display_name,
        );
        // A file may be for the bot without saying so: its sender's next
        // text may take it (see `files`).
        let has_files = !m.attachments.is_empty();
        if addressed == Addressed::No && !has_files {
            return Ok(());
        }
        if self.already_seen(host, &m.event_id)? {
            host.log(
                LogLevel::Debug,
                &format!("{} was handled before: ignored", m.event_id),
            );
            return Ok(());
        }
        self.expire_idle_contexts(host)?;
        // Where its sender's waiting files are: before a thread is made.
        let place_thread = m.thread_root.clone();
        let for_bot = addressed != Addressed::No || m.is_direct || m.mentions_bot;
        if has_files && !for_bot {
            self.on_files(host, &m, false, false)?;
            return Ok(());
        }
        if self.cfg.scope == Scope::Thread && m.thread_root.is_none() {
            // Per-thread contexts: a conversation started in the main
            // timeline goes on in a thread rooted at its first message.
            m.thread_root = Some(m.event_id.clone());
        }
        let user = self.greet_and_note(host, &m)?;
        let caption = matches!(&addressed, Addressed::Text(t) if !t.is_empty());
        let mut files = if has_files {
            let mut at = m.clone();
            at.thread_root = place_thread.clone();
            self.on_files(host, &at, true, caption)?
        } else {
            Vec::new()
        };
        if let Addressed::Command(rest) = addressed {
            let cmd = commands::parse(rest, &self.cfg.command_prefix);
            return self.on_command(host, &m, cmd, user);
        }
        let Addressed::Text(text) = addressed else {
            return Ok(()); // not addressed: returned above
        };
        if has_files && !caption {
            return Ok(()); // waiting for a text, or refused
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
            with: Vec::new(),
            files: Vec::new(),
            queued_ms: cfg!(feature = "next-schema").then(|| host.now()),
        };
        let mut held = self.take_held(host, &m, place_thread.as_deref())?;
        held.append(&mut files);
        let queued = Queued {
            files: held,
            ..queued
        };
        self.enqueue(host, &m, queued)
    }

    /// The sender's record, brought up to date (display name, direct
    /// room); a new user is greeted first.
    fn greet_and_note(&mut self, host: &mut dyn Host, m: &RoomMessage) -> Result<User, String> {
        let now = host.now();
        let key = user_key(&m.sender);
        let known: Option<User> = host.load(&key)?;
        let greeted =
            |u: &User| !(crate::planted::on(crate::planted::Bug::GreetingTwice) && u.messages == 0);
        let mut user = match known {
            Some(u) if greeted(&u) => u,
            known => {
                let name = m
                    .sender_display_name
                    .clone()
                    .unwrap_or_else(|| super::localpart(&m.sender).to_string());
                let greeting = format!(
                    "👋 Hi {name}! I pass what you write to an AI agent and stream its reply \
                     here. Commands start with `{p}`: send `{p}help` for the list.",
                    p = self.cfg.command_prefix
                );
                self.notice(host, m, &greeting)?;
                known.unwrap_or(User {
                    first_seen_ms: now,
                    ..User::default()
                })
            }
        };
        if m.sender_display_name.is_some() && user.display_name != m.sender_display_name {
            user.display_name = m.sender_display_name.clone();
        }
        if m.is_direct && user.dm_room.as_deref() != Some(m.room_id.as_str()) {
            user.dm_room = Some(m.room_id.clone());
        }
        host.save(&key, &user)?;
        Ok(user)
    }

    /// An encrypted message whose key never came: in a direct chat (where
    /// every message is for the bot) its sender is told, not left in
    /// silence, once a day; in a group room nobody can tell whether it was
    /// for the bot, so it is only logged.
    pub(super) fn on_undecryptable(
        &mut self,
        host: &mut dyn Host,
        u: Undecryptable,
    ) -> Result<(), String> {
        if !u.is_direct {
            host.log(
                LogLevel::Warn,
                &format!(
                    "could not decrypt {} from {} in {}",
                    u.event_id, u.sender, u.room_id
                ),
            );
            return Ok(());
        }
        if self.already_seen(host, &u.event_id)? {
            return Ok(());
        }
        let key = undecryptable_key(&u.room_id, &u.sender);
        let now = host.now();
        if host
            .load(&key)?
            .is_some_and(|t| now.saturating_sub(t) < UNDECRYPTABLE_NOTICE_EVERY_MS)
        {
            return Ok(());
        }
        host.save(&key, &now)?;
        let place = Place {
            room_id: &u.room_id,
            event_id: &u.event_id,
            sender: &u.sender,
            thread_root: None,
            is_direct: u.is_direct,
        };
        self.notice(
            host,
            place,
            "🔒 I could not decrypt this message: its keys never reached me, so I could not \
             answer it. Please send it again. If it keeps happening, check that your client \
             shares keys with unverified sessions, or verify mine.",
        )
    }
}
