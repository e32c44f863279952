//! The scenario's steps: people writing (in DMs, groups, threads, with
//! mentions and replies), inviting and leaving, and the operator's and
//! the world's faults (agent drops, swaps, host restarts).

use serde_json::json;
use surfaces_contract::{Addressed, HOST_RELOAD, address, mentions_bot};
use surfaces_embed::{Event, Invite, MembersChanged, RoomMessage};

use super::transcript::quote;
use super::{Pending, RESTART_MS, UserMessage, World};
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
                let again = self.delivered_messages.clone();
                self.log(format!(
                    "fault: the restarted host's sync replays {} message(s)",
                    again.len()
                ));
                for m in again {
                    self.after(RESTART_MS, Pending::Deliver(Event::Message(m)));
                }
            }
            return;
        }
        let (Some(from), Some(room)) = (step.from.clone(), step.room.clone()) else {
            return;
        };
        let direct = self.hs.rooms.get(&room).is_some_and(|r| r.direct);
        if step.invite {
            self.log(format!("{from} invites the bot to {room}"));
            self.after(
                10,
                Pending::Deliver(Event::Invite(Invite {
                    room_id: room,
                    inviter: from,
                    is_direct: direct,
                })),
            );
            return;
        }
        if step.leave {
            if let Ok(joined) = self.hs.leave(&from, &room) {
                self.log(format!("{from} leaves {room}"));
                self.after(
                    10,
                    Pending::Deliver(Event::MembersChanged(MembersChanged {
                        room_id: room,
                        joined,
                    })),
                );
            }
            return;
        }
        let Some(body) = step.say.clone() else { return };
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
        let event_id = self.hs.post_user_message(&room, &from, self.now, content);
        if let Some(label) = &step.label {
            self.labels.insert(label.clone(), event_id.clone());
        }
        self.log(format!("{from} in {room} {event_id}: {}", quote(&body)));
        let addressed = address(
            &body,
            direct,
            mentions_bot,
            step.notice,
            &self.prefix,
            &bot,
            &self.scenario.bot.display_name,
        ) != Addressed::No;
        self.facts.user_messages.push(UserMessage {
            event_id: event_id.clone(),
            room_id: room.clone(),
            body: body.clone(),
            addressed,
        });
        let d = self.range(5, 30);
        self.after(
            d,
            Pending::Deliver(Event::Message(RoomMessage {
                room_id: room,
                event_id,
                sender: from,
                sender_display_name: step.display_name.clone(),
                body,
                thread_root: thread,
                reply_to,
                is_direct: direct,
                mentions_bot,
                is_notice: step.notice,
                origin_server_ts: self.now,
            })),
        );
    }
}
