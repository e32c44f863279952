//! A guest that does what the message body says: `loop`, `trap`, `oom`,
//! `write-then-trap KEY`, `write-then-error KEY`, `write KEY`, `send TEXT`,
//! `count`, `error`, `flood N` (N sends), `shout N` (N log lines), `wasi`
//! (what WASI's clocks and random streams give). It exists to prove the
//! embedding contains a misbehaving guest, and that what it reaches through
//! WASI is what the host chose.

#![allow(clippy::too_many_arguments)] // generated import shims

wit_bindgen::generate!({
    path: "../../wit",
    world: "bot",
});

use surfaces::bot::types::LogLevel;
use surfaces::bot::types::MessageContent;
use surfaces::bot::types::ReloadOutcome;
use surfaces::bot::{host, matrix, store};

struct Chaos;

static mut CALLS: u64 = 0;

impl Guest for Chaos {
    fn init(info: HostInfo) -> Result<GuestInfo, String> {
        std::panic::set_hook(Box::new(|p| {
            host::log(LogLevel::Error, &format!("guest panic: {p}"));
        }));
        if info.settings.iter().any(|(k, _)| k == "refuse") {
            return Err("refused by setting".into());
        }
        Ok(GuestInfo {
            name: "chaos".into(),
            version: "0.0.1".into(),
        })
    }

    fn handle(event: Event) -> Result<(), String> {
        // Counts calls on this instance: a fresh instance starts at zero.
        let calls = unsafe {
            CALLS += 1;
            CALLS
        };
        let m = match event {
            Event::Message(m) => m,
            // Say when it has been swapped in, so tests can wait for it.
            Event::ReloadResult(r) => {
                let outcome = match r.outcome {
                    ReloadOutcome::Swapped(v) => format!("Ok({v:?})"),
                    ReloadOutcome::Refused(why) => format!("Err({why:?})"),
                    ReloadOutcome::RolledBack(why) => format!("RolledBack({why:?})"),
                };
                send(&format!("swapped in: {outcome}"));
                return Ok(());
            }
            _ => return Ok(()),
        };
        let (cmd, arg) = m.body.split_once(' ').unwrap_or((m.body.as_str(), ""));
        match cmd {
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "trap" => panic!("asked to trap"),
            "oom" => {
                let mut v: Vec<Vec<u8>> = Vec::new();
                loop {
                    v.push(vec![1u8; 1 << 20]);
                }
            }
            "write" => store::put(arg, b"v"),
            "write-then-trap" => {
                store::put(arg, b"v");
                send("about to trap");
                panic!("trapped after writing");
            }
            "send" => send(arg),
            // N sends, N log lines of 1 KiB: past the per-call caps.
            "flood" => (0..arg.parse::<u32>().unwrap_or(0)).for_each(|_| send("x")),
            "shout" => {
                let line = "x".repeat(1024);
                (0..arg.parse::<u32>().unwrap_or(0)).for_each(|_| host::log(LogLevel::Info, &line));
            }
            "count" => send(&calls.to_string()),
            "wasi" => send(&wasi_view()),
            "error" => return Err("asked to fail".into()),
            "write-then-error" => {
                store::put(arg, b"v");
                send("about to fail");
                host::log(LogLevel::Warn, "failing after a write");
                return Err("failed after writing".into());
            }
            _ => {}
        }
        Ok(())
    }
}

// WASI's secure random, which std reaches only behind unstable APIs (and
// crates such as getrandom reach directly).
#[link(wasm_import_module = "wasi:random/random@0.2.0")]
unsafe extern "C" {
    #[link_name = "get-random-u64"]
    fn get_random_u64() -> i64;
}

/// Wall clock (ms), monotonic clock (ms), a secure random number and a
/// `HashMap` key hash (std seeds those from WASI's insecure seed).
fn wasi_view() -> String {
    use std::hash::BuildHasher;
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    // Instant has no public origin: measure it from the Unix epoch's
    // stand-in, the instant zero the host's monotonic clock counts from.
    let mono = std::time::Instant::now();
    let secure = unsafe { get_random_u64() } as u64;
    let hash = std::collections::hash_map::RandomState::new().hash_one(42u64);
    format!("wall={wall} mono={mono:?} secure={secure} hash={hash}")
}

fn send(text: &str) {
    matrix::send(
        0,
        "!room",
        &MessageContent {
            body: text.to_string(),
            formatted_body: None,
            notice: false,
            live: false,
            thread_root: None,
            reply_to: None,
            mentions: Vec::new(),
        },
    );
}

export!(Chaos);
