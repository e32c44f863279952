//! A swarm seed's world, drawn from the seed: people, direct and group
//! rooms (some direct chats created lazily, the first message racing the
//! bot's join), what they say and when, the guest's settings, the agent's
//! replies, and the faults of its [`Mix`], which all heal at
//! [`HEAL_AT_MS`].

use std::collections::BTreeMap;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use super::mix::{Fault, Mix};
use crate::scenario::{Agent, Bot, Faults, Homeserver, Reply, Room, Scenario, Step};

/// People talk, and faults strike, before this; then every fault heals.
pub const HEAL_AT_MS: u64 = 30_000;

const PEOPLE: [&str; 3] = ["@alice:sim.test", "@bob:sim.test", "@carol:sim.test"];
const GROUP: &str = "!group:sim.test";
const COMMANDS: [&str; 8] = [
    "!status", "!usage", "!context", "!help", "!skills", "!new", "!stop", "!dance",
];
const WORDS: [&str; 14] = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "**bold**",
    "`code`",
    "é",
    "🙂",
    "\n",
    "- item",
    "#",
    "x",
    "[a link](https://example.org/a?b=c)",
    "[not a link](javascript:alert(1))",
];

/// The world of a seed, and its mix.
pub fn draw(rng: &mut ChaCha8Rng, mix: &Mix) -> Scenario {
    let people = &PEOPLE[..rng.random_range(1..=PEOPLE.len())];
    let mut rooms = Vec::new();
    let mut steps = Vec::new();
    let chance = |rng: &mut ChaCha8Rng, f: Fault| rng.random_bool(mix.rate(f));
    for p in people {
        let lazy = chance(rng, Fault::MessageBeforeJoin);
        let id = dm(p);
        rooms.push(Room {
            id: id.clone(),
            direct: true,
            members: vec![p.to_string()],
            joined: !lazy,
            history: Vec::new(),
        });
        if lazy {
            // Element: the invite, then the first message at once.
            let at_ms = rng.random_range(0..HEAL_AT_MS - 5_000);
            steps.push(Step {
                at_ms,
                from: Some(p.to_string()),
                room: Some(id.clone()),
                invite: true,
                ..Step::default()
            });
            let first = format!("hello from {p}");
            steps.push(say(p, &id, at_ms + rng.random_range(0..3), &first, false));
        }
    }
    if people.len() > 1 {
        rooms.push(Room {
            id: GROUP.into(),
            direct: false,
            members: people.iter().map(|p| p.to_string()).collect(),
            joined: true,
            history: Vec::new(),
        });
    }
    let scope = ["shared", "room", "thread"][rng.random_range(0..3usize)];
    for i in 0..rng.random_range(2..12usize) {
        let p = people[rng.random_range(0..people.len())];
        let in_group = people.len() > 1 && rng.random_bool(0.4);
        let room = if in_group { GROUP.to_string() } else { dm(p) };
        let at_ms = rng.random_range(0..HEAL_AT_MS);
        let text = if rng.random_bool(0.15) {
            COMMANDS[rng.random_range(0..COMMANDS.len())].to_string()
        } else {
            format!("m{i}. {}", words(rng, 1..6))
        };
        let mut step = say(p, &room, at_ms, &text, in_group);
        step.label = Some(format!("l{i}"));
        // In a group: some messages go into the thread of, or reply to,
        // one said before (by anyone).
        let earlier: Vec<&Step> = steps
            .iter()
            .filter(|s| s.room.as_deref() == Some(room.as_str()) && s.label.is_some())
            .filter(|s| s.thread.is_none())
            .collect();
        if in_group && !earlier.is_empty() && rng.random_bool(0.35) {
            let root = earlier[rng.random_range(0..earlier.len())];
            step.at_ms = root.at_ms + rng.random_range(1..5_000);
            if rng.random_bool(0.6) {
                step.thread = root.label.clone();
            } else {
                step.reply_to = root.label.clone();
            }
        } else if mix.has(Fault::SyncGap) && rng.random_bool(0.3) {
            // A burst: a gap for a short sync timeline.
            step.at_ms = steps.last().map_or(at_ms, |s: &Step| s.at_ms);
        }
        steps.push(step);
    }
    // Now and then someone leaves a room: their direct chat (where the bot,
    // alone, leaves too) or the group. What they would have said there
    // later is not said, nor what threads on or replies to it.
    if rng.random_bool(0.25) {
        let p = people[rng.random_range(0..people.len())];
        let room = if people.len() > 1 && rng.random_bool(0.5) {
            GROUP.to_string()
        } else {
            dm(p)
        };
        let at_ms = rng.random_range(0..HEAL_AT_MS);
        let unsaid: Vec<String> = steps
            .iter()
            .filter(|s| s.from.as_deref() == Some(p) && s.room.as_deref() == Some(&room))
            .filter(|s| s.at_ms >= at_ms)
            .filter_map(|s| s.label.clone())
            .collect();
        steps.retain(|s| {
            let refers = |l: &Option<String>| l.as_ref().is_some_and(|l| unsaid.contains(l));
            let after = s.from.as_deref() == Some(p)
                && s.room.as_deref() == Some(&room)
                && s.at_ms >= at_ms;
            !after && !refers(&s.thread) && !refers(&s.reply_to)
        });
        steps.push(Step {
            at_ms,
            from: Some(p.to_string()),
            room: Some(room),
            leave: true,
            ..Step::default()
        });
    }
    second_thoughts(rng, mix, people, &mut steps);
    for (f, make) in [
        (Fault::HostRestart, restart as fn(&mut ChaCha8Rng) -> Step),
        (Fault::GuestSwap, swap),
        (Fault::AgentDrop, drop_agent),
        (Fault::ClockJump, jump),
    ] {
        for _ in 0..3 {
            if chance(rng, f) {
                let mut s = make(rng);
                s.at_ms = rng.random_range(0..HEAL_AT_MS);
                steps.push(s);
            }
        }
    }
    // Steps in time order; a lazy DM's invite stays before its message.
    steps.sort_by_key(|s| s.at_ms);
    // Labels for threads and replies could only name earlier messages.
    let replies: Vec<Reply> = (0..rng.random_range(0..10usize))
        .map(|_| reply(rng, mix))
        .collect();
    let mut guest = BTreeMap::new();
    let interval = [0i64, 250, 1000, 2500][rng.random_range(0..4usize)];
    guest.insert("edit_interval_ms".into(), toml::Value::Integer(interval));
    // Small edit budgets too, so long replies run out of them.
    let max_edits = [3i64, 8, 60][rng.random_range(0..3usize)];
    guest.insert(
        "max_edits_per_message".into(),
        toml::Value::Integer(max_edits),
    );
    let queue_limit = rng.random_range(1..6i64);
    guest.insert("queue_limit".into(), toml::Value::Integer(queue_limit));
    guest.insert("context_scope".into(), toml::Value::String(scope.into()));
    let mode = ["queue", "interrupt", "collect"][rng.random_range(0..3usize)];
    guest.insert("queue_mode".into(), toml::Value::String(mode.into()));
    guest.insert("busy_retries".into(), toml::Value::Integer(2));
    // Token quotas in some worlds, tight enough to be reached (replies
    // report up to 5,000 tokens each).
    let quota = rng.random_range(1_000..12_000i64);
    match rng.random_range(0..5u32) {
        0 => {
            guest.insert("quota_tokens_per_day".into(), toml::Value::Integer(quota));
        }
        1 => {
            guest.insert("quota_tokens_per_month".into(), toml::Value::Integer(quota));
        }
        2 => {
            let over = format!("@alice:*={quota}/none, @bob:sim.test=none/none");
            guest.insert("quota_overrides".into(), toml::Value::String(over));
            guest.insert(
                "quota_tokens_per_day".into(),
                toml::Value::Integer(quota / 2),
            );
        }
        _ => {}
    }
    let strict = mix.has(Fault::Hs429);
    let lo = rng.random_range(1..80u64);
    // Files: drawn last, so the rest of a seed's world stays as it was.
    let mut replies: Vec<Reply> = replies;
    files(rng, &mut steps, &mut replies);
    // Half the strict homeservers' operators told the bot their limit;
    // for the others it starts from Synapse's defaults and learns.
    if strict && rng.random_bool(0.5) {
        guest.insert("rate_limit_per_second".into(), toml::Value::Float(0.5));
        guest.insert("rate_limit_burst".into(), toml::Value::Integer(5));
    }
    Scenario {
        description: "swarm".into(),
        seed: None,
        bot: Bot {
            max_event_bytes: if mix.has(Fault::Hs413) { 8_192 } else { 65_536 },
            max_attachment_bytes: FILE_LIMIT,
            ..Bot::default()
        },
        guest,
        homeserver: Homeserver {
            rate_per_second: if strict { 0.5 } else { 10.0 },
            burst: if strict { 5 } else { 50 },
            latency_ms: [lo, lo + rng.random_range(0..150u64)],
            unavailable: mix.rate(Fault::Hs503),
            lost_response: mix.rate(Fault::HsLostResponse),
            failed_joins: 0,
            timeline_limit: if mix.has(Fault::SyncGap) {
                rng.random_range(1..5usize)
            } else {
                50
            },
            // The agent's files (300 bytes) are too large for it.
            max_upload_bytes: if mix.has(Fault::Hs413) { 200 } else { 50 << 20 },
        },
        agent: Agent {
            connect_ms: if mix.has(Fault::AgentSlowStatus) {
                rng.random_range(2_000..10_000u64)
            } else {
                50
            },
            reconnect_ms: rng.random_range(100..3_000u64),
            replies,
            ..Agent::default()
        },
        faults: Faults {
            heal_at_ms: Some(HEAL_AT_MS),
            duplicate_sync: mix.rate(Fault::SyncDuplicate),
            sync_unavailable: mix.rate(Fault::SyncUnavailable),
            guest_trap: mix.rate(Fault::GuestTrap),
        },
        rooms,
        steps,
    }
}

/// The largest file the swarm's host passes to the agent.
const FILE_LIMIT: u64 = 50_000;

/// People send files: before some of their messages (as clients send a
/// file and its question: two events, a moment apart; in a group, without
/// the mention), now and then alone, now and then one too large; some of
/// the agent's replies carry a file.
fn files(rng: &mut ChaCha8Rng, steps: &mut Vec<Step>, replies: &mut [Reply]) {
    let texts: Vec<Step> = steps
        .iter()
        .filter(|s| s.say.as_deref().is_some_and(|t| !t.starts_with('!')))
        .cloned()
        .collect();
    let mut n = 0;
    for t in texts {
        if !rng.random_bool(0.2) {
            continue;
        }
        n += 1;
        let too_large = rng.random_bool(0.2);
        let size = if too_large {
            FILE_LIMIT + 1
        } else {
            rng.random_range(1..3_000u64)
        };
        // Some clients declare no size: the host finds out, fetching it.
        let file_size_unknown = too_large && rng.random_bool(0.5);
        let ext = ["png", "pdf", "ogg", "mp4"][rng.random_range(0..4usize)];
        let alone = rng.random_bool(0.25);
        let at_ms = if alone {
            t.at_ms + rng.random_range(0..20_000u64)
        } else {
            t.at_ms.saturating_sub(rng.random_range(1..3_000u64))
        };
        // Nobody writes in a room they have left.
        let gone = steps
            .iter()
            .any(|s| s.leave && s.from == t.from && s.room == t.room && s.at_ms <= at_ms);
        if gone {
            continue;
        }
        // Now and then its sender deletes it before the text that would
        // take it.
        let deleted = !alone && t.at_ms >= at_ms + 2 && rng.random_bool(0.1);
        if deleted {
            steps.push(Step {
                at_ms: at_ms + (t.at_ms - at_ms) / 2,
                from: t.from.clone(),
                room: t.room.clone(),
                redact: true,
                on: Some(format!("file{n}")),
                ..Step::default()
            });
        }
        steps.push(Step {
            at_ms,
            label: deleted.then(|| format!("file{n}")),
            from: t.from.clone(),
            room: t.room.clone(),
            thread: t.thread.clone(),
            // Phones call every photo alike: some names repeat.
            file: Some(if rng.random_bool(0.3) {
                format!("image.{ext}")
            } else {
                format!("f{n}.{ext}")
            }),
            file_bytes: Some(size),
            file_size_unknown,
            ..Step::default()
        });
    }
    steps.sort_by_key(|s| s.at_ms);
    for (i, r) in replies.iter_mut().enumerate() {
        if rng.random_bool(0.15) {
            r.files = Some(vec![format!("a{i}.png")]);
        }
    }
}

/// People have second thoughts about what they asked: a reaction (🛑 or
/// ❌ on the question, 🛑 or 👍 on its answer, sometimes by someone
/// else), an edit (its text and a mark, so it names one request) or a
/// deletion, a little after they asked.
fn second_thoughts(rng: &mut ChaCha8Rng, mix: &Mix, people: &[&str], steps: &mut Vec<Step>) {
    let rate = mix.rate(Fault::SecondThoughts);
    if rate == 0.0 {
        return;
    }
    let asked: Vec<Step> = steps
        .iter()
        .filter(|s| s.label.is_some() && s.say.as_deref().is_some_and(|t| !t.starts_with('!')))
        .cloned()
        .collect();
    for (n, q) in asked.iter().enumerate() {
        if !rng.random_bool((rate * 2.0).min(0.9)) {
            continue;
        }
        let (Some(label), Some(from), Some(text)) = (&q.label, &q.from, &q.say) else {
            continue;
        };
        let by = if q.room.as_deref() == Some(GROUP) && rng.random_bool(0.2) {
            people[rng.random_range(0..people.len())].to_string()
        } else {
            from.clone()
        };
        let mut step = Step {
            at_ms: q.at_ms + rng.random_range(50..8_000),
            from: Some(by),
            room: q.room.clone(),
            mention: q.mention,
            ..Step::default()
        };
        match rng.random_range(0..6u32) {
            0 => {
                step.react = Some("🛑".into());
                step.on = Some(format!("answer:{label}"));
            }
            1 => {
                step.react = Some("🛑\u{fe0f}".into());
                step.on = Some(label.clone());
            }
            2 => {
                step.react = Some("❌".into());
                step.on = Some(label.clone());
            }
            3 => {
                step.react = Some("👍".into());
                step.on = Some(format!("answer:{label}"));
            }
            4 => {
                step.from = Some(from.clone());
                step.edit = Some(format!("{text} e{n}"));
                step.on = Some(label.clone());
            }
            _ => {
                step.from = Some(from.clone());
                step.redact = true;
                step.on = Some(label.clone());
            }
        }
        steps.push(step);
    }
}

fn dm(person: &str) -> String {
    let name = person
        .trim_start_matches('@')
        .split(':')
        .next()
        .unwrap_or("x");
    format!("!dm-{name}:sim.test")
}

fn say(from: &str, room: &str, at_ms: u64, text: &str, group: bool) -> Step {
    Step {
        at_ms,
        from: Some(from.into()),
        room: Some(room.into()),
        say: Some(text.into()),
        mention: group,
        ..Step::default()
    }
}

fn words(rng: &mut ChaCha8Rng, n: std::ops::Range<usize>) -> String {
    (0..rng.random_range(n))
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

/// One scripted agent reply, failing as the mix says.
fn reply(rng: &mut ChaCha8Rng, mix: &Mix) -> Reply {
    let mut pieces: Vec<String> = (0..rng.random_range(1..8usize))
        .map(|_| format!("{} ", words(rng, 1..8)))
        .collect();
    if mix.has(Fault::Hs413) && rng.random_bool(0.5) {
        pieces.push("long ".repeat(rng.random_range(500..3_000)));
    }
    let outcomes = [
        (Fault::AgentDisconnectBefore, "disconnect", false),
        (Fault::AgentDisconnectDuring, "disconnect", true),
        (Fault::AgentBusy, "error:busy", false),
        (Fault::AgentMalformed, "malformed", true),
        (Fault::AgentContextOverflow, "error:context_overflow", false),
        (Fault::AgentInternal, "error:internal", true),
    ];
    let mut then = "end";
    for (f, what, keep_pieces) in outcomes {
        if rng.random_bool(mix.rate(f)) {
            then = what;
            if !keep_pieces {
                pieces.clear();
            }
            break;
        }
    }
    let stall = rng.random_bool(mix.rate(Fault::AgentStall));
    let (lo, hi) = if stall { (5_000, 30_000) } else { (20, 400) };
    Reply {
        pieces: Some(pieces),
        then: Some(then.into()),
        chunk_delay_ms: Some([lo, hi]),
        tokens: Some(rng.random_range(0..5_000)),
        ..Reply::default()
    }
}

fn restart(rng: &mut ChaCha8Rng) -> Step {
    Step {
        restart: true,
        replay: rng.random_bool(0.3),
        ..Step::default()
    }
}

fn swap(_: &mut ChaCha8Rng) -> Step {
    Step {
        reload: true,
        ..Step::default()
    }
}

fn drop_agent(_: &mut ChaCha8Rng) -> Step {
    Step {
        disconnect_agent: true,
        ..Step::default()
    }
}

fn jump(rng: &mut ChaCha8Rng) -> Step {
    Step {
        // Up to two days either way: NTP's first sync on a fresh machine,
        // an operator's mistake, a VM resumed.
        clock_jump_ms: Some(rng.random_range(-2 * 86_400_000..2 * 86_400_000)),
        ..Step::default()
    }
}
