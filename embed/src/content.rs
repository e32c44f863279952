//! Matrix event content as every host sends it: one builder, so the
//! simulator checks exactly what the native host puts on the wire.

use serde_json::{Value, json};

use crate::MessageContent;

/// The `m.room.message` content a host builds from the guest's content.
pub fn matrix_content(c: &MessageContent, replaces: Option<&str>) -> Value {
    let msgtype = if c.notice { "m.notice" } else { "m.text" };
    let mut inner = json!({ "msgtype": msgtype, "body": c.body });
    if let Some(html) = &c.formatted_body {
        inner["format"] = json!("org.matrix.custom.html");
        inner["formatted_body"] = json!(html);
    }
    if c.live {
        inner["org.matrix.msc4357.live"] = json!({});
    }
    inner["m.mentions"] = json!({ "user_ids": c.mentions });
    match replaces {
        Some(target) => {
            // An edit: fallback for old clients, the new content, and only
            // newly mentioned users at the top level (none).
            let mut outer = json!({
                "msgtype": msgtype,
                "body": format!("* {}", c.body),
                "m.new_content": inner,
                "m.relates_to": { "rel_type": "m.replace", "event_id": target },
                "m.mentions": {},
            });
            if let Some(html) = &c.formatted_body {
                outer["format"] = json!("org.matrix.custom.html");
                outer["formatted_body"] = json!(format!("* {html}"));
            }
            if c.live {
                outer["org.matrix.msc4357.live"] = json!({});
            }
            outer
        }
        None => {
            let relates = match (&c.thread_root, &c.reply_to) {
                (Some(root), reply) => Some(json!({
                    "rel_type": "m.thread",
                    "event_id": root,
                    "is_falling_back": reply.is_none(),
                    "m.in_reply_to": { "event_id": reply.as_deref().unwrap_or(root) },
                })),
                (None, Some(reply)) => Some(json!({ "m.in_reply_to": { "event_id": reply } })),
                (None, None) => None,
            };
            if let Some(r) = relates {
                inner["m.relates_to"] = r;
            }
            inner
        }
    }
}
