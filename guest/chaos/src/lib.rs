//! A guest that does what the message body says: `loop`, `trap`, `oom`,
//! `write-then-trap KEY`, `write-then-error KEY`, `write KEY`, `send TEXT`,
//! `count`, `error`, `flood N` (N sends), `shout N` (N log lines). It exists to
//! prove the embedding contains a misbehaving guest.

#![allow(clippy::too_many_arguments)] // generated import shims

wit_bindgen::generate!({
    path: "../../wit",
    world: "bot",
});

use surfaces::bot::types::LogLevel;
use surfaces::bot::types::MessageContent;
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
                send(&format!("swapped in: {:?}", r.outcome));
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
