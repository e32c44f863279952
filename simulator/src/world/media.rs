//! Files in the simulated world: people's uploads in the fake media
//! repository, the host fetching them for the agent (through the same
//! `surfaces_embed::media` rules as the native host), files the fake agent
//! sends kept by the host until the guest sends them to the room.

use serde_json::{Value, json};
use surfaces_embed::media::{self, MediaRef};
use surfaces_embed::{
    AgentAttachment, AgentError, AgentMessage, AttachmentContent, Event, MatrixError,
    MatrixErrorKind, Media, MediaKind,
};

use super::World;
use super::facts::{AgentFile, FileSent};

/// The bytes of a file a person sends: its name and size make them, so a
/// seed replays them and two files never match by chance.
pub fn file_bytes(name: &str, size: u64) -> Vec<u8> {
    let seed = name
        .bytes()
        .fold(17u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    (0..size).map(|i| seed.wrapping_add(i as u8)).collect()
}

/// A file message's content, as Element sends it (a caption, MSC2530,
/// in `body` with the name in `filename`).
pub fn file_content(uri: &str, name: &str, size: Option<u64>, caption: Option<&str>) -> Value {
    let mime = mime_of(name);
    let msgtype = match media::kind_of(&mime) {
        MediaKind::Image => "m.image",
        MediaKind::Audio | MediaKind::Voice => "m.audio",
        MediaKind::Video => "m.video",
        MediaKind::File => "m.file",
    };
    let mut info = json!({ "mimetype": mime });
    if let Some(size) = size {
        info["size"] = json!(size);
    }
    json!({
        "msgtype": msgtype,
        "body": caption.unwrap_or(name),
        "filename": name,
        "url": uri,
        "info": info,
    })
}

/// The mime type of a file name, as clients guess it.
fn mime_of(name: &str) -> String {
    match name.rsplit_once('.').map(|(_, e)| e) {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("ogg") => "audio/ogg",
        Some("mp4") => "video/mp4",
        Some("pdf") => "application/pdf",
        _ => "application/octet-stream",
    }
    .to_string()
}

/// The file of a message event's content, as the host tells the guest of
/// it, with its caption ("" when it has none); `None` for a text.
pub fn attachment(room_id: &str, event_id: &str, c: &Value) -> Option<(Media, String)> {
    let kind = match c.get("msgtype")?.as_str()? {
        "m.image" => MediaKind::Image,
        "m.file" => MediaKind::File,
        "m.audio" if c.get("org.matrix.msc3245.voice").is_some() => MediaKind::Voice,
        "m.audio" => MediaKind::Audio,
        "m.video" => MediaKind::Video,
        _ => return None,
    };
    let body = c.get("body").and_then(Value::as_str).unwrap_or_default();
    let filename = c.get("filename").and_then(Value::as_str);
    let name = filename.unwrap_or(body).to_string();
    let caption = match filename {
        Some(f) if f != body => body.to_string(),
        _ => String::new(),
    };
    let media = Media {
        id: MediaRef::Event {
            room_id: room_id.to_string(),
            event_id: event_id.to_string(),
        }
        .id(),
        name,
        mime: c
            .pointer("/info/mimetype")
            .and_then(Value::as_str)
            .unwrap_or("application/octet-stream")
            .to_string(),
        size: c.pointer("/info/size").and_then(Value::as_u64),
        kind,
    };
    Some((media, caption))
}

/// A file a person sends.
pub(super) struct FileStep<'a> {
    pub name: &'a str,
    pub size: u64,
    /// Its size is in `info.size` (clients may leave it out).
    pub declared: bool,
    pub caption: Option<&'a str>,
}

impl World<'_> {
    /// A person sends a file (with a caption, perhaps): it is uploaded,
    /// then posted. Returns the event id.
    pub(super) fn post_file(
        &mut self,
        room: &str,
        from: &str,
        file: &FileStep<'_>,
        mut extra: Value,
    ) -> (String, FileSent) {
        let (name, size) = (file.name, file.size);
        let bytes = file_bytes(name, size);
        let uri = self.hs.upload(bytes.clone());
        let mut content = file_content(&uri, name, file.declared.then_some(size), file.caption);
        if let (Some(c), Some(x)) = (content.as_object_mut(), extra.as_object_mut()) {
            c.append(x);
        }
        let id = self
            .hs
            .post_user_message(room, from, self.now, content, None);
        let sent = FileSent {
            event_id: id.clone(),
            room_id: room.to_string(),
            sender: from.to_string(),
            name: name.to_string(),
            bytes,
            for_bot: false,
            seen: false,
            at: self.now,
            redacted_by: None,
        };
        (id, sent)
    }

    /// The host's agent client fetches the files of a message before it
    /// goes to the agent, as the native one does.
    pub(super) fn fetch_files(
        &mut self,
        request: u64,
        message: AgentMessage,
    ) -> Result<AgentMessage, AgentError> {
        let fetched: Vec<_> = media::to_fetch(&message)
            .into_iter()
            .map(|r| {
                let got = match &r {
                    MediaRef::Event { event_id, .. } => self
                        .hs
                        .event(event_id)
                        .and_then(|e| e.content.get("url").and_then(Value::as_str))
                        .and_then(|uri| self.hs.media.get(uri).cloned())
                        .ok_or_else(|| "M_NOT_FOUND: no such file".to_string()),
                    MediaRef::Kept(_) => Err("not a user's file".to_string()),
                };
                (r, got)
            })
            .collect();
        media::inline(request, message, &fetched, self.info.max_attachment_bytes)
    }

    /// The host keeps a file the agent sent and tells the guest.
    pub(super) fn keep_file(&mut self, request: u64, name: String, mime: String, bytes: Vec<u8>) {
        self.next_kept += 1;
        let n = self.next_kept;
        let room_id = self
            .kv
            .get(&format!("reply/{request:020}"))
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|r| r.pointer("/origin/room_id")?.as_str().map(str::to_string));
        self.facts.agent_files.push(AgentFile {
            request,
            room_id,
            name: name.clone(),
            bytes: bytes.clone(),
        });
        let media = Media {
            id: MediaRef::Kept(n).id(),
            kind: media::kind_of(&mime),
            size: Some(bytes.len() as u64),
            name: name.clone(),
            mime: mime.clone(),
        };
        self.kept.insert(n, (name, mime, bytes));
        self.deliver(Event::AgentAttachment(AgentAttachment { request, media }));
    }

    /// A kept file reaches the homeserver: uploaded and sent; the host
    /// forgets it once sent.
    pub(super) fn hs_send_file(
        &mut self,
        request: u64,
        room_id: &str,
        content: &AttachmentContent,
    ) -> Result<String, MatrixError> {
        let Some(MediaRef::Kept(n)) = MediaRef::parse(&content.media) else {
            return Err(MatrixError {
                kind: MatrixErrorKind::NotFound,
                message: format!("no kept file {}", content.media),
                retry_after_ms: None,
            });
        };
        let Some((name, _, bytes)) = self.kept.get(&n).cloned() else {
            return Err(MatrixError {
                kind: MatrixErrorKind::NotFound,
                message: format!("no kept file {}", content.media),
                retry_after_ms: None,
            });
        };
        let size = bytes.len() as u64;
        if size > self.scenario.homeserver.max_upload_bytes {
            return Err(MatrixError {
                kind: MatrixErrorKind::TooLarge,
                message: format!(
                    "M_TOO_LARGE: {size} bytes, over the {} this homeserver takes",
                    self.scenario.homeserver.max_upload_bytes
                ),
                retry_after_ms: None,
            });
        }
        let uri = self.hs.upload(bytes);
        let mut c = file_content(&uri, &name, Some(size), None);
        if let Some(root) = &content.thread_root {
            c["m.relates_to"] = json!({ "rel_type": "m.thread", "event_id": root,
                "is_falling_back": false,
                "m.in_reply_to": { "event_id": content.reply_to.clone().unwrap_or_default() } });
        } else if let Some(r) = &content.reply_to {
            c["m.relates_to"] = json!({ "m.in_reply_to": { "event_id": r } });
        }
        let bot = self.scenario.bot.user_id.clone();
        let sent = self
            .hs
            .send_file(&bot, &format!("s{request}"), room_id, c, self.now)?;
        self.kept.remove(&n);
        Ok(sent)
    }
}
