//! Where a room's timeline starts to count for the bot.
//!
//! The rule: a message sent after the bot was invited to a room is for the
//! bot, even one sent before its join (Element creates a direct chat
//! lazily: the room, the invite and the first message go out together,
//! before the bot has joined). Everything before the invite is history.
//! A room the bot joined without an invite (a public room) counts from the
//! join. On the very first start nothing already in a room counts.

/// One event of a room's timeline, as far as the rule needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// The bot's membership became `invite`.
    Invited,
    /// The bot's membership became `join` (not a profile change of a
    /// member already joined).
    Joined,
    /// Anything else.
    Other,
}

/// Where a room's window starts to count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Events from this index on count; those before are history.
    From(usize),
    /// The invite (or the join) may lie before the window: read older
    /// events, put them in front and ask again.
    NeedOlder,
    /// Nothing in the window counts.
    Nothing,
}

/// Where the part of a room's timeline `window` (oldest first) that counts
/// for the bot starts.
///
/// - `first_start`: the bot has no sync position yet (a new data dir);
/// - `new_room`: the bot was not in the room at the last sync position,
///   so the window reaches back past what it has seen;
/// - `older_available`: events before the window can still be read.
pub fn cut(window: &[Mark], first_start: bool, new_room: bool, older_available: bool) -> Cut {
    if first_start {
        return Cut::Nothing;
    }
    let join = window.iter().rposition(|m| *m == Mark::Joined);
    match join {
        Some(j) => match window[..j].iter().rposition(|m| *m == Mark::Invited) {
            Some(i) => Cut::From(i + 1),
            // Invited before the window starts, or joined uninvited.
            None if older_available => Cut::NeedOlder,
            None => Cut::From(j + 1),
        },
        // New, but the join is not in the window.
        None if new_room && older_available => Cut::NeedOlder,
        None if new_room => Cut::Nothing,
        // A room the bot was already in: all of it is new.
        None => Cut::From(0),
    }
}

#[cfg(test)]
mod tests {
    use super::{Cut, Mark::*, cut};

    #[test]
    fn the_first_start_counts_nothing() {
        assert_eq!(
            cut(&[Other, Invited, Joined, Other], true, true, false),
            Cut::Nothing
        );
    }

    #[test]
    fn a_lazy_dm_counts_from_the_invite() {
        // create, creator joins, invite, first message, bot joins, second
        let w = [Other, Other, Invited, Other, Joined, Other];
        assert_eq!(cut(&w, false, true, false), Cut::From(3));
        assert_eq!(cut(&w, false, true, true), Cut::From(3));
    }

    #[test]
    fn a_rejoin_counts_from_the_latest_invite() {
        let w = [Invited, Joined, Other, Other, Invited, Other, Joined];
        assert_eq!(cut(&w, false, false, false), Cut::From(5));
    }

    #[test]
    fn an_invite_before_the_window_is_looked_for() {
        let w = [Other, Joined, Other];
        assert_eq!(cut(&w, false, true, true), Cut::NeedOlder);
        // None found: an uninvited join counts from the join.
        assert_eq!(cut(&w, false, true, false), Cut::From(2));
    }

    #[test]
    fn a_new_room_without_its_join_in_sight_counts_nothing() {
        assert_eq!(cut(&[Other, Other], false, true, true), Cut::NeedOlder);
        assert_eq!(cut(&[Other, Other], false, true, false), Cut::Nothing);
    }

    #[test]
    fn a_known_room_counts_whole() {
        assert_eq!(cut(&[Other, Other], false, false, true), Cut::From(0));
    }
}
