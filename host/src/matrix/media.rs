//! Files on Matrix: the file of an `m.image`, `m.file`, `m.audio` or
//! `m.video` message as the guest sees it, fetching it (download and
//! decrypt, through matrix-sdk) when its message goes to the agent, and
//! sending the agent's files (encrypted in an encrypted room).

use matrix_sdk::Client;
use matrix_sdk::attachment::AttachmentConfig;
use matrix_sdk::media::{MediaFormat, MediaRequestParameters};
use matrix_sdk::room::reply::{EnforceThread, Reply};
use matrix_sdk::ruma::events::room::MediaSource;
use matrix_sdk::ruma::events::room::message::{
    AddMentions, MessageType, ReplyWithinThread, SyncRoomMessageEvent,
};
use matrix_sdk::ruma::events::{AnySyncMessageLikeEvent, AnySyncTimelineEvent};
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, OwnedTransactionId};
use surfaces_embed::media::MediaRef;
use surfaces_embed::{AttachmentContent, MatrixError, MatrixErrorKind, Media, MediaKind};

use crate::media::{Fetch, Fetched, Kept};

/// The file a message carries, as the guest sees it, and its caption ("":
/// none), or `None` for a message that carries none.
pub fn file_of(msgtype: &MessageType, room_id: &str, event_id: &str) -> Option<(Media, String)> {
    // The four kinds share their fields but not their types.
    macro_rules! parts {
        ($c:expr, $kind:expr) => {{
            let info = $c.info.as_deref();
            let mime = info.and_then(|i| i.mimetype.clone());
            let size = info.and_then(|i| i.size);
            ($kind, $c.filename(), $c.caption(), mime, size)
        }};
    }
    let (kind, name, caption, mime, size) = match msgtype {
        MessageType::Image(c) => parts!(c, MediaKind::Image),
        MessageType::File(c) => parts!(c, MediaKind::File),
        // MSC3245: a voice message is audio flagged as such.
        MessageType::Audio(c) if c.voice.is_some() => parts!(c, MediaKind::Voice),
        MessageType::Audio(c) => parts!(c, MediaKind::Audio),
        MessageType::Video(c) => parts!(c, MediaKind::Video),
        _ => return None,
    };
    let media = Media {
        id: MediaRef::Event {
            room_id: room_id.to_string(),
            event_id: event_id.to_string(),
        }
        .id(),
        name: name.to_string(),
        mime: mime.unwrap_or_else(|| "application/octet-stream".into()),
        size: size.map(u64::from),
        kind,
    };
    Some((media, caption.unwrap_or_default().to_string()))
}

/// Where a message's file is (plain or encrypted), if it carries one.
fn source_of(msgtype: &MessageType) -> Option<MediaSource> {
    match msgtype {
        MessageType::Image(c) => Some(c.source.clone()),
        MessageType::File(c) => Some(c.source.clone()),
        MessageType::Audio(c) => Some(c.source.clone()),
        MessageType::Video(c) => Some(c.source.clone()),
        _ => None,
    }
}

/// Fetches users' files through the bot's matrix-sdk client: the event
/// again (decrypted), then its file (decrypted too).
pub struct SdkFetch {
    pub client: Client,
}

impl Fetch for SdkFetch {
    fn fetch(&self, file: MediaRef) -> Fetched {
        let client = self.client.clone();
        Box::pin(async move {
            let MediaRef::Event { room_id, event_id } = file else {
                return Err("not a file a user sent".to_string());
            };
            let room_id = OwnedRoomId::try_from(room_id).map_err(|e| e.to_string())?;
            let event_id = OwnedEventId::try_from(event_id).map_err(|e| e.to_string())?;
            let room = client
                .get_room(&room_id)
                .ok_or_else(|| "the bot is not in its room".to_string())?;
            let event = room
                .event(&event_id, None)
                .await
                .map_err(|e| format!("its message could not be read again: {e}"))?;
            let msgtype = match event.raw().deserialize() {
                Ok(AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(
                    SyncRoomMessageEvent::Original(m),
                ))) => m.content.msgtype,
                Ok(_) => return Err("its message carries no file any more".to_string()),
                Err(e) => return Err(format!("its message could not be decrypted: {e}")),
            };
            let source =
                source_of(&msgtype).ok_or_else(|| "its message carries no file".to_string())?;
            let request = MediaRequestParameters {
                source,
                format: MediaFormat::File,
            };
            client
                .media()
                .get_media_content(&request, false)
                .await
                .map_err(|e| format!("the download failed: {e}"))
        })
    }
}

/// Send a kept file into `room_id` as a message of its own (encrypted in
/// an encrypted room), answering and threaded as `content` says; the
/// file is forgotten once sent.
pub async fn send_kept(
    client: &Client,
    kept: &Kept,
    room_id: &str,
    txn: OwnedTransactionId,
    content: &AttachmentContent,
) -> Result<String, MatrixError> {
    let not_found = |message: String| MatrixError {
        kind: MatrixErrorKind::NotFound,
        message,
        retry_after_ms: None,
    };
    let Some(MediaRef::Kept(n)) = MediaRef::parse(&content.media) else {
        return Err(not_found(format!("{} is not a kept file", content.media)));
    };
    let file = kept
        .get(n)
        .map_err(|e| not_found(e.to_string()))?
        .ok_or_else(|| not_found(format!("the file {} is no longer kept", content.media)))?;
    let room = OwnedRoomId::try_from(room_id)
        .ok()
        .and_then(|id| client.get_room(&id))
        .ok_or_else(|| not_found(format!("the bot is not in {room_id}")))?;
    let mime: mime::Mime = file.mime.parse().unwrap_or(mime::APPLICATION_OCTET_STREAM);
    let mut config = AttachmentConfig::new().txn_id(txn);
    if let Some(to) = content
        .reply_to
        .as_deref()
        .and_then(|r| OwnedEventId::try_from(r).ok())
    {
        config = config.reply(Some(Reply {
            event_id: to,
            // In the reply's thread when it has one (forwarded from the
            // question, or started at it), else in the main timeline.
            enforce_thread: if content.thread_root.is_some() {
                EnforceThread::Threaded(ReplyWithinThread::Yes)
            } else {
                EnforceThread::Unthreaded
            },
            add_mentions: AddMentions::No,
        }));
    }
    let sent = room
        .send_attachment(file.name.clone(), &mime, file.bytes, config)
        .await
        .map_err(|e| super::port::sdk_error(&e))?;
    if let Err(e) = kept.forget(n) {
        tracing::warn!("a sent file stays kept: {e}");
    }
    Ok(sent.event_id.to_string())
}
