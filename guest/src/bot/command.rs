//! Commands: what each one does and the notice that answers it.

use super::{Bot, ECHO_MAX, Fate, count, cut};
use crate::commands::{self, Command};
use crate::host::Host;
use crate::state::{Conn, Contexts, Records, Route, User, route_key, user_key};
use crate::types::RoomMessage;

impl Bot {
    pub(super) fn on_command(
        &mut self,
        host: &mut dyn Host,
        m: &RoomMessage,
        cmd: Command,
        user: User,
    ) -> Result<(), String> {
        let p = self.cfg.command_prefix.clone();
        let ctx_id = self.context_id(&m.room_id, m.thread_root.as_deref(), &m.event_id);
        let text = match cmd {
            Command::Help => commands::help(
                &p,
                self.is_admin(&m.sender),
                &commands::Controls {
                    stop: &self.cfg.stop_reaction,
                    withdraw: &self.cfg.withdraw_reaction,
                    reask: self.cfg.on_edit == crate::config::OnEdit::Reask,
                },
            ),
            Command::New => 'new: {
                let mut ctx = host.context(&ctx_id)?;
                let admin = self.is_admin(&m.sender);
                if let Some(req) = ctx.in_flight
                    && let Some(r) = self.replies.peek(host, req)?
                    && r.origin.sender != m.sender
                    && !admin
                {
                    break 'new format!(
                        "A reply for {} is being written in this context: wait for it to \
                         finish, or ask them or an admin to `{p}stop` it.",
                        r.origin.sender
                    );
                }
                let stopped = if let Some(req) = ctx.in_flight {
                    host.agent_cancel(&ctx_id);
                    self.with_reply(host, req, |_, _, r| {
                        r.stop_requested = true;
                        Ok(Fate::Keep)
                    })?;
                    " The reply in progress was stopped."
                } else {
                    ""
                };
                host.agent_reset(&ctx_id);
                ctx.tokens = 0;
                ctx.messages = 0;
                ctx.agent_tokens = None;
                host.save_context(&ctx_id, &mut ctx)?;
                format!("🆕 Started a fresh agent context.{stopped}")
            }
            Command::Context => {
                let ctx = host.context(&ctx_id)?;
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
            Command::Usage => {
                let mut s = format!(
                    "**Usage** for {}: {} tokens over {}.",
                    m.sender,
                    commands::thousands(user.tokens),
                    count(user.messages, "message")
                );
                let limits = self.limits(&m.sender);
                if limits.any() {
                    s.push_str(&crate::quota::usage(limits, &user.quota, host.now()));
                } else if self.is_admin(&m.sender)
                    && (self.cfg.quotas.defaults.any() || !self.cfg.quotas.overrides.is_empty())
                {
                    s.push_str(" No quota applies to admins.");
                }
                s
            }
            Command::Stop => {
                let ctx = host.context(&ctx_id)?;
                match ctx.in_flight {
                    None => "Nothing to stop: no reply is being written.".to_string(),
                    Some(req) => {
                        let admin = self.is_admin(&m.sender);
                        let mut answer = None;
                        let found = self.with_reply(host, req, |_, host, r| {
                            Ok(if r.origin.sender != m.sender && !admin {
                                answer = Some(format!(
                                    "Only {} (who asked) or an admin can stop this reply.",
                                    r.origin.sender
                                ));
                                Fate::Untouched
                            } else if r.stop_requested {
                                answer = Some("Already stopping.".to_string());
                                Fate::Untouched
                            } else {
                                r.stop_requested = true;
                                host.agent_cancel(&ctx_id);
                                answer = Some("⏹️ Stopping the reply.".to_string());
                                Fate::Keep
                            })
                        })?;
                        match answer {
                            Some(text) if found => text,
                            _ => return Err(format!("reply {req} in flight has no record")),
                        }
                    }
                }
            }
            Command::Status => {
                let ctx = host.context(&ctx_id)?;
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
                let now = host.now();
                let swap: String = super::reload::swaps(host)?
                    .iter()
                    .take(3)
                    .map(|s| {
                        let (what, detail) = match (&s.outcome, s.rolled_back) {
                            (Ok(guest), _) => ("swapped in", guest),
                            (Err(why), true) => ("rolled back", why),
                            (Err(why), false) => ("refused", why),
                        };
                        let ago = ago(now.saturating_sub(s.at_ms));
                        format!("\n- swap {ago}: {what} ({detail})")
                    })
                    .collect();
                format!(
                    "**Status**\n\n\
                     - agent: {conn}{detail}, context `{ctx_id}`\n\
                     - reply in progress: {}\n\
                     - queue: {} waiting\n\
                     - guest: {} {} (sha256 {})\n\
                     - host: {}{swap}",
                    if ctx.in_flight.is_some() { "yes" } else { "no" },
                    ctx.queue.len(),
                    env!("CARGO_PKG_NAME"),
                    env!("CARGO_PKG_VERSION"),
                    self.info
                        .guest_hash
                        .get(..12)
                        .unwrap_or(&self.info.guest_hash),
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
                    host.save(&user_key(&m.sender), &user)?;
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
            Command::Reload => self.swap_command(host, m, false)?,
            Command::Rollback => self.swap_command(host, m, true)?,
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

    /// `reload` or (`back`) `rollback`: admins only; the host's answer
    /// comes as a `reload-result` naming the request, routed back here.
    fn swap_command(
        &mut self,
        host: &mut dyn Host,
        m: &RoomMessage,
        back: bool,
    ) -> Result<String, String> {
        if !self.is_admin(&m.sender) {
            let word = if back { "rollback" } else { "reload" };
            return Ok(format!("`{word}` is for admins only."));
        }
        let req = host.next_id()?;
        host.save(
            &route_key(req),
            &Route::Reload {
                room_id: m.room_id.clone(),
                reply_to: m.event_id.clone(),
                thread_root: m.thread_root.clone(),
                back,
            },
        )?;
        Ok(if back {
            host.rollback(req);
            "↩️ Going back to the previous guest…".to_string()
        } else {
            host.reload(req);
            "🔄 Reloading the guest…".to_string()
        })
    }
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

/// How long ago, roughly: `just now`, `5 min ago`, `3 h ago`, `2 d ago`.
fn ago(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => "just now".to_string(),
        60..3600 => format!("{} min ago", s / 60),
        3600..86_400 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}
