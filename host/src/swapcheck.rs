//! A candidate guest's behaviour check, run before a swap off the event
//! loop: the candidate starts on a copy of the live store (as after a
//! restart, so it reads what the old guest left: contexts, replies in
//! flight, notices) without failing or setting a record aside, and then
//! plays the simulator's scenario corpus and swarm seeds without breaking
//! a rule. A candidate that fails either is refused with the reason and
//! how to replay it.

use std::path::Path;
use std::time::{Duration, Instant};

use surfaces_embed::{BoxedKv, Guest, GuestComponent, HostInfo, KvStore, MemoryKv};
use surfaces_sim::trial::{Trial, corpus};

/// How a swap is checked (`guest.swap_check`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapCheck {
    /// The candidate must compile, fit the contract and start.
    Contract,
    /// That, and it must read the live store and keep every rule in the
    /// scenario corpus and `seeds` swarm worlds.
    Behaviour { seeds: u64 },
}

/// What a passed check did.
#[derive(Debug)]
pub struct Passed {
    pub runs: u64,
    pub records: usize,
    pub took: Duration,
    /// Why the running guest could not take over again from the store as
    /// the candidate leaves it (a migration it cannot read): a rollback
    /// would not start. `None`: it can.
    pub no_way_back: Option<String>,
}

/// Check the candidate `wasm` (from `file`, named in replay commands)
/// against `shadow`, a copy of the live store, started as `info` says;
/// then whether `running`, the guest serving now, could take over again.
/// `Err` is the refusal in words.
pub fn check(
    wasm: &[u8],
    file: &Path,
    shadow: MemoryKv,
    info: &HostInfo,
    seeds: u64,
    cache_dir: &Path,
    running: Option<&GuestComponent>,
) -> Result<Passed, String> {
    let started = Instant::now();
    let embedding = surfaces_sim::embedding().map_err(|e| e.to_string())?;
    let (component, _) = embedding
        .compile_cached(wasm, cache_dir)
        .map_err(|e| e.to_string())?;

    // The live store, read as after a host restart.
    let records = shadow.map.len();
    let set_aside_before = shadow.keys("bad/").unwrap_or_default();
    let mut kv: BoxedKv = Box::new(shadow);
    let mut fresh = info.clone();
    fresh.resumed = false;
    Guest::start(&component, fresh, &mut kv, crate::time::now_ms()).map_err(|e| {
        format!("it fails to start on a copy of the live store ({records} records): {e}")
    })?;
    if let Some((record, n)) = newly_set_aside(&kv, &set_aside_before) {
        return Err(format!(
            "it cannot read the record {record} the running guest wrote ({n} record(s) set aside on a copy of the live store)"
        ));
    }
    // And back: the running guest on the store as the candidate left it.
    let no_way_back = running.and_then(|running| {
        let mut fresh = info.clone();
        fresh.resumed = false;
        let before = kv.keys("bad/").unwrap_or_default();
        match Guest::start(running, fresh, &mut kv, crate::time::now_ms()) {
            Err(e) => Some(format!(
                "the running guest does not start on the store as it leaves it: {e}"
            )),
            Ok(_) => newly_set_aside(&kv, &before).map(|(record, _)| {
                format!("the running guest cannot read the record {record} as it leaves it")
            }),
        }
    });

    let scenarios = corpus::scenarios()?;
    // A core left for the bot, which goes on serving meanwhile.
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1));
    let report = Trial {
        scenarios: &scenarios,
        scenario_seeds: 1,
        swarm_seeds: seeds,
        jobs,
        guest_path: file.display().to_string(),
    }
    .run(&component);
    if let Some(failure) = report.failures.first() {
        let rule = failure.rules.first().copied().unwrap_or("");
        let what = failure.broken.first().map_or("", String::as_str);
        return Err(format!(
            "it breaks the rule \"{rule}\" in {} of {} simulated runs; first in {}: {what}; replay: {} (every run: surfaces guest test {})",
            report.failures.len(),
            report.runs,
            failure.run,
            failure.replay,
            file.display(),
        ));
    }
    if !report.passed() {
        return Err(format!(
            "the simulator did not finish its runs ({} of them; {} worker(s) panicked)",
            report.runs, report.panicked
        ));
    }
    Ok(Passed {
        runs: report.runs,
        records,
        took: started.elapsed(),
        no_way_back,
    })
}

/// The first record set aside (`bad/`) since `before`, and how many were.
fn newly_set_aside(kv: &BoxedKv, before: &[String]) -> Option<(String, usize)> {
    let new: Vec<String> = kv
        .keys("bad/")
        .unwrap_or_default()
        .into_iter()
        .filter(|k| !before.contains(k))
        .collect();
    let first = new.first()?;
    Some((
        first.strip_prefix("bad/").unwrap_or(first).to_string(),
        new.len(),
    ))
}
