//! The native event loop with its real parts: the shipped guest (and the
//! misbehaving test guests) from files, SQLite on disk, the reference
//! agent over the WebSocket protocol, the file watcher. Only the Matrix
//! front end is a recorder here (the homeserver has tests of its own).
//!
//! Waits are on effects; the timeouts only stop a broken test from hanging.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use surfaces_embed::{
    BoxedKv, Budget, EditTarget, Entropy, Event, HostInfo, KvStore, MatrixEffect, MatrixResult,
    RoomMessage, Sandbox,
};
use surfaces_host::agent::client::{Backend, ClientConfig};
use surfaces_host::agent::pool::AgentPool;
use surfaces_host::agent::server::ServerConfig;
use surfaces_host::channels::{self, Control, EventSender, Handle};
use surfaces_host::front::FrontEnd;
use surfaces_host::metrics::Metrics;
use surfaces_host::runtime::{GuestSource, Runtime, RuntimeConfig};
use surfaces_host::store::SqliteStore;
use surfaces_host::swapcheck::SwapCheck;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const PATIENCE: Duration = Duration::from_secs(60);
const ROOM: &str = "!dm:test";
const USER: &str = "@alice:test";

/// Answers every Matrix request at once and shows the test each effect.
struct Recorder {
    events: EventSender,
    seen: mpsc::UnboundedSender<(MatrixEffect, Option<String>)>,
    next: u64,
}

impl FrontEnd for Recorder {
    fn execute(&mut self, effect: MatrixEffect) {
        let request = match &effect {
            MatrixEffect::Send { request, .. }
            | MatrixEffect::Edit { request, .. }
            | MatrixEffect::React { request, .. }
            | MatrixEffect::SendAttachment { request, .. }
            | MatrixEffect::Join { request, .. }
            | MatrixEffect::Leave { request, .. } => Some(*request),
            MatrixEffect::SetTyping { .. } | MatrixEffect::ReadReceipt { .. } => None,
        };
        let event_id = request.map(|request| {
            self.next += 1;
            let event_id = format!("$bot{}", self.next);
            let _ = self.events.send(Event::MatrixResult(MatrixResult {
                request,
                outcome: Ok(event_id.clone()),
            }));
            event_id
        });
        let _ = self.seen.send((effect, event_id));
    }
}

pub(super) struct Bot {
    handle: Handle,
    pub(super) effects: mpsc::UnboundedReceiver<(MatrixEffect, Option<String>)>,
    metrics: Arc<Metrics>,
    task: JoinHandle<Result<(), String>>,
    /// What the bot has said, by the message it answers.
    pub(super) replies: Replies,
}

/// Replies as a user sees them: the reply message per user message, its
/// text after each edit, and whether it is final.
#[derive(Default)]
pub(super) struct Replies {
    /// Send request -> user event it answers.
    by_request: BTreeMap<u64, String>,
    /// User event -> (text, final).
    text: BTreeMap<String, (String, bool)>,
    /// User event -> how many reply messages were sent for it.
    sends: BTreeMap<String, u32>,
    /// User event -> edits of its reply.
    edits: BTreeMap<String, u32>,
    /// Edits that arrived after their reply was final.
    late_edits: u32,
    /// Send request -> the event id the recorder gave it.
    event_ids: BTreeMap<u64, String>,
    /// Reply event id -> user event it answers.
    origin_by_event: BTreeMap<String, String>,
    notices: Vec<String>,
}

impl Replies {
    pub(super) fn record(&mut self, effect: &MatrixEffect, event_id: Option<String>) {
        if let (
            MatrixEffect::Send {
                request, content, ..
            },
            Some(id),
        ) = (effect, event_id)
        {
            if let (Some(origin), false) = (&content.reply_to, content.notice) {
                self.origin_by_event.insert(id.clone(), origin.clone());
            }
            self.event_ids.insert(*request, id);
        }
        match effect {
            MatrixEffect::Send {
                request, content, ..
            } => {
                if content.notice {
                    self.notices.push(content.body.clone());
                    return;
                }
                let Some(origin) = content.reply_to.clone() else {
                    return;
                };
                *self.sends.entry(origin.clone()).or_default() += 1;
                self.by_request.insert(*request, origin.clone());
                self.text
                    .insert(origin, (content.body.clone(), !content.live));
            }
            MatrixEffect::Edit {
                target, content, ..
            } => {
                let origin = match target {
                    EditTarget::Request(r) => self.by_request.get(r),
                    EditTarget::Event(e) => self.origin_by_event.get(e),
                };
                let Some(origin) = origin.cloned() else {
                    return;
                };
                if self.text.get(&origin).is_some_and(|t| t.1) {
                    self.late_edits += 1;
                }
                *self.edits.entry(origin.clone()).or_default() += 1;
                self.text
                    .insert(origin, (content.body.clone(), !content.live));
            }
            _ => {}
        }
    }

    /// The request and event id of the reply to `event_id`.
    fn first_send(&self, event_id: &str) -> (u64, String) {
        let request = self
            .by_request
            .iter()
            .find(|(_, origin)| origin.as_str() == event_id)
            .map(|(r, _)| *r)
            .unwrap_or_else(|| panic!("no reply to {event_id}"));
        (
            request,
            self.event_ids.get(&request).cloned().unwrap_or_default(),
        )
    }

    pub(super) fn final_text(&self, event_id: &str) -> Option<&str> {
        self.text
            .get(event_id)
            .filter(|t| t.1)
            .map(|t| t.0.as_str())
    }
}

pub(super) struct Setup {
    source: GuestSource,
    pub(super) db: PathBuf,
    cache: PathBuf,
    pub(super) server: ServerConfig,
    grace: Duration,
    /// Agent connections open at once.
    pub(super) max_connections: usize,
    /// The guest's time budget per call.
    budget_ms: u64,
    /// Guest settings besides the edit interval and the admin.
    pub(super) settings: Vec<(String, String)>,
    pub(super) swap_check: SwapCheck,
}

impl Setup {
    pub(super) fn new(dir: &Path, source: GuestSource) -> Setup {
        Setup {
            source,
            db: dir.join("surfaces.db"),
            // Shared by the tests: a debug build compiles a guest slowly.
            cache: Path::new(env!("CARGO_TARGET_TMPDIR")).join("guest-cache"),
            server: ServerConfig {
                chunks: 5,
                chunk_delay: Duration::from_millis(15),
                ..ServerConfig::default()
            },
            grace: Duration::from_secs(10),
            max_connections: 8,
            // Generous: an ordinary call must never run out of time on a
            // loaded CI machine; only the looping guest does.
            budget_ms: 1000,
            settings: Vec::new(),
            // Most tests swap to guests that are not the bot (chaos,
            // broken): the behaviour check has tests of its own.
            swap_check: SwapCheck::Contract,
        }
    }

    pub(super) fn start(&self) -> Bot {
        let channels = channels::channels();
        let handle = channels.handle.clone();
        let (seen, effects) = mpsc::unbounded_channel();
        let recorder = Recorder {
            events: handle.events.clone(),
            seen,
            next: 0,
        };
        let agents = AgentPool::new(
            ClientConfig::new(Backend::Echo(self.server.clone())),
            self.max_connections,
            Duration::from_secs(60),
            handle.events.clone(),
            handle.inbound.clone(),
        );
        let kv: BoxedKv = Box::new(SqliteStore::open(&self.db).expect("open the database"));
        let metrics = Metrics::new();
        let config = RuntimeConfig {
            source: self.source.clone(),
            cache_dir: self.cache.clone(),
            sandbox: Sandbox {
                budget: Budget::epoch_ms(self.budget_ms),
                memory_bytes: 64 << 20,
                entropy: Entropy::Os,
            },
            host_info: HostInfo {
                bot_user_id: "@bot:test".into(),
                bot_display_name: "bot".into(),
                host_version: "test".into(),
                settings: [
                    ("edit_interval_ms".to_string(), "20".to_string()),
                    ("admins".to_string(), USER.to_string()),
                ]
                .into_iter()
                .chain(self.settings.iter().cloned())
                .collect(),
                max_event_bytes: 65_536,
                resumed: false,
                guest_hash: String::new(),
                max_attachment_bytes: 8 << 20,
            },
            shutdown_grace: self.grace,
            swap_check: self.swap_check,
            kept_dir: self.db.with_file_name("guests"),
        };
        let runtime = Runtime::start(
            config,
            channels,
            kv,
            agents,
            Box::new(recorder),
            metrics.clone(),
        )
        .expect("the bot starts");
        let task = tokio::spawn(runtime.run());
        Bot {
            handle,
            effects,
            metrics,
            task,
            replies: Replies::default(),
        }
    }
}

impl Bot {
    fn say(&self, n: u32, body: &str) {
        self.say_in(ROOM, &format!("$m{n}"), body);
    }

    /// A direct message from Alice in `room`, with its event id.
    pub(super) fn say_in(&self, room: &str, event_id: &str, body: &str) {
        self.handle
            .events
            .send(Event::Message(RoomMessage {
                room_id: room.into(),
                event_id: event_id.into(),
                sender: USER.into(),
                sender_display_name: Some("Alice".into()),
                body: body.into(),
                thread_root: None,
                reply_to: None,
                is_direct: true,
                mentions_bot: false,
                is_notice: false,
                origin_server_ts: surfaces_host::time::now_ms(),
                attachments: Vec::new(),
            }))
            .expect("the loop is running");
    }

    fn control(&self, control: Control) {
        self.handle
            .control
            .send(control)
            .expect("the loop is running");
    }

    /// Take effects until `done` holds; returns the effects seen.
    async fn until(
        &mut self,
        what: &str,
        done: impl Fn(&Replies, &MatrixEffect) -> bool,
    ) -> Vec<MatrixEffect> {
        let mut seen = Vec::new();
        let wait = async {
            while let Some((effect, event_id)) = self.effects.recv().await {
                self.replies.record(&effect, event_id);
                let stop = done(&self.replies, &effect);
                seen.push(effect);
                if stop {
                    return true;
                }
            }
            false
        };
        match tokio::time::timeout(PATIENCE, wait).await {
            Ok(true) => seen,
            _ => panic!("gave up waiting for {what}; saw {seen:#?}"),
        }
    }

    async fn final_reply(&mut self, event: &str) -> String {
        self.until(&format!("the final reply to {event}"), |r, _| {
            r.final_text(event).is_some()
        })
        .await;
        self.replies
            .final_text(event)
            .unwrap_or_default()
            .to_string()
    }

    pub(super) fn metric(&self, line_start: &str) -> u64 {
        self.metrics
            .encode()
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }

    pub(super) async fn stop(self) -> Replies {
        self.control(Control::Shutdown);
        let Bot {
            task,
            mut effects,
            mut replies,
            ..
        } = self;
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("the bot stops")
            .expect("the loop does not panic")
            .expect("the bot stops without an error");
        while let Ok((effect, event_id)) = effects.try_recv() {
            replies.record(&effect, event_id);
        }
        replies
    }
}

fn guest_file(dir: &Path, wasm: &[u8]) -> PathBuf {
    let path = dir.join("guest.wasm");
    write_guest(&path, wasm);
    path
}

/// Replace the guest file the way a build does: write aside, rename.
fn write_guest(path: &Path, wasm: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, wasm).expect("write the guest");
    std::fs::rename(&tmp, path).expect("move the guest in place");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_in_the_middle_of_replies_lose_and_repeat_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = guest_file(dir.path(), surfaces_artifacts::GUEST_WASM);
    let mut bot = Setup::new(dir.path(), GuestSource::File(path)).start();
    const MESSAGES: u32 = 6;
    for n in 1..=MESSAGES {
        bot.say(n, &format!("message number {n} with a few words to stream"));
        // Swap while this reply is streaming: after its first piece shows.
        let event = format!("$m{n}");
        bot.until("the reply to start streaming", |r, _| {
            r.text.contains_key(&event)
        })
        .await;
        bot.control(Control::Reload { request: None });
        // And one more message arrives while the swap is being compiled.
        if n % 2 == 0 {
            bot.say(100 + n, &format!("queued behind {n}"));
        }
    }
    let mut expected: Vec<(String, String)> = (1..=MESSAGES)
        .map(|n| {
            (
                format!("$m{n}"),
                format!("message number {n} with a few words to stream"),
            )
        })
        .collect();
    expected.extend(
        (1..=MESSAGES)
            .filter(|n| n % 2 == 0)
            .map(|n| (format!("$m{}", 100 + n), format!("queued behind {n}"))),
    );
    for (event, text) in &expected {
        assert_eq!(bot.final_reply(event).await, *text, "reply to {event}");
    }
    assert_eq!(
        bot.metric("surfaces_guest_swaps_total{kind=\"ok\"}"),
        u64::from(MESSAGES)
    );
    assert_eq!(bot.metric("surfaces_guest_failures_total"), 0);
    let replies = bot.stop().await;
    for (event, _) in &expected {
        assert_eq!(
            replies.sends.get(event),
            Some(&1),
            "one reply message for {event}"
        );
    }
    assert_eq!(replies.late_edits, 0, "no edit after a reply's final text");
    assert_eq!(
        replies.sends.len(),
        expected.len(),
        "no reply to anything else"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_that_break_are_contained_and_the_last_good_one_serves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = guest_file(dir.path(), surfaces_artifacts::GUEST_WASM);
    let mut bot = Setup::new(dir.path(), GuestSource::File(path.clone())).start();
    let _watcher =
        surfaces_host::watch::guest_file(&path, bot.handle.control.clone()).expect("watch");
    bot.say(1, "hello");
    assert_eq!(bot.final_reply("$m1").await, "hello");

    // A component without `handle`, dropped in place: the watcher starts
    // a swap, the swap is refused, the admin hears why, and the shipped
    // guest keeps answering.
    write_guest(&path, surfaces_artifacts::BROKEN_WASM);
    bot.until("admins told of the refused swap", |r, _| {
        r.notices.iter().any(|n| n.contains("was refused"))
    })
    .await;
    bot.say(2, "still there?");
    assert_eq!(bot.final_reply("$m2").await, "still there?");
    assert_eq!(
        bot.metric("surfaces_guest_swaps_total{kind=\"refused\"}"),
        1
    );

    // A guest that loops, traps or eats memory on request: each call is
    // stopped and reported, and a fresh instance serves the next event.
    write_guest(&path, surfaces_artifacts::CHAOS_WASM);
    bot.until("the test guest to be swapped in", |_, e| {
        sent_body(e).starts_with("swapped in: Ok")
    })
    .await;
    for (n, body) in [(3, "loop"), (4, "trap")] {
        bot.say(n, body);
    }
    // Each was delivered twice (a second chance on a fresh instance in
    // case the failure was transient), then dropped.
    bot.say(5, "send still serving");
    bot.until("a fresh instance to answer", |_, e| {
        sent_body(e) == "still serving"
    })
    .await;
    // A third failure among its first events: the guest is sent back.
    bot.say(6, "oom");
    bot.until("the rollback", |r, _| {
        r.notices
            .iter()
            .any(|n| n.contains("rolled back to surfaces-guest"))
    })
    .await;
    // At least twice: a loaded machine may time out an ordinary call too
    // (which the second chance then handles).
    assert!(bot.metric("surfaces_guest_failures_total{kind=\"timeout\"}") >= 2);
    assert_eq!(
        bot.metric("surfaces_guest_failures_total{kind=\"trap\"}"),
        2
    );
    assert_eq!(
        bot.metric("surfaces_guest_failures_total{kind=\"out_of_memory\"}"),
        2
    );
    bot.stop().await;
}

fn sent_body(effect: &MatrixEffect) -> &str {
    match effect {
        MatrixEffect::Send { content, .. } => &content.body,
        _ => "",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_host_restarts_from_what_sqlite_acknowledged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut setup = Setup::new(
        dir.path(),
        GuestSource::Builtin(surfaces_artifacts::GUEST_WASM),
    );
    // Slow enough to be killed in the middle of the reply.
    setup.server.chunk_delay = Duration::from_millis(300);
    let mut bot = setup.start();
    bot.say(1, "a reply that will be cut by the kill");
    bot.until("the reply to be edited once", |r, _| {
        r.edits.contains_key("$m1")
    })
    .await;
    assert!(bot.replies.notices.iter().any(|n| n.contains("Hi Alice")));
    let (first_send, first_event) = bot.replies.first_send("$m1");
    // Killed: no graceful shutdown, nothing flushed but what was committed.
    bot.task.abort();
    let _ = bot.task.await;

    let mut bot = setup.start();
    // The cut reply is closed with a final edit of the same message...
    let closing = bot
        .until(
            "the cut reply to be closed",
            |_, e| matches!(e, MatrixEffect::Edit { content, .. } if !content.live),
        )
        .await;
    let Some(MatrixEffect::Edit {
        target, content, ..
    }) = closing.last()
    else {
        panic!("no final edit in {closing:#?}");
    };
    assert!(
        *target == EditTarget::Request(first_send) || *target == EditTarget::Event(first_event),
        "the final edit names the original message: {target:?}"
    );
    assert!(content.body.starts_with("a reply"), "{}", content.body);
    // ...and the user is known: no second greeting, and the next message
    // is answered normally.
    bot.say(2, "and now?");
    assert_eq!(bot.final_reply("$m2").await, "and now?");
    let replies = bot.stop().await;
    assert!(
        !replies.notices.iter().any(|n| n.contains("Hi Alice")),
        "greeted twice"
    );
    assert_eq!(replies.sends.get("$m1"), None, "a second reply to $m1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_replies_or_marks_them_incomplete() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut setup = Setup::new(
        dir.path(),
        GuestSource::Builtin(surfaces_artifacts::GUEST_WASM),
    );
    setup.server.chunk_delay = Duration::from_millis(40);
    let mut bot = setup.start();
    // Within the grace period: the reply in flight is finished.
    bot.say(1, "finish me before you go");
    bot.until("the reply to start", |r, _| r.text.contains_key("$m1"))
        .await;
    let replies = bot.stop().await;
    assert_eq!(replies.final_text("$m1"), Some("finish me before you go"));

    // Past the grace period: the reply is cut, and says so.
    setup.server.chunk_delay = Duration::from_millis(400);
    setup.grace = Duration::from_millis(100);
    let mut bot = setup.start();
    bot.say(2, "this one cannot finish");
    bot.until("the reply to start", |r, _| r.text.contains_key("$m2"))
        .await;
    let replies = bot.stop().await;
    let text = replies.final_text("$m2").expect("a final edit before exit");
    assert!(text.starts_with("this"), "{text}");
    assert!(
        text.contains("Reply incomplete"),
        "marked incomplete: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_behaviour_check_refuses_a_guest_that_starts_but_does_not_answer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = guest_file(dir.path(), surfaces_artifacts::GUEST_WASM);
    let mut setup = Setup::new(dir.path(), GuestSource::File(path.clone()));
    setup.swap_check = SwapCheck::Behaviour { seeds: 3 };
    let mut bot = setup.start();
    bot.say(1, "hello");
    assert_eq!(bot.final_reply("$m1").await, "hello");

    // The bot's own guest passes its check, and is swapped in.
    bot.say(2, "!reload");
    bot.until("the reload answer", |r, _| {
        r.notices
            .iter()
            .any(|n| n.contains("Reloaded: now running guest surfaces-guest"))
    })
    .await;

    // The chaos guest compiles, fits the contract and starts on the live
    // store, but answers nothing: its check refuses it, the admin hears
    // which rule it broke and how to replay it, and the bot goes on.
    write_guest(&path, surfaces_artifacts::CHAOS_WASM);
    bot.say(3, "!reload");
    bot.until("the refusal", |r, _| {
        r.notices.iter().any(|n| {
            n.contains("Reload refused")
                && n.contains("failed its behaviour check")
                && n.contains("every addressed message is answered")
                && n.contains("replay: surfaces-sim run")
        })
    })
    .await;
    bot.say(4, "still there?");
    assert_eq!(bot.final_reply("$m4").await, "still there?");
    assert_eq!(bot.metric("surfaces_guest_swaps_total{kind=\"ok\"}"), 1);
    assert_eq!(
        bot.metric("surfaces_guest_swaps_total{kind=\"refused\"}"),
        1
    );
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_guest_that_keeps_failing_is_rolled_back_and_refused_until_it_changes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = guest_file(dir.path(), surfaces_artifacts::GUEST_WASM);
    let setup = Setup::new(dir.path(), GuestSource::File(path.clone()));
    let mut bot = setup.start();
    bot.say(1, "hello");
    assert_eq!(bot.final_reply("$m1").await, "hello");

    // The chaos guest passes the contract check and starts, then traps on
    // what it is sent: on its third failed event it is sent back.
    write_guest(&path, surfaces_artifacts::CHAOS_WASM);
    bot.control(Control::Reload { request: None });
    bot.until("the test guest to be swapped in", |_, e| {
        sent_body(e).starts_with("swapped in: Ok")
    })
    .await;
    for n in 2..=4 {
        bot.say(n, "trap");
    }
    bot.until("admins told of the rollback", |r, _| {
        r.notices.iter().any(|n| {
            n.contains("The new guest was rolled back")
                && n.contains("chaos 0.0.1")
                && n.contains("failed on 3 of its first")
                && n.contains("rolled back to surfaces-guest 0.1.0")
        })
    })
    .await;
    bot.say(5, "back again?");
    assert_eq!(bot.final_reply("$m5").await, "back again?");
    assert_eq!(
        bot.metric("surfaces_guest_swaps_total{kind=\"rolled_back\"}"),
        1
    );

    // The same file is refused until it changes, across a restart too:
    // the restarted bot serves the guest it went back to, not the file.
    bot.say(6, "!reload");
    let refused = |r: &Replies, _: &MatrixEffect| {
        r.notices
            .iter()
            .filter(|n| {
                n.contains("Reload refused") && n.contains("was rolled back after it failed")
            })
            .count()
    };
    bot.until("the refusal of the same file", |r, e| refused(r, e) == 1)
        .await;
    bot.stop().await;
    let mut bot = setup.start();
    bot.say(8, "after a restart?");
    assert_eq!(bot.final_reply("$m8").await, "after a restart?");
    bot.say(9, "!reload");
    bot.until("the refusal after the restart", |r, e| refused(r, e) == 1)
        .await;
    // A changed file swaps again: the bot's own guest with a custom
    // section appended (other bytes, the same logic).
    let mut changed = surfaces_artifacts::GUEST_WASM.to_vec();
    changed.extend_from_slice(&[0x00, 0x05, 0x04, b't', b'e', b's', b't']);
    write_guest(&path, &changed);
    bot.say(7, "!reload");
    bot.until("the changed file to be swapped in", |r, _| {
        r.notices
            .iter()
            .any(|n| n.contains("Reloaded: now running guest surfaces-guest"))
    })
    .await;
    assert_eq!(bot.metric("surfaces_guest_swaps_total{kind=\"ok\"}"), 1);
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_to_a_new_record_format_migrates_what_the_old_guest_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = guest_file(dir.path(), surfaces_artifacts::NOTES_V1_WASM);
    let mut setup = Setup::new(dir.path(), GuestSource::File(path.clone()));
    setup.swap_check = SwapCheck::Behaviour { seeds: 3 };
    let mut bot = setup.start();
    let answered = |text: &'static str| {
        move |r: &Replies, _: &MatrixEffect| r.notices.iter().any(|n| n.contains(text))
    };
    bot.say(1, "!note milk");
    bot.until("the first note", answered("Noted (1 in all)."))
        .await;
    bot.say(2, "!note eggs");
    bot.until("the second note", answered("Noted (2 in all)."))
        .await;

    // Version 2 keeps notes as lines (schema 2): it passes its behaviour
    // check on a copy of this store, is swapped in, migrates the store in
    // its init, and answers the reload that version 1 was asked for.
    write_guest(&path, surfaces_artifacts::NOTES_V2_WASM);
    bot.say(3, "!reload");
    bot.until(
        "the reload answer",
        answered("Reloaded: now running notes 2.0.0"),
    )
    .await;
    bot.say(4, "!notes");
    bot.until("the notes, migrated", answered("1. milk\n2. eggs"))
        .await;
    bot.say(5, "!note bread");
    bot.until("a note in the new format", answered("Noted (3 in all)."))
        .await;

    // Version 1 cannot read schema 2: going back is refused, and version 2
    // keeps serving with every note.
    write_guest(&path, surfaces_artifacts::NOTES_V1_WASM);
    bot.say(6, "!reload");
    bot.until("the refusal", |r, _| {
        r.notices.iter().any(|n| {
            n.contains("Reload refused") && n.contains("guests before schema 2 cannot read")
        })
    })
    .await;
    bot.say(7, "!notes");
    bot.until("every note", answered("1. milk\n2. eggs\n3. bread"))
        .await;
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_reload_swaps_and_answers_in_the_room() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = guest_file(dir.path(), surfaces_artifacts::GUEST_WASM);
    let mut bot = Setup::new(dir.path(), GuestSource::File(path)).start();
    bot.say(1, "!reload");
    bot.until("the reload answer", |r, _| {
        r.notices
            .iter()
            .any(|n| n.contains("Reloaded: now running guest surfaces-guest"))
    })
    .await;
    assert_eq!(bot.metric("surfaces_guest_swaps_total{kind=\"ok\"}"), 1);
    // `status` names the guest swapped in, by the hash of its file.
    let hash = surfaces_embed::content_hash(surfaces_artifacts::GUEST_WASM);
    let swapped = format!(
        "swap just now: swapped in (surfaces-guest 0.1.0 ({})",
        &hash[..12]
    );
    bot.say(2, "!status");
    bot.until("the status", |r, _| {
        r.notices.iter().any(|n| n.contains(&swapped))
    })
    .await;
    bot.stop().await;

    // A bot on its built-in guest has no file to swap to, and says so.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bot = Setup::new(
        dir.path(),
        GuestSource::Builtin(surfaces_artifacts::GUEST_WASM),
    )
    .start();
    bot.say(1, "!reload");
    bot.until("the refusal", |r, _| {
        r.notices
            .iter()
            .any(|n| n.contains("Reload refused") && n.contains("built-in guest"))
    })
    .await;
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_rollback_goes_back_to_the_guest_before_mid_reply_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = guest_file(dir.path(), surfaces_artifacts::GUEST_WASM);
    let mut setup = Setup::new(dir.path(), GuestSource::File(path.clone()));
    // Replies hold before their end until the test lets them go: the
    // swaps land while they are being written, whatever the machine.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    setup.server.gate = Some(gate.clone());
    // The next release's record format (schema 3, readable by schema 2),
    // checked by behaviour like any candidate.
    setup.swap_check = SwapCheck::Behaviour { seeds: 3 };
    let mut bot = setup.start();
    let noticed = |text: &'static str| {
        move |r: &Replies, _: &MatrixEffect| r.notices.iter().any(|n| n.contains(text))
    };

    // Nothing ran before the first guest: nothing to go back to.
    bot.say(1, "!rollback");
    bot.until("the refusal", noticed("nothing to go back to"))
        .await;
    assert!(
        bot.replies
            .notices
            .iter()
            .any(|n| n.contains("Rollback refused, this guest keeps running")),
        "{:?}",
        bot.replies.notices
    );

    // A reply streams and a question waits behind it (in the shipped
    // guest's format) while the next release is swapped in...
    bot.say(2, "the first question, answered across two swaps");
    bot.until("the first reply to stream", |r, _| {
        r.text.contains_key("$m2")
    })
    .await;
    bot.say(3, "a question queued in one format, answered in another");
    bot.until("the queue notice", noticed("queued")).await;
    write_guest(&path, surfaces_artifacts::GUEST_NEXT_WASM);
    bot.say(4, "!reload");
    bot.until("the reload", noticed("Reloaded: now running guest"))
        .await;
    bot.say(5, "a question asked of the new guest, queued in its format");
    // ...and back, while the first reply is still being written.
    bot.say(6, "!rollback");
    bot.until("the rollback", noticed("↩️ Rolled back:")).await;
    assert!(
        bot.replies.final_text("$m2").is_none(),
        "the first reply was still streaming"
    );
    let old = surfaces_embed::content_hash(surfaces_artifacts::GUEST_WASM);
    assert!(
        bot.replies
            .notices
            .iter()
            .any(|n| n.contains("Rolled back:")
                && n.contains("serves again")
                && n.contains(&old[..12])),
        "names the guest that serves again: {:?}",
        bot.replies.notices
    );
    gate.add_permits(3);
    for (event, text) in [
        ("$m2", "the first question, answered across two swaps"),
        (
            "$m3",
            "a question queued in one format, answered in another",
        ),
        (
            "$m5",
            "a question asked of the new guest, queued in its format",
        ),
    ] {
        assert_eq!(bot.final_reply(event).await, text, "reply to {event}");
    }
    // Once back, the guest it left is the one to go back to no more: the
    // host goes back in time, not forth.
    bot.say(7, "!rollback");
    bot.until("the second refusal", |r, _| {
        r.notices
            .iter()
            .filter(|n| n.contains("nothing to go back to"))
            .count()
            == 2
    })
    .await;
    bot.say(8, "!status");
    bot.until("the status", noticed("rolled back (")).await;
    assert_eq!(
        bot.metric("surfaces_guest_swaps_total{kind=\"rolled_back\"}"),
        1
    );
    let replies = bot.stop().await;
    for event in ["$m2", "$m3", "$m5"] {
        assert_eq!(replies.sends.get(event), Some(&1), "one reply to {event}");
    }
    assert_eq!(replies.late_edits, 0, "no edit after a reply's final text");
    // The store: at the schema the newer guest wrote (the older reads it),
    // and nothing left queued, in flight or pending.
    let store = SqliteStore::open(&setup.db).expect("open");
    let schema = KvStore::get(&store, "meta/schema/surfaces-bot")
        .expect("read")
        .expect("a schema record");
    assert_eq!(
        String::from_utf8_lossy(&schema),
        r#"{"version":3,"readable_from":2}"#
    );
    assert_nothing_pending(&store);
    drop(store);

    // A restart serves the guest the admin went back to, not the file it
    // stepped back from; an admin's reload takes the file again.
    let mut bot = setup.start();
    let status_names = |hash: String| {
        move |r: &Replies, _: &MatrixEffect| {
            r.notices.iter().any(|n| {
                n.contains(&format!(
                    "- guest: surfaces-guest 0.1.0 (sha256 {})",
                    &hash[..12]
                ))
            })
        }
    };
    bot.say(9, "!status");
    bot.until("the status after a restart", status_names(old))
        .await;
    bot.say(10, "!reload");
    bot.until("the reload", noticed("Reloaded: now running guest"))
        .await;
    let next = surfaces_embed::content_hash(surfaces_artifacts::GUEST_NEXT_WASM);
    bot.say(11, "!status");
    bot.until("the status after the reload", status_names(next))
        .await;
    bot.stop().await;
}

/// Liveness in the store: no reply, part, send, timer or route left, and
/// no context with a queue or a request in flight.
fn assert_nothing_pending(store: &SqliteStore) {
    for prefix in ["reply/", "chunk/", "out/", "timer/", "route/", "wait/"] {
        let left = store.keys(prefix).expect("keys");
        assert!(left.is_empty(), "the store still holds {left:?}");
    }
    for key in store.keys("ctx/").expect("keys") {
        let bytes = KvStore::get(store, &key).expect("read").expect("listed");
        let ctx: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(ctx["in_flight"], serde_json::Value::Null, "{key}: {ctx}");
        assert_eq!(ctx["queue"], serde_json::json!([]), "{key}: {ctx}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_skips_a_guest_on_probation_and_holds_across_a_restart_and_a_touch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = guest_file(dir.path(), surfaces_artifacts::GUEST_WASM);
    let setup = Setup::new(dir.path(), GuestSource::File(path.clone()));
    let mut bot = setup.start();
    let noticed = |text: &'static str, n: usize| {
        move |r: &Replies, _: &MatrixEffect| {
            r.notices.iter().filter(|m| m.contains(text)).count() == n
        }
    };
    // Two more guests in turn (the shipped guest's next record format,
    // then its planted build with no bug on), the second swapped in while
    // the first is still on probation.
    for (n, wasm) in [
        (1, surfaces_artifacts::GUEST_NEXT_WASM),
        (2, surfaces_artifacts::PLANTED_WASM),
    ] {
        write_guest(&path, wasm);
        bot.say(n, "!reload");
        bot.until(
            "the reload",
            noticed("Reloaded: now running guest", n as usize),
        )
        .await;
    }
    // Back to the last guest past its probation, the first; the one in
    // between was never proven, so there is no going back to it (nor
    // forth to the one left).
    let first = surfaces_embed::content_hash(surfaces_artifacts::GUEST_WASM);
    bot.say(3, "!rollback");
    bot.until("the rollback", noticed("Rolled back:", 1)).await;
    assert!(
        bot.replies
            .notices
            .iter()
            .any(|n| n.contains("Rolled back:") && n.contains(&first[..12])),
        "{:?}",
        bot.replies.notices
    );
    bot.say(4, "!rollback");
    bot.until("no earlier guest", noticed("nothing to go back to", 1))
        .await;
    // A touch of the file (a deploy writing the same bytes, a SIGHUP) does
    // not bring back what an admin stepped back from.
    bot.control(Control::Reload { request: None });
    bot.until(
        "the refusal",
        noticed("an admin stepped back from this file", 1),
    )
    .await;
    bot.stop().await;

    // Nor does a restart: the first guest serves.
    let mut bot = setup.start();
    let guest_line = move |r: &Replies, _: &MatrixEffect| {
        r.notices.iter().any(|n| {
            n.contains(&format!(
                "- guest: surfaces-guest 0.1.0 (sha256 {})",
                &first[..12]
            ))
        })
    };
    bot.say(5, "!status");
    bot.until("the first guest serving after the restart", guest_line)
        .await;
    bot.say(6, "!rollback");
    bot.until("no earlier guest", noticed("nothing to go back to", 1))
        .await;
    // An admin's reload takes the file again.
    bot.say(7, "!reload");
    bot.until("the reload", noticed("Reloaded: now running guest", 1))
        .await;
    bot.stop().await;
}

/// A store with `contexts` idle thread contexts (a month old) and one
/// with a question the last run had queued while the agent was away;
/// `indexed`: with the index of contexts to recover (an older store has
/// none).
fn prefill(db: &Path, contexts: usize, indexed: bool) {
    use surfaces_embed::KvStore;
    let now = surfaces_host::time::now_ms();
    let month_ago = now - 30 * 24 * 3600 * 1000;
    let mut writes = Vec::new();
    for n in 0..contexts {
        let id = format!("thread:{ROOM}:$t{n:06}");
        let ctx = serde_json::json!({
            "in_flight": null, "queue": [], "tokens": 120, "messages": 2,
            "agent_tokens": null, "conn": "Ready", "conn_detail": null,
            "busy_attempts": 0, "retry_timer": null,
            "active_ms": month_ago, "indexed_ms": month_ago,
        });
        writes.push((format!("ctx/{id}"), Some(ctx.to_string().into_bytes())));
        writes.push((
            format!("ctxat/{month_ago:020}/{id}"),
            Some(b"null".to_vec()),
        ));
    }
    let waiting = format!("thread:{ROOM}:$old");
    let ctx = serde_json::json!({
        "in_flight": null,
        "queue": [{
            "room_id": ROOM, "event_id": "$old", "sender": USER,
            "display_name": "Alice", "text": "the question from before",
            "thread_root": "$old", "is_direct": true, "attempts": 1,
        }],
        "tokens": 0, "messages": 0, "agent_tokens": null, "conn": "Disconnected",
        "conn_detail": null, "busy_attempts": 0, "retry_timer": 7,
        "active_ms": now, "indexed_ms": null,
    });
    writes.push((format!("ctx/{waiting}"), Some(ctx.to_string().into_bytes())));
    if indexed {
        writes.push((format!("wait/{waiting}"), Some(b"null".to_vec())));
        writes.push(("meta/ctx-index".into(), Some(b"1".to_vec())));
    }
    let user =
        br#"{"display_name":"Alice","first_seen_ms":1,"messages":2,"tokens":240,"skills":{}}"#;
    writes.push(("user/@alice:test".into(), Some(user.to_vec())));
    SqliteStore::open(db)
        .expect("open")
        .commit(writes)
        .expect("prefill");
}

/// Start on a prefilled store under the default 200 ms budget; the queued
/// question and a new one are answered; the store as the bot left it.
async fn start_on_many_contexts(contexts: usize, indexed: bool) -> SqliteStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut setup = Setup::new(
        dir.path(),
        GuestSource::Builtin(surfaces_artifacts::GUEST_WASM),
    );
    setup.budget_ms = 200;
    setup
        .settings
        .push(("context_scope".into(), "thread".into()));
    prefill(&setup.db, contexts, indexed);
    let mut bot = setup.start();
    assert_eq!(
        bot.final_reply("$old").await,
        "the question from before",
        "the queued question is answered after the start"
    );
    bot.say(1, "a new question");
    assert_eq!(bot.final_reply("$m1").await, "a new question");
    assert_eq!(bot.metric("surfaces_guest_failures_total"), 0);
    bot.stop().await;
    // The directory goes with this function; the store stays open.
    let store = SqliteStore::open(&setup.db).expect("open");
    drop(dir);
    store
}

/// Thread scope makes a context per conversation, and contexts used to be
/// kept forever and all rewritten at every start, inside `init`'s time
/// budget: enough of them and the bot could not start (this test failed
/// with "the bot starts: Guest(Timeout)"). Now a start visits only the
/// contexts marked as waiting, and idle ones are forgotten as messages
/// come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_starts_on_fifty_thousand_contexts_and_answers_what_waited() {
    use surfaces_embed::KvStore;
    const CONTEXTS: usize = 50_000;
    let store = start_on_many_contexts(CONTEXTS, true).await;
    let left = store.keys("ctx/").expect("keys").len();
    assert!(
        left <= CONTEXTS + 2 - 128,
        "idle thread contexts are forgotten as messages come: {left} left"
    );
    assert!(
        store.get("user/@alice:test").expect("read").is_some(),
        "the user's own totals stay"
    );
}

/// A store from before the index: every context is visited once, a page
/// per call (the first in `init`), and the index is there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_store_with_many_contexts_is_recovered_a_page_at_a_time() {
    use surfaces_embed::KvStore;
    let store = start_on_many_contexts(20_000, false).await;
    assert!(
        store.get("meta/ctx-index").expect("read").is_some(),
        "every page was visited"
    );
}
