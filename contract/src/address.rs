//! Who a message is for.
//!
//! A message addresses the bot when it is in a direct chat, mentions the
//! bot (a pill in `m.mentions`, the bot's user id anywhere in the text, or
//! its display name at the start: "surfaces: hi"), replies to one of the
//! bot's messages, or is a known command (`!help`). A display name counts
//! only at the start, as a word of its own: a bot called "surfaces" must
//! not answer "I like surfaces".

use crate::is_command;

/// What the bot makes of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressed<'a> {
    /// Not for the bot: stay quiet.
    No,
    /// A command: the text after the prefix.
    Command(&'a str),
    /// Text for the agent, the address dropped (may be empty: "surfaces?").
    Text(&'a str),
}

/// Whether a message mentions the bot. `pill`: `m.mentions` names the bot;
/// `replies_to_bot`: the message replies to one of the bot's events.
pub fn mentions_bot(
    body: &str,
    pill: bool,
    replies_to_bot: bool,
    bot_user_id: &str,
    bot_display_name: &str,
) -> bool {
    pill || replies_to_bot
        || (!bot_user_id.is_empty() && contains_ci(body, bot_user_id))
        || name_at_start(body.trim_start(), bot_display_name).is_some()
}

/// The message's text without a leading address ("surfaces: hi" -> "hi",
/// "@surfaces:example.org, hi" -> "hi"), trimmed.
fn strip_address<'a>(text: &'a str, bot_user_id: &str, bot_display_name: &str) -> &'a str {
    let text = text.trim();
    for name in [bot_user_id, bot_display_name] {
        if let Some(rest) = name_at_start(text, name) {
            return rest.trim_start();
        }
    }
    text
}

/// The one decision: is this message for the bot, and as what.
/// `direct`: the room is a direct chat; `mentioned`: [`mentions_bot`].
pub fn address<'a>(
    body: &'a str,
    direct: bool,
    mentioned: bool,
    is_notice: bool,
    prefix: &str,
    bot_user_id: &str,
    bot_display_name: &str,
) -> Addressed<'a> {
    if is_notice {
        return Addressed::No; // bots never answer each other
    }
    let text = strip_address(body, bot_user_id, bot_display_name);
    let spoken_to = direct || mentioned;
    match text.strip_prefix(prefix) {
        // In a group room, "!word" that is none of our commands is meant
        // for someone else (another bot): quiet unless we were mentioned.
        Some(rest) if spoken_to || is_command(first_word(rest)) => Addressed::Command(rest),
        Some(_) => Addressed::No,
        None if spoken_to => Addressed::Text(text),
        None => Addressed::No,
    }
}

/// `name` at the start of `text` (any case) as a word of its own, then an
/// optional `:` or `,`: what follows it.
fn name_at_start<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    if name.is_empty() {
        return None;
    }
    let head = text.get(..name.len())?;
    if !head.eq_ignore_ascii_case(name) {
        return None;
    }
    let rest = &text[name.len()..];
    let after = rest.trim_start_matches([':', ',']);
    let separated =
        after.len() < rest.len() || rest.is_empty() || rest.starts_with(char::is_whitespace);
    separated.then_some(after)
}

fn first_word(text: &str) -> &str {
    text.split_whitespace().next().unwrap_or("")
}

fn contains_ci(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOT: &str = "@surfaces:home.org";
    const NAME: &str = "surfaces";

    fn decide(body: &str, direct: bool, pill: bool) -> Addressed<'_> {
        let mentioned = mentions_bot(body, pill, false, BOT, NAME);
        address(body, direct, mentioned, false, "!", BOT, NAME)
    }

    #[test]
    fn who_is_addressed() {
        use Addressed::{Command, No, Text};
        // (body, direct chat, pill, what the bot makes of it)
        let cases = [
            ("hello", true, false, Text("hello")),
            ("!frobnicate", true, false, Command("frobnicate")),
            ("just chatting", false, false, No),
            ("what now?", false, true, Text("what now?")),
            ("Surfaces: what is 2+2?", false, false, Text("what is 2+2?")),
            ("surfaces, hi", false, false, Text("hi")),
            (
                "ask @surfaces:home.org",
                false,
                false,
                Text("ask @surfaces:home.org"),
            ),
            ("@surfaces:home.org: hi", false, false, Text("hi")),
            ("!usage", false, false, Command("usage")),
            ("!HELP me", false, false, Command("HELP me")),
            // Another bot's command, unless the bot was mentioned.
            ("!other-bot thing", false, false, No),
            ("!other-bot thing", false, true, Command("other-bot thing")),
            // A name counts only at the start, as a word of its own.
            ("I like surfaces a lot", false, false, No),
            ("surfacesfoo is nice", false, false, No),
            ("surfaces", false, false, Text("")),
        ];
        for (body, direct, pill, expected) in cases {
            assert_eq!(decide(body, direct, pill), expected, "{body:?}");
        }
    }

    #[test]
    fn replies_to_the_bot_address_it() {
        assert!(mentions_bot("and?", false, true, BOT, NAME));
        assert!(!mentions_bot("and?", false, false, BOT, NAME));
    }

    #[test]
    fn notices_are_never_addressed() {
        assert_eq!(
            address("!help", true, true, true, "!", BOT, NAME),
            Addressed::No
        );
    }
}
