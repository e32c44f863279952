//! Notes: a stateful guest, in two versions, to show a change of record
//! format and its migration. `!note TEXT` keeps a note for you, `!notes`
//! lists yours, and an admin's `!reload` swaps the guest file in again.
//!
//! Version 1 keeps a person's notes as one text (`{"text": "milk\neggs"}`);
//! version 2 (built with the `v2` feature) as a list of lines
//! (`{"lines": ["milk", "eggs"]}`). Version 2 declares schema 2, which
//! version 1 cannot read (`readable_from: 2`), and migrates a store of
//! schema 1 in `init`, so its first instance finds every note the first
//! version kept.

use serde::{Deserialize, Serialize};
use surfaces_guest_sdk::schema::{self, Migration, Schema};
use surfaces_guest_sdk::store::{Key, Prefix, Records};
use surfaces_guest_sdk::types::{
    Event, GuestInfo, HostInfo, MessageContent, ReloadOutcome, ReloadResult, RoomMessage,
};
use surfaces_guest_sdk::{Addressed, Guest, Host, address, outbox};

/// A person's notes, as version 1 keeps them.
#[derive(Debug, Default, Serialize, Deserialize)]
struct NotesV1 {
    text: String,
}

#[cfg(not(feature = "v2"))]
mod version {
    use super::*;

    pub const VERSION: &str = "1.0.0";
    pub const SCHEMA: Schema = Schema {
        version: 1,
        readable_from: 1,
    };
    pub const MIGRATIONS: &[Migration] = &[];
    pub type Notes = NotesV1;

    pub fn add(notes: &mut Notes, line: &str) -> usize {
        if !notes.text.is_empty() {
            notes.text.push('\n');
        }
        notes.text.push_str(line);
        notes.text.lines().count()
    }

    pub fn lines(notes: &Notes) -> Vec<String> {
        notes.text.lines().map(str::to_string).collect()
    }
}

#[cfg(feature = "v2")]
mod version {
    use super::*;

    /// A person's notes, as version 2 keeps them.
    #[derive(Debug, Default, Serialize, Deserialize)]
    pub struct NotesV2 {
        lines: Vec<String>,
    }

    pub const VERSION: &str = "2.0.0";
    pub const SCHEMA: Schema = Schema {
        version: 2,
        readable_from: 2,
    };
    pub const MIGRATIONS: &[Migration] = &[(1, v1_to_v2)];
    pub type Notes = NotesV2;

    pub fn add(notes: &mut Notes, line: &str) -> usize {
        notes.lines.push(line.to_string());
        notes.lines.len()
    }

    pub fn lines(notes: &Notes) -> Vec<String> {
        notes.lines.clone()
    }

    /// Every person's text, split into lines.
    fn v1_to_v2(host: &mut dyn Host) -> Result<(), String> {
        for key in host.scan(&OLD) {
            if let Some(old) = host.load(&key)? {
                let new = NotesV2 {
                    lines: old.text.lines().map(str::to_string).collect(),
                };
                host.save(&Key::new(key.as_str().to_string()), &new)?;
            }
        }
        Ok(())
    }

    const OLD: Prefix<NotesV1> = Prefix::new("notes/");
}

use version::Notes;

const NOTES: Prefix<Notes> = Prefix::new("notes/");

/// A message to answer: where a `!reload` was asked, kept until its
/// outcome arrives (the guest that answers may be the next version: it
/// reads this record too).
#[derive(Debug, Serialize, Deserialize)]
struct ReloadAsked {
    room_id: String,
    event_id: String,
    thread_root: Option<String>,
}

fn reload_key(request: u64) -> Key<ReloadAsked> {
    Key::new(format!("route/reload/{request:020}"))
}

pub struct NotesBot {
    info: HostInfo,
}

impl Guest for NotesBot {
    fn init(info: HostInfo, host: &mut dyn Host) -> Result<Self, String> {
        schema::open(host, "notes", version::SCHEMA, version::MIGRATIONS)?;
        outbox::resume(host, info.resumed)?;
        Ok(NotesBot { info })
    }

    fn info(&self) -> GuestInfo {
        GuestInfo {
            name: "notes".into(),
            version: version::VERSION.into(),
        }
    }

    fn handle(&mut self, host: &mut dyn Host, event: Event) -> Result<(), String> {
        match event {
            Event::Message(m) => self.on_message(host, m),
            Event::Invite(i) => outbox::join(host, &i.room_id).map(drop),
            Event::MatrixResult(r) => outbox::on_result(host, &r).map(drop),
            Event::Timer(id) => outbox::on_timer(host, id).map(drop),
            Event::ReloadResult(r) => on_reload(host, r),
            Event::MembersChanged(_)
            | Event::AgentChunk(_)
            | Event::AgentEnd(_)
            | Event::AgentError(_)
            | Event::AgentStatus(_)
            | Event::Undecryptable(_)
            | Event::Reaction(_)
            | Event::MessageEdited(_)
            | Event::Redacted(_)
            | Event::AgentAttachment(_) => Ok(()),
        }
    }
}

impl NotesBot {
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
        let command = match addressed {
            Addressed::No => return Ok(()),
            Addressed::Command(c) => c.trim(),
            Addressed::Text(_) => "",
        };
        let (word, rest) = command.split_once(' ').unwrap_or((command, ""));
        let key = NOTES.key(&m.sender);
        let answer = match word.to_lowercase().as_str() {
            "note" if !rest.trim().is_empty() => {
                let mut notes = host.load_or_default(&key)?;
                let n = version::add(&mut notes, rest.trim());
                host.save(&key, &notes)?;
                format!("Noted ({n} in all).")
            }
            "notes" => {
                let notes = host.load_or_default(&key)?;
                let lines = version::lines(&notes);
                if lines.is_empty() {
                    "No notes yet: !note TEXT keeps one.".to_string()
                } else {
                    let listed: Vec<String> = lines
                        .iter()
                        .enumerate()
                        .map(|(i, l)| format!("{}. {l}", i + 1))
                        .collect();
                    listed.join("\n")
                }
            }
            "reload" if self.is_admin(&m.sender) => {
                let request = host.next_id()?;
                let asked = ReloadAsked {
                    room_id: m.room_id.clone(),
                    event_id: m.event_id.clone(),
                    thread_root: m.thread_root.clone(),
                };
                host.save(&reload_key(request), &asked)?;
                host.reload(request);
                return Ok(());
            }
            _ => format!(
                "notes {}: !note TEXT keeps a note, !notes lists yours.",
                version::VERSION
            ),
        };
        let at = ReloadAsked {
            room_id: m.room_id,
            event_id: m.event_id,
            thread_root: m.thread_root,
        };
        say(host, &at, answer)
    }

    fn is_admin(&self, user: &str) -> bool {
        self.info
            .settings
            .iter()
            .any(|(k, v)| k == "admins" && v.split(',').any(|a| a.trim() == user))
    }
}

/// A swap's outcome, answered where `!reload` was asked.
fn on_reload(host: &mut dyn Host, r: ReloadResult) -> Result<(), String> {
    let key = reload_key(r.request);
    let Some(asked) = host.load(&key)? else {
        return Ok(()); // the host's own swap: nobody asked
    };
    host.remove(&key);
    let text = match r.outcome {
        ReloadOutcome::Swapped(guest) => format!("Reloaded: now running {guest}."),
        ReloadOutcome::Refused(why) => format!("Reload refused: {why}"),
        ReloadOutcome::RolledBack(what) => format!("Rolled back: {what}"),
    };
    say(host, &asked, text)
}

/// Answer the message `at` names, in its thread.
fn say(host: &mut dyn Host, at: &ReloadAsked, body: String) -> Result<(), String> {
    let content = MessageContent {
        body,
        formatted_body: None,
        notice: true,
        live: false,
        thread_root: at.thread_root.clone(),
        reply_to: Some(at.event_id.clone()),
        mentions: vec![],
    };
    outbox::send(host, &at.room_id, &content).map(drop)
}

surfaces_guest_sdk::export_guest!(NotesBot);

#[cfg(test)]
mod tests {
    use super::*;
    use surfaces_guest_sdk::testing::{self, MemoryHost};

    fn said(host: &mut MemoryHost, bot: &mut NotesBot, body: &str) {
        let m = testing::message("!dm", "@alice:example.org", body);
        bot.handle(host, Event::Message(m)).expect("handled");
    }

    #[test]
    fn keeps_and_lists_notes() {
        let mut host = MemoryHost::default();
        let mut bot = NotesBot::init(testing::host_info(&[]), &mut host).expect("starts");
        said(&mut host, &mut bot, "!note milk");
        said(&mut host, &mut bot, "!note eggs");
        said(&mut host, &mut bot, "!notes");
        assert_eq!(
            host.sent_bodies(),
            ["Noted (1 in all).", "Noted (2 in all).", "1. milk\n2. eggs"]
        );
    }

    /// What the first version kept, the second finds.
    #[cfg(feature = "v2")]
    #[test]
    fn the_second_version_migrates_the_first_ones_notes() {
        let mut host = MemoryHost::default();
        host.store.insert(
            "meta/schema/notes".into(),
            br#"{"version":1,"readable_from":1}"#.to_vec(),
        );
        host.store.insert(
            "notes/@alice:example.org".into(),
            br#"{"text":"milk\neggs"}"#.to_vec(),
        );
        let mut bot = NotesBot::init(testing::host_info(&[]), &mut host).expect("starts");
        said(&mut host, &mut bot, "!notes");
        assert_eq!(host.sent_bodies(), ["1. milk\n2. eggs"]);
    }
}
