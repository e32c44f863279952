//! An echo bot on the surfaces guest SDK: it answers every message meant
//! for it with the same text, and `!count` with how many it has echoed
//! for you. Small, but it keeps the promise every surfaces guest keeps:
//! each message meant for the bot ends in an answer. Its answers and joins
//! go through the SDK's outbox, which keeps each until the homeserver
//! confirms it: a rate limit or an outage is waited out, after a host
//! restart too, and only a refusal for good (forbidden, too large) gives
//! up, in the log.
//!
//! The host calls `handle` with one event at a time; everything durable is
//! in the store, so any instance (after a swap, a trap or a restart)
//! carries on where the last one stopped.

use serde::{Deserialize, Serialize};
use surfaces_guest_sdk::outbox;
use surfaces_guest_sdk::schema::{self, Schema};
use surfaces_guest_sdk::store::{Prefix, Records};
use surfaces_guest_sdk::types::{Event, GuestInfo, HostInfo, MessageContent, RoomMessage};
use surfaces_guest_sdk::{Addressed, Guest, Host, address};

/// The format of the records below. Change one in a way this version
/// cannot read, and the next version raises `readable_from` and brings a
/// migration (see `surfaces_guest_sdk::schema`).
const SCHEMA: Schema = Schema {
    version: 1,
    readable_from: 1,
};

/// Messages echoed per person: `tally/{user-id}`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Tally {
    echoed: u64,
}
const TALLIES: Prefix<Tally> = Prefix::new("tally/");

pub struct Echo {
    info: HostInfo,
}

impl Guest for Echo {
    fn init(info: HostInfo, host: &mut dyn Host) -> Result<Self, String> {
        schema::open(host, "echo", SCHEMA, &[])?;
        // After a host start: make again what was never confirmed.
        outbox::resume(host, info.resumed)?;
        host.info("echo guest ready");
        Ok(Echo { info })
    }

    fn info(&self) -> GuestInfo {
        GuestInfo {
            name: env!("CARGO_PKG_NAME").into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn handle(&mut self, host: &mut dyn Host, event: Event) -> Result<(), String> {
        match event {
            Event::Message(m) => self.on_message(host, m),
            Event::Invite(i) => outbox::join(host, &i.room_id).map(drop),
            // This bot makes no request and sets no timer of its own.
            Event::MatrixResult(r) => outbox::on_result(host, &r).map(drop),
            Event::Timer(id) => outbox::on_timer(host, id).map(drop),
            // Events this bot has no use for.
            Event::MembersChanged(_)
            | Event::AgentChunk(_)
            | Event::AgentEnd(_)
            | Event::AgentError(_)
            | Event::AgentStatus(_)
            | Event::ReloadResult(_)
            | Event::Undecryptable(_)
            | Event::Reaction(_)
            | Event::MessageEdited(_)
            | Event::Redacted(_)
            | Event::AgentAttachment(_) => Ok(()),
        }
    }
}

impl Echo {
    fn on_message(&mut self, host: &mut dyn Host, m: RoomMessage) -> Result<(), String> {
        if m.sender == self.info.bot_user_id {
            return Ok(());
        }
        let addressed = address(
            &m.body,
            m.is_direct,
            m.mentions_bot,
            m.is_notice,
            "!",
            &self.info.bot_user_id,
            &self.info.bot_display_name,
        );
        let tally_key = TALLIES.key(&m.sender);
        match addressed {
            Addressed::No => Ok(()),
            Addressed::Command(cmd) if cmd.trim().eq_ignore_ascii_case("count") => {
                let tally = host.load_or_default(&tally_key)?;
                let text = format!("I have echoed {} of your messages.", tally.echoed);
                say(host, &m, text, true)
            }
            Addressed::Command(_) => say(host, &m, "I know one command: !count".into(), true),
            Addressed::Text(text) => {
                let mut tally = host.load_or_default(&tally_key)?;
                tally.echoed += 1;
                host.save(&tally_key, &tally)?;
                // A file alone is echoed by name.
                let files: Vec<&str> = m.attachments.iter().map(|a| a.name.as_str()).collect();
                let text = match (text.is_empty(), files.is_empty()) {
                    (true, true) => "…".to_string(),
                    (true, false) => format!("📎 {}", files.join(", ")),
                    (false, _) => text.to_string(),
                };
                say(host, &m, text, false)
            }
        }
    }
}

/// Answer `m` with `body`, in its thread, as a reply to it.
fn say(host: &mut dyn Host, m: &RoomMessage, body: String, notice: bool) -> Result<(), String> {
    let content = MessageContent {
        body,
        formatted_body: None,
        notice,
        live: false,
        thread_root: m.thread_root.clone(),
        reply_to: Some(m.event_id.clone()),
        mentions: vec![],
    };
    outbox::send(host, &m.room_id, &content).map(drop)
}

surfaces_guest_sdk::export_guest!(Echo);

#[cfg(test)]
mod tests {
    use super::*;
    use surfaces_guest_sdk::testing::{self, Effect, MemoryHost};
    use surfaces_guest_sdk::types::{MatrixError, MatrixErrorKind, MatrixResult};

    fn started(host: &mut MemoryHost) -> Echo {
        Echo::init(testing::host_info(&[]), host).expect("starts")
    }

    #[test]
    fn echoes_a_direct_message_and_counts_it() {
        let mut host = MemoryHost::default();
        let mut bot = started(&mut host);
        let hi = testing::message("!dm", "@alice:example.org", "hello there");
        bot.handle(&mut host, Event::Message(hi)).unwrap();
        let count = testing::message("!dm", "@alice:example.org", "!count");
        bot.handle(&mut host, Event::Message(count)).unwrap();
        assert_eq!(
            host.sent_bodies(),
            ["hello there", "I have echoed 1 of your messages."]
        );
    }

    #[test]
    fn stays_quiet_in_a_group_room_unless_spoken_to() {
        let mut host = MemoryHost::default();
        let mut bot = started(&mut host);
        let mut m = testing::message("!group", "@alice:example.org", "hello all");
        m.is_direct = false;
        bot.handle(&mut host, Event::Message(m.clone())).unwrap();
        m.body = "bot: hello you".into();
        m.mentions_bot = true; // the host marks a message that names the bot
        bot.handle(&mut host, Event::Message(m)).unwrap();
        assert_eq!(host.sent_bodies(), ["hello you"]);
    }

    #[test]
    fn a_rate_limited_send_goes_again_with_the_same_request() {
        let mut host = MemoryHost::default();
        let mut bot = started(&mut host);
        let m = testing::message("!dm", "@alice:example.org", "hi");
        bot.handle(&mut host, Event::Message(m)).unwrap();
        let Some(Effect::Send { request, .. }) = host.take_effects().pop() else {
            panic!("no send");
        };
        let limited = MatrixResult {
            request,
            outcome: Err(MatrixError {
                kind: MatrixErrorKind::RateLimited,
                message: "slow down".into(),
                retry_after_ms: Some(3_000),
            }),
        };
        bot.handle(&mut host, Event::MatrixResult(limited)).unwrap();
        let Some(Effect::SetTimer { id, delay_ms }) = host.take_effects().pop() else {
            panic!("no timer");
        };
        assert_eq!(delay_ms, 3_000);
        bot.handle(&mut host, Event::Timer(id)).unwrap();
        assert!(matches!(
            host.take_effects().as_slice(),
            [Effect::Send { request: again, .. }] if *again == request
        ));
        let done = MatrixResult {
            request,
            outcome: Ok("$echo".into()),
        };
        bot.handle(&mut host, Event::MatrixResult(done)).unwrap();
        assert!(host.store.keys().all(|k| !k.starts_with("out/")));
    }
}
