//! Files between Matrix and the agent, named the same way by both hosts.
//!
//! The guest never holds a file's bytes: it passes `surfaces-media:` ids.
//! A user's file stays on the homeserver and is named by the event that
//! carries it (the host fetches and decrypts it when the message goes to
//! the agent); a file from the agent is kept by the host, numbered, until
//! it is sent to Matrix.

use surfaces_contract::human_bytes;

use crate::{AgentError, AgentErrorKind, AgentMessage, MediaKind};

const PREFIX: &str = "surfaces-media:";

/// The most files one message takes to the agent.
pub const MAX_FILES_PER_MESSAGE: usize = 20;
/// The most bytes of files one message takes to the agent, all together.
/// Inline as base64 they grow by a third: 40 MiB make a frame of about
/// 54 MiB, under the 64 MiB [`surfaces_protocol::MAX_FRAME_BYTES`].
pub const MAX_MESSAGE_FILE_BYTES: u64 = 40 << 20;

/// What a `surfaces-media:` id names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MediaRef {
    /// The file of a user's message.
    Event { room_id: String, event_id: String },
    /// A file the agent sent, kept by the host under this number.
    Kept(u64),
}

impl MediaRef {
    /// The id the guest sees. Matrix ids never hold a space.
    pub fn id(&self) -> String {
        match self {
            MediaRef::Event { room_id, event_id } => format!("{PREFIX}event {room_id} {event_id}"),
            MediaRef::Kept(n) => format!("{PREFIX}kept {n}"),
        }
    }

    /// What `id` names, if it is a `surfaces-media:` id.
    pub fn parse(id: &str) -> Option<MediaRef> {
        let rest = id.strip_prefix(PREFIX)?;
        let mut words = rest.split(' ');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("event"), Some(room), Some(event), None)
                if !room.is_empty() && !event.is_empty() =>
            {
                Some(MediaRef::Event {
                    room_id: room.to_string(),
                    event_id: event.to_string(),
                })
            }
            (Some("kept"), Some(n), None, None) => n.parse().ok().map(MediaRef::Kept),
            _ => None,
        }
    }
}

/// The kind of file a mime type names, for the Matrix message it goes in.
pub fn kind_of(mime: &str) -> MediaKind {
    match mime.split('/').next().unwrap_or_default() {
        "image" => MediaKind::Image,
        "audio" => MediaKind::Audio,
        "video" => MediaKind::Video,
        _ => MediaKind::File,
    }
}

/// The files of `message` the host must fetch before it goes to the agent,
/// in order, each once.
pub fn to_fetch(message: &AgentMessage) -> Vec<MediaRef> {
    let mut refs: Vec<MediaRef> = Vec::new();
    for a in &message.attachments {
        if let Some(r) = MediaRef::parse(&a.url)
            && !refs.contains(&r)
        {
            refs.push(r);
        }
    }
    refs
}

/// `message` with each `surfaces-media:` attachment replaced by its bytes
/// as a `data:` URL, or the error that fails the request: a file that could
/// not be fetched, one larger than `max_bytes`, or one past what a whole
/// message takes ([`MAX_FILES_PER_MESSAGE`], [`MAX_MESSAGE_FILE_BYTES`]).
/// `fetched` holds what the host got for each of [`to_fetch`]'s refs. The
/// error's message starts with the file's name ("NAME is ...", "NAME
/// would ...", "could not fetch NAME: ..."): the shipped guest reads it to
/// send the message again without that file (or, past the count, without
/// it and those after it).
pub fn inline(
    request: u64,
    mut message: AgentMessage,
    fetched: &[(MediaRef, Result<Vec<u8>, String>)],
    max_bytes: u64,
) -> Result<AgentMessage, AgentError> {
    let fail = |message: String| AgentError {
        request,
        kind: AgentErrorKind::Attachment,
        message,
    };
    let mut total = 0u64;
    for (i, a) in message.attachments.iter_mut().enumerate() {
        if i >= MAX_FILES_PER_MESSAGE {
            return Err(fail(format!(
                "{} is file {}, over the {MAX_FILES_PER_MESSAGE} files one message takes",
                a.name,
                i + 1
            )));
        }
        let Some(r) = MediaRef::parse(&a.url) else {
            continue;
        };
        let bytes = match fetched.iter().find(|(f, _)| *f == r) {
            Some((_, Ok(bytes))) => bytes,
            Some((_, Err(why))) => return Err(fail(format!("could not fetch {}: {why}", a.name))),
            None => return Err(fail(format!("could not fetch {}: not asked for", a.name))),
        };
        let size = bytes.len() as u64;
        if size > max_bytes {
            return Err(fail(format!(
                "{} is {}, over the {} the agent takes",
                a.name,
                human_bytes(size),
                human_bytes(max_bytes)
            )));
        }
        total += size;
        if total > MAX_MESSAGE_FILE_BYTES {
            return Err(fail(format!(
                "{} would bring this message's files to {}, over the {} one message takes",
                a.name,
                human_bytes(total),
                human_bytes(MAX_MESSAGE_FILE_BYTES)
            )));
        }
        a.url = surfaces_protocol::data_url(&a.mime, bytes);
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attachment, Sender};
    use proptest::prelude::*;

    fn message(urls: &[&str]) -> AgentMessage {
        AgentMessage {
            text: "what is this?".into(),
            sender: Sender {
                id: "@a:x".into(),
                display_name: None,
            },
            skills: vec![],
            attachments: urls
                .iter()
                .map(|u| Attachment {
                    name: "a.png".into(),
                    mime: "image/png".into(),
                    url: u.to_string(),
                })
                .collect(),
        }
    }

    proptest! {
        #[test]
        fn ids_name_what_they_were_made_from(room in "![a-zA-Z0-9]{1,12}:[a-z.]{1,10}",
                                             event in "\\$[a-zA-Z0-9_/+-]{1,43}",
                                             n: u64) {
            let e = MediaRef::Event { room_id: room, event_id: event };
            prop_assert_eq!(MediaRef::parse(&e.id()), Some(e));
            prop_assert_eq!(MediaRef::parse(&MediaRef::Kept(n).id()), Some(MediaRef::Kept(n)));
        }
    }

    #[test]
    fn other_urls_are_not_media() {
        assert_eq!(MediaRef::parse("https://example.org/a.png"), None);
        assert_eq!(MediaRef::parse("surfaces-media:kept x"), None);
        assert_eq!(MediaRef::parse("surfaces-media:event !r:x"), None);
        assert_eq!(MediaRef::parse("surfaces-media:event !r:x $e extra"), None);
    }

    #[test]
    fn fetched_files_go_inline_and_too_large_or_missing_ones_fail_the_request() {
        let r = MediaRef::Kept(1);
        let m = message(&[&r.id(), "https://example.org/b.png"]);
        assert_eq!(to_fetch(&m), vec![r.clone()]);
        let ok = inline(7, m.clone(), &[(r.clone(), Ok(vec![1, 2, 3]))], 3).unwrap();
        assert_eq!(ok.attachments[0].url, "data:image/png;base64,AQID");
        assert_eq!(ok.attachments[1].url, "https://example.org/b.png");
        let big = inline(7, m.clone(), &[(r.clone(), Ok(vec![0; 4]))], 3).unwrap_err();
        assert_eq!(big.kind, AgentErrorKind::Attachment);
        assert_eq!(
            big.message,
            "a.png is 4 bytes, over the 3 bytes the agent takes"
        );
        let lost = inline(7, m, &[(r, Err("404".into()))], 3).unwrap_err();
        assert_eq!(lost.message, "could not fetch a.png: 404");
    }

    #[test]
    fn a_message_takes_so_many_files_and_bytes_and_no_more() {
        let refs: Vec<_> = (0..=MAX_FILES_PER_MESSAGE as u64)
            .map(MediaRef::Kept)
            .collect();
        let ids: Vec<_> = refs.iter().map(MediaRef::id).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let small: Vec<_> = refs.iter().map(|r| (r.clone(), Ok(vec![1]))).collect();
        let many = inline(7, message(&ids), &small, 3).unwrap_err();
        assert_eq!(
            many.message,
            "a.png is file 21, over the 20 files one message takes"
        );
        let max = MAX_MESSAGE_FILE_BYTES;
        let half = (max / 2 + 1) as usize;
        let big: Vec<_> = refs[..2]
            .iter()
            .map(|r| (r.clone(), Ok(vec![0; half])))
            .collect();
        let heavy = inline(7, message(&ids[..2]), &big, max).unwrap_err();
        assert_eq!(
            heavy.message,
            "a.png would bring this message's files to 40 MiB, over the 40 MiB one message takes"
        );
        assert!(inline(7, message(&ids[..1]), &big, max).is_ok());
    }
}
