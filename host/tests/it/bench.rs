//! The footprint benchmark (README: `scripts/bench-matrix`): the release
//! bot on a local Synapse with its default rate limits, behind the
//! reference agent streaming a 1,034-character reply in 50 chunks over
//! 10 s, answers three questions in a DM; printed per reply: when its
//! first text and its final text were visible to the asker, and the bot's
//! CPU time; and the bot's resident memory after start and after the
//! three. Not a test (it asserts nothing about the numbers): ignored, run
//! by the script.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use matrix_sdk::ruma::UserId;
use surfaces_tests::synapse::{Options, Synapse};

use crate::matrix::{
    Agent, BOT_PASSWORD, Bot, Human, Seen, answered_with, is_answer_to, streamed_agent,
    streamed_text,
};

/// The agent's reply takes this long from its first chunk to its end.
const AGENT_SECONDS: f64 = 10.0;
/// After a reply's final text, its cost goes on a little: the bot's own
/// edits come back through its sync. This much of that is counted.
const SETTLE: Duration = Duration::from_secs(2);
/// Linux reports CPU time in clock ticks of 1/100 s (USER_HZ).
const TICKS_PER_SECOND: f64 = 100.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: scripts/bench-matrix runs it, in release"]
async fn bench_three_streamed_replies_in_a_dm() {
    let text = streamed_text();
    let script = format!("script:{text}");
    let synapse = Synapse::start(Options::default());
    synapse.register("bot", BOT_PASSWORD, false);
    let agent = Agent::start(&streamed_agent(&script));
    let data = tempfile::tempdir().expect("tempdir");
    // The shipped defaults: no setting changed.
    let bot = Bot::start_quiet(&synapse, data.path(), &agent, "[matrix]\n");
    let alice = Human::login(&synapse, "alice").await;
    let bot_id = UserId::parse("@bot:localhost").expect("user id");
    bot.wait_first_syncs(1).await;
    let room = alice.dm(&bot_id).await;
    alice.wait_joined(&room, &bot_id, || bot.log()).await;
    let rss_start = rss_mb(bot.pid());

    let mut rows = Vec::new();
    // The CPU time in /proc/PID/stat's 10 ms ticks, beside the clock's.
    let mut ticked = Vec::new();
    // What each reply cost the homeserver: the bot's requests by kind,
    // and its syncs (each edit comes back through one).
    let mut spent = Vec::new();
    for n in 1..=3 {
        let cpu_before = cpu_seconds(bot.pid());
        let exact_before = cpu_seconds_exact(bot.pid());
        let counted_before = counters(&bot.metrics());
        let at = Instant::now();
        let asked = alice.send(&room, &format!("question {n}")).await;
        alice
            .wait_for(
                "the reply's first text",
                || bot.log(),
                |all: &[Seen]| all.iter().any(|s| is_answer_to(s, &asked)),
            )
            .await;
        let first = at.elapsed().as_secs_f64();
        let room_id = room.room_id().to_owned();
        alice
            .wait_for(
                "the reply's final text",
                || bot.log(),
                |all: &[Seen]| answered_with(all, &room_id, &asked, &text),
            )
            .await;
        let last = at.elapsed().as_secs_f64();
        // A measuring window, not a synchronisation: nothing waits on it.
        tokio::time::sleep(SETTLE).await;
        let cpu = cpu_seconds(bot.pid()) - cpu_before;
        let exact = cpu_seconds_exact(bot.pid())
            .zip(exact_before)
            .map(|(a, b)| a - b);
        rows.push((first, last, exact.unwrap_or(cpu)));
        ticked.push(cpu);
        let mut counted = counters(&bot.metrics());
        for (what, n) in &mut counted {
            *n -= counted_before.get(what).copied().unwrap_or(0.0);
        }
        counted.retain(|_, n| *n > 0.0);
        spent.push(counted);
    }
    let rss_end = rss_mb(bot.pid());

    println!("reply  first visible  final visible  after agent's end  bot CPU");
    for (n, (first, last, cpu)) in rows.iter().enumerate() {
        println!(
            "{:>5}  {first:>11.2} s  {last:>11.2} s  {:>15.2} s  {cpu:>5.3} s",
            n + 1,
            last - AGENT_SECONDS
        );
    }
    let median = |pick: fn(&(f64, f64, f64)) -> f64| {
        let mut v: Vec<f64> = rows.iter().map(pick).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "median  {:>10.2} s  {:>11.2} s  {:>15.2} s  {:>5.3} s",
        median(|r| r.0),
        median(|r| r.1),
        median(|r| r.1) - AGENT_SECONDS,
        median(|r| r.2)
    );
    for (n, counted) in spent.iter().enumerate() {
        let list: Vec<String> = counted.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("reply {}: {}", n + 1, list.join(", "));
    }
    let ticks: Vec<String> = ticked.iter().map(|c| format!("{c:.2}")).collect();
    println!(
        "bot CPU {}; in 10 ms ticks: {} s",
        if cpu_seconds_exact(bot.pid()).is_some() {
            "from its CPU-time clock"
        } else {
            "in ticks only (no CPU-time clock here)"
        },
        ticks.join(" / ")
    );
    println!("bot RSS: {rss_start:.1} MB after start, {rss_end:.1} MB after three replies");
    if std::env::var_os("BENCH_DETAIL").is_some() {
        print_detail(bot.pid());
    }
}

/// Where the bot's resident memory is (by mapping, largest first) and how
/// many threads it runs: what to look at when RSS moves.
fn print_detail(pid: u32) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("proc smaps");
    let mut by_name: BTreeMap<String, u64> = Default::default();
    let mut name = String::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: address range, perms, offset, dev, inode, path.
            name = words.nth(4).unwrap_or("[anon]").to_string();
        } else if first == "Rss:" {
            let kb: u64 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            *by_name.entry(name.clone()).or_default() += kb;
        }
    }
    let mut rows: Vec<_> = by_name.into_iter().collect();
    rows.sort_by_key(|(_, kb)| std::cmp::Reverse(*kb));
    for (name, kb) in rows.iter().take(10) {
        println!("detail rss {:>8.1} MB  {name}", *kb as f64 * 1024.0 / 1e6);
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    for line in status
        .lines()
        .filter(|l| l.starts_with("Threads:") || l.starts_with("Rss"))
    {
        println!("detail {line}");
    }
}

/// The bot's Matrix requests by kind (and outcome, when not ok) and its
/// syncs, from its metrics.
fn counters(metrics: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let what = if name.contains("matrix_requests_total{") {
            let label = |key: &str| {
                name.split(&format!("{key}=\""))
                    .nth(1)
                    .and_then(|v| v.split('"').next())
                    .unwrap_or("other")
                    .to_string()
            };
            match label("outcome").as_str() {
                "ok" => format!("{} requests", label("kind")),
                // A refused request is worth seeing on its own (a 429
                // delays a final text).
                outcome => format!("{} requests {outcome}", label("kind")),
            }
        } else if name.contains("matrix_syncs_total{") {
            "syncs".to_string()
        } else {
            continue;
        };
        *out.entry(what).or_insert(0.0) += value;
    }
    out
}

/// Resident memory of process `pid`, in MB (10^6 bytes).
fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024.0 / 1e6
}

/// CPU time process `pid` has used, all its threads (ended ones too),
/// in ns: its CPU-time clock (`clock_getcpuclockid`). `/proc/PID/stat`
/// counts the same in 10 ms ticks, too coarse for a reply's 60 ms. None
/// where the kernel refuses the clock.
fn cpu_seconds_exact(pid: u32) -> Option<f64> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: each call writes only to the local it is given.
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
        return None;
    }
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: as above.
    if unsafe { libc::clock_gettime(clock, &mut t) } != 0 {
        return None;
    }
    Some(t.tv_sec as f64 + t.tv_nsec as f64 / 1e9)
}

/// User and system CPU time process `pid` has used, all its threads.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // The command name may hold spaces: fields count from after its ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).expect("stat fields");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are the stat's 14th and 15th fields (11th and 12th
    // after the name).
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / TICKS_PER_SECOND
}
