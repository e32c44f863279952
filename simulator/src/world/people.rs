//! The scenario's steps: people writing (in DMs, groups, threads, with
//! mentions and replies), inviting and leaving, and the operator's and
//! the world's faults (agent drops, swaps, host restarts).

use serde_json::json;
use surfaces_contract::{Addressed, HOST_RELOAD, address, mentions_bot};
use surfaces_embed::access::Access;

use super::transcript::quote;
use super::{UserMessage, World};
use crate::scenario::Step;

impl World<'_> {
    pub(super) fn step(&mut self, i: usize) {
        let step: Step = self.scenario.steps[i].clone();
        let bot = self.scenario.bot.user_id.clone();
        if step.disconnect_agent {
            self.log("fault: agent connection drops".into());
            let ctxs: Vec<String> = self.conns.keys().cloned().collect();
            for ctx in ctxs {
                self.disconnect(&ctx);
            }
            return;
        }
        if let Some(ms) = step.clock_jump_ms {
            self.log(format!("fault: the system clock is set {ms:+} ms"));
            self.clock_offset += ms;
            return;
        }
        if (step.reload || step.restart) && self.guest.is_none() {
            self.log("host: down, nothing to swap or restart".into());
            return;
        }
        if step.reload {
            self.log("host: guest swap (operator)".into());
            self.start_guest(Some(HOST_RELOAD));
            return;
        }
        if step.restart {
            self.restart_host();
            if step.replay {
                // Killed before any position after the first was saved.
                self.log("fault: the sync position saved since the first sync is lost".into());
                self.sync.position = self.sync.first_position.clone();
            }
            return;
        }
        let (Some(from), Some(room)) = (step.from.clone(), step.room.clone()) else {
            return;
        };
        let direct = self.hs.rooms.get(&room).is_some_and(|r| r.direct);
        if step.invite {
            self.log(format!("{from} invites the bot to {room}"));
            let _ = self.hs.invite(&from, &bot, &room, self.now);
            return;
        }
        if step.leave {
            if self.hs.leave(&from, &room, self.now).is_ok() {
                self.log(format!("{from} leaves {room}"));
            }
            return;
        }
        if step.react.is_some() || step.edit.is_some() || step.redact {
            self.act_on(&step, &from, &room);
            return;
        }
        if step.say.is_none() && step.file.is_none() {
            return;
        }
        let body = step.say.clone().unwrap_or_default();
        let thread = step
            .thread
            .as_ref()
            .and_then(|l| self.labels.get(l).cloned());
        let reply_to = step
            .reply_to
            .as_ref()
            .and_then(|l| self.labels.get(l).cloned());
        // Who is addressed: the one rule the guest and the native front end
        // use too (a pill, the user id, the name up front, a reply to the bot).
        let display = &self.scenario.bot.display_name;
        let replies_to_bot = reply_to
            .as_deref()
            .and_then(|r| self.hs.event(r))
            .is_some_and(|e| e.sender == bot);
        let mentions_bot = mentions_bot(&body, step.mention, replies_to_bot, &bot, display);
        let mut content = json!({
            "msgtype": if step.notice { "m.notice" } else { "m.text" },
            "body": body,
            "m.mentions": { "user_ids": if step.mention { vec![bot.clone()] } else { vec![] } },
        });
        if let Some(root) = &thread {
            content["m.relates_to"] = json!({ "rel_type": "m.thread", "event_id": root });
        } else if let Some(r) = &reply_to {
            content["m.relates_to"] = json!({ "m.in_reply_to": { "event_id": r } });
        }
        if let (Some(name), Some(r)) = (&step.display_name, self.hs.rooms.get_mut(&room)) {
            r.display_names.insert(from.clone(), name.clone());
        }
        let key_at = if step.key_never {
            Some(None)
        } else {
            step.key_after_ms.map(|d| Some(self.now.saturating_add(d)))
        };
        let (event_id, file) = match &step.file {
            Some(name) => {
                let size = step.file_bytes.unwrap_or(1_000);
                let mut extra = json!({ "m.mentions": content["m.mentions"].clone() });
                if let Some(r) = content.get("m.relates_to") {
                    extra["m.relates_to"] = r.clone();
                }
                let caption = step.say.as_deref();
                let file = super::media::FileStep {
                    name,
                    size,
                    declared: !step.file_size_unknown,
                    caption,
                };
                let (id, sent) = self.post_file(&room, &from, &file, extra);
                self.log(format!(
                    "{from} in {room} {id}: file {} ({size} bytes){}",
                    quote(name),
                    caption
                        .map(|c| format!(" captioned {}", quote(c)))
                        .unwrap_or_default()
                ));
                (id, Some(sent))
            }
            None => {
                let id = self
                    .hs
                    .post_user_message(&room, &from, self.now, content, key_at);
                self.log(format!("{from} in {room} {id}: {}", quote(&body)));
                (id, None)
            }
        };
        if let Some(label) = &step.label {
            self.labels.insert(label.clone(), event_id.clone());
        }
        // For the bot: addressed, from someone allowed, in a room the bot
        // is in or was invited to by someone allowed, and readable.
        let for_bot = self.hs.rooms.get(&room).is_some_and(|r| {
            r.members.contains(&bot) || r.invited.get(&bot).is_some_and(|i| self.allowed(i))
        });
        let addressed = for_bot
            && self.allowed(&from)
            && !step.key_never
            && address(
                &body,
                direct,
                mentions_bot,
                step.notice,
                &self.prefix,
                &bot,
                &self.scenario.bot.display_name,
            ) != Addressed::No;
        if let Some(mut sent) = file {
            // For the bot: where a text would be, or in a direct chat, or
            // mentioning it; its answer may reply to a later text.
            sent.seen = for_bot && self.allowed(&from) && !step.key_never;
            sent.for_bot = sent.seen && (direct || mentions_bot || addressed);
            self.facts.files_sent.push(sent);
        }
        // A file alone is answered through the text it goes with (the
        // rule `files_reach_the_agent`), not on its own.
        let addressed = addressed && !body.trim().is_empty();
        self.facts.user_messages.push(UserMessage {
            event_id: event_id.clone(),
            room_id: room.clone(),
            sender: from.clone(),
            command: body.trim_start().starts_with(self.prefix.as_str()),
            body: body.clone(),
            thread,
            addressed,
            edits: Vec::new(),
            redacted: false,
        });
    }

    /// A person reacts to, edits or redacts an event (`step.on`).
    fn act_on(&mut self, step: &Step, from: &str, room: &str) {
        if !self
            .hs
            .rooms
            .get(room)
            .is_some_and(|r| r.members.contains(from))
        {
            self.log(format!("{from} is not in {room}: cannot act there"));
            return;
        }
        let Some(target) = step.on.as_deref().and_then(|on| self.target(on)) else {
            self.log(format!("{from}: nothing to act on for {:?}", step.on));
            return;
        };
        if let Some(key) = &step.react {
            let id = self.hs.post_reaction(room, from, self.now, &target, key);
            self.log(format!("{from} in {room} {id}: reacts {key} to {target}"));
        } else if let Some(text) = &step.edit {
            let bot = self.scenario.bot.user_id.clone();
            let new = json!({
                "msgtype": "m.text",
                "body": text,
                "m.mentions": { "user_ids": if step.mention { vec![bot] } else { vec![] } },
            });
            let id = self.hs.post_edit(room, from, self.now, &target, new);
            self.log(format!(
                "{from} in {room} {id}: edits {target} into {}",
                quote(text)
            ));
            if let Some(m) = self
                .facts
                .user_messages
                .iter_mut()
                .find(|m| m.event_id == target)
            {
                m.edits.push(text.clone());
            }
        } else if step.redact {
            let id = self.hs.redact(room, from, self.now, &target);
            self.log(format!("{from} in {room} {id}: redacts {target}"));
            if let Some(m) = self
                .facts
                .user_messages
                .iter_mut()
                .find(|m| m.event_id == target)
            {
                m.redacted = true;
            }
            if let Some(f) = self
                .facts
                .files_sent
                .iter_mut()
                .find(|f| f.event_id == target && f.sender == from)
            {
                f.redacted_by = Some(id);
            }
        }
    }

    /// The event a label names, or (`answer:LABEL`) the bot's first answer
    /// to it that is not a notice.
    fn target(&self, on: &str) -> Option<String> {
        let Some(label) = on.strip_prefix("answer:") else {
            return self.labels.get(on).cloned();
        };
        let question = self.labels.get(label)?;
        let bot = &self.scenario.bot.user_id;
        self.hs
            .events
            .iter()
            .find(|e| {
                &e.sender == bot
                    && e.kind == "m.room.message"
                    && e.replaces.is_none()
                    && e.content.get("msgtype").and_then(|m| m.as_str()) != Some("m.notice")
                    && e.content
                        .pointer("/m.relates_to/m.in_reply_to/event_id")
                        .and_then(|t| t.as_str())
                        == Some(question.as_str())
            })
            .map(|e| e.event_id.clone())
    }
}

impl World<'_> {
    /// Whether the bot's access list lets `user` talk to it.
    fn allowed(&self, user: &str) -> bool {
        let bot = &self.scenario.bot.user_id;
        let server = bot.split_once(':').map_or("", |(_, s)| s);
        Access::new(&self.scenario.bot.allow, &[], server).allows(user)
    }
}
