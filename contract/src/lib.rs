//! What the host and the guest must agree on beyond the types of
//! `wit/surfaces.wit`: one definition, used by the guest, the native
//! Matrix front end and the simulator, so the three cannot drift apart.
//!
//! - [`address`]: whether a message is addressed to the bot, and the text
//!   left once the address is dropped.
//! - [`COMMANDS`]: the words the guest answers as commands.
//! - [`HOST_RELOAD`], [`HOST_ROLLBACK`]: the request ids of swaps the host
//!   starts itself, and of its rollbacks.
//! - [`TRANSIENT`]: the store prefixes of work in progress.
//! - [`human_bytes`]: a file's size in the words both the guest's refusals
//!   and the host's errors use.

pub mod address;

pub use address::{Addressed, address, mentions_bot};

/// The `reload-result` request id of a swap the host started on its own
/// (the guest file changed, SIGHUP); the guest's own requests start at 1.
pub const HOST_RELOAD: u64 = 0;

/// The `reload-result` request id that tells the guest swapped back in
/// why the host rolled back the guest that replaced it (its outcome is
/// `Err(why)`); a guest's own ids never reach it.
pub const HOST_ROLLBACK: u64 = u64::MAX;

/// Store key prefixes that hold work in progress (a reply being streamed,
/// its text, a message not yet confirmed, a timer, a request's route) or a
/// record set aside (`bad/`): once every message is answered and the world
/// is quiet, a guest's store holds none of them (the simulator checks it).
/// Any other prefix is the guest's to keep.
pub const TRANSIENT: &[&str] = &[
    "reply/", "chunk/", "out/", "timer/", "route/", "bad/", "file/",
];

/// "512 bytes", "1.5 KiB", "8 MiB": a size in words.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let shown = format!("{value:.1}");
    let shown = shown.strip_suffix(".0").unwrap_or(&shown);
    format!("{shown} {}", UNITS[unit])
}

/// The guest's command words, aliases included, lowercase. In a group room
/// an unmentioned `!word` is the bot's business only if `word` is one of
/// these (another bot may answer the rest).
pub const COMMANDS: &[&str] = &[
    "help", "h", "?", "new", "reset", "context", "usage", "stop", "cancel", "status", "skills",
    "skill", "reload", "rollback",
];

/// Whether `word` (any case, lowercased as the guest's parser does) is
/// one of [`COMMANDS`].
pub fn is_command(word: &str) -> bool {
    COMMANDS.contains(&word.to_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(8 << 20), "8 MiB");
        assert_eq!(human_bytes(12_900_000), "12.3 MiB");
    }
}
