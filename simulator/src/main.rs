//! `surfaces-sim`: play scenarios against the shipped guest.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use surfaces_embed::GuestComponent;
use surfaces_sim::{Scenario, check, replay_command};

#[derive(Parser)]
#[command(
    name = "surfaces-sim",
    version,
    about = "Deterministic simulator for the surfaces guest"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Play one scenario and print its transcript, then check its rules.
    Run {
        /// A scenario file (see simulator/scenarios/).
        scenario: PathBuf,
        /// The seed for latencies, jitter and faults.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Run this guest .wasm instead of the shipped one.
        #[arg(long)]
        guest: Option<PathBuf>,
    },
    /// Play scenarios with many seeds; print only what breaks a rule.
    Check {
        /// Scenario files or directories of them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// How many seeds per scenario, from --first-seed on.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        #[arg(long, default_value_t = 1)]
        first_seed: u64,
        /// Run this guest .wasm instead of the shipped one.
        #[arg(long)]
        guest: Option<PathBuf>,
        /// Write each run's transcript here (to compare two guests).
        #[arg(long)]
        transcripts: Option<PathBuf>,
    },
    /// Draw a world and a fault mix from each seed, run it until the faults
    /// heal and it is quiet, and check every rule; print the seeds that
    /// break one, then `N seeds, F failed`.
    Swarm {
        /// How many seeds, from --from on.
        #[arg(long, default_value_t = 1000)]
        seeds: u64,
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Worker threads (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
        /// Print each seed's transcript too (to replay one).
        #[arg(long)]
        verbose: bool,
        /// Save each failing seed's world as a scenario file here.
        #[arg(long, default_value = "target/sim-failures")]
        save: PathBuf,
        /// Run the guest built with planted bugs, this one switched on
        /// (see `guest/src/planted.rs`; `join-cutoff` is the inbox's).
        #[arg(long)]
        plant: Option<String>,
        /// Run this guest .wasm instead of the shipped one.
        #[arg(long)]
        guest: Option<PathBuf>,
    },
    /// Cut a failing swarm seed's world down to the smallest scenario that
    /// still breaks the same rule, and write it as a scenario file.
    Shrink {
        seed: u64,
        /// As for `swarm`: the planted bug switched on.
        #[arg(long)]
        plant: Option<String>,
        /// Where the scenario goes (default: simulator/scenarios/regressions,
        /// where the snapshot suite runs it; target/sim-failures with --plant).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// The guest a command runs: the named .wasm file, else the build with
/// the planted bugs when `planted`, else the shipped one.
fn load_guest(file: Option<&Path>, planted: bool) -> Result<&'static GuestComponent> {
    if let Some(path) = file {
        let wasm =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let compiled = surfaces_sim::embedding()?
            .compile(&wasm)
            .with_context(|| format!("{} is not a surfaces guest", path.display()))?;
        // Compiled once per process and used until it exits.
        return Ok(Box::leak(Box::new(compiled)));
    }
    if planted {
        surfaces_sim::planted_guest()
    } else {
        surfaces_sim::shipped_guest()
    }
    .map_err(anyhow::Error::msg)
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            scenario,
            seed,
            guest,
        } => {
            let s = Scenario::load(&scenario)?;
            // A scenario that switches a planted bug on (a shrunk planted
            // seed) runs on the guest that has them.
            let component = load_guest(guest.as_deref(), s.guest.contains_key("planted"))?;
            let run = surfaces_sim::run(&s, seed, component);
            println!("# {}", s.description);
            println!("# seed {seed}");
            for line in &run.transcript {
                println!("{line}");
            }
            let broken = check::violations(&run);
            if broken.is_empty() {
                println!("# all rules hold");
                Ok(ExitCode::SUCCESS)
            } else {
                for b in &broken {
                    println!("# BROKEN: {b}");
                    for step in check::witness(&run, b) {
                        println!("#   {step}");
                    }
                }
                println!(
                    "# replay: {}",
                    replay_command(&scenario.display().to_string(), seed)
                );
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Swarm {
            seeds,
            from,
            jobs,
            verbose,
            save,
            plant,
            guest,
        } => {
            let component = load_guest(guest.as_deref(), plant.is_some())?;
            swarm(
                seeds,
                from,
                jobs,
                verbose,
                &save,
                plant.as_deref(),
                component,
            )
        }
        Command::Shrink { seed, plant, out } => shrink(seed, plant.as_deref(), out),
        Command::Check {
            paths,
            seeds,
            first_seed,
            guest,
            transcripts,
        } => {
            let component = load_guest(guest.as_deref(), false)?;
            if let Some(dir) = &transcripts {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let files = scenario_files(&paths)?;
            let mut failures = 0u64;
            let mut runs = 0u64;
            for file in &files {
                let s = Scenario::load(file)?;
                for seed in first_seed..first_seed + seeds {
                    runs += 1;
                    let run = surfaces_sim::run(&s, seed, component);
                    if let Some(dir) = &transcripts {
                        let name = file.display().to_string().replace(['/', '\\'], "__");
                        let path = dir.join(format!("{name}.{seed}.txt"));
                        std::fs::write(&path, run.transcript.join("\n"))
                            .with_context(|| format!("cannot write {}", path.display()))?;
                    }
                    let broken = check::violations(&run);
                    if !broken.is_empty() {
                        failures += 1;
                        println!("{} seed {seed}:", file.display());
                        for b in broken {
                            println!("  {b}");
                            for step in check::witness(&run, &b) {
                                println!("    {step}");
                            }
                        }
                        println!(
                            "  replay: {}",
                            replay_command(&file.display().to_string(), seed)
                        );
                    }
                }
            }
            println!("{} passed, {failures} failed", runs - failures);
            Ok(if failures == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn swarm(
    seeds: u64,
    from: u64,
    jobs: Option<usize>,
    verbose: bool,
    save: &Path,
    plant: Option<&str>,
    component: &GuestComponent,
) -> Result<ExitCode> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use surfaces_sim::swarm;

    if let Some(p) = plant
        && !swarm::planted_bugs().contains(&p)
    {
        anyhow::bail!(
            "no planted bug {p:?}; there are: {}",
            swarm::planted_bugs().join(", ")
        );
    }
    if verbose {
        for seed in from..from.saturating_add(seeds) {
            let (mut scenario, mix) = swarm::generate(seed);
            println!("# seed {seed}: {mix}");
            if let Some(p) = plant.filter(|p| *p != surfaces_sim::JOIN_CUTOFF) {
                scenario
                    .guest
                    .insert("planted".into(), toml::Value::String(p.into()));
            }
            let join_cutoff = plant == Some(surfaces_sim::JOIN_CUTOFF);
            let run = surfaces_sim::run_planted(&scenario, seed, component, join_cutoff);
            for line in &run.transcript {
                println!("{line}");
            }
        }
    }
    let jobs = jobs
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .max(1);
    let next = AtomicU64::new(0);
    let simulated_ms = AtomicU64::new(0);
    let started = std::time::Instant::now();
    let mut failed: Vec<swarm::Outcome> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                s.spawn(|| {
                    let mut failed = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= seeds {
                            return failed;
                        }
                        let outcome = swarm::run_planted(from.wrapping_add(i), component, plant);
                        simulated_ms.fetch_add(outcome.virtual_ms, Ordering::Relaxed);
                        if !outcome.broken.is_empty() {
                            failed.push(outcome);
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    failed.sort_by_key(|o| o.seed);
    for o in &failed {
        println!("seed {} failed; mix: {}", o.seed, o.mix);
        for (b, steps) in o.broken.iter().zip(&o.witnesses) {
            println!("  broken: {b}");
            for step in steps {
                println!("    {step}");
            }
        }
        let (scenario, _) = swarm::generate(o.seed);
        let file = save.join(format!("swarm-{}.toml", o.seed));
        if std::fs::create_dir_all(save)
            .and_then(|_| std::fs::write(&file, scenario.to_toml()))
            .is_ok()
        {
            println!("  world: {}", file.display());
        }
        println!("  replay: {}", swarm::replay_command(o.seed, plant));
    }
    let secs = started.elapsed().as_secs_f64();
    let simulated = simulated_ms.into_inner() as f64 / 1000.0;
    eprintln!(
        "swarm: seeds {from}..{} in {secs:.1} s on {jobs} threads; {:.1} bot-hours simulated, {:.0} bot-seconds per thread-second",
        from.saturating_add(seeds),
        simulated / 3600.0,
        simulated / (secs * jobs as f64).max(f64::EPSILON)
    );
    println!("{seeds} seeds, {} failed", failed.len());
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn shrink(seed: u64, plant: Option<&str>, out: Option<PathBuf>) -> Result<ExitCode> {
    use surfaces_sim::swarm;

    let component = load_guest(None, plant.is_some())?;
    let (mut scenario, mix) = swarm::generate(seed);
    let join_cutoff = plant == Some(surfaces_sim::JOIN_CUTOFF);
    if let Some(p) = plant.filter(|_| !join_cutoff) {
        scenario
            .guest
            .insert("planted".into(), toml::Value::String(p.into()));
    }
    let steps = scenario.steps.len();
    let Some(shrunk) = swarm::shrink::shrink(scenario, seed, component, join_cutoff) else {
        println!("seed {seed} breaks no rule: nothing to shrink");
        return Ok(ExitCode::SUCCESS);
    };
    let mut s = shrunk.scenario;
    s.description = format!(
        "Shrunk from swarm seed {seed} ({mix}), which broke \"{}\": {}",
        shrunk.rule,
        shrunk.broken.first().map(String::as_str).unwrap_or("")
    );
    s.seed = Some(seed);
    let dir = out.unwrap_or_else(|| match plant {
        Some(_) => PathBuf::from("target/sim-failures"),
        None => PathBuf::from("simulator/scenarios/regressions"),
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file = dir.join(format!("swarm-{seed}.toml"));
    std::fs::write(&file, s.to_toml())
        .with_context(|| format!("cannot write {}", file.display()))?;
    println!(
        "seed {seed}: \"{}\" still breaks with {} of {steps} steps and {} agent replies ({} runs)",
        shrunk.rule,
        s.steps.len(),
        s.agent.replies.len(),
        shrunk.runs
    );
    for b in &shrunk.broken {
        println!("  broken: {b}");
    }
    println!("  scenario: {}", file.display());
    println!(
        "  replay: {}",
        replay_command(&file.display().to_string(), seed)
    );
    Ok(ExitCode::SUCCESS)
}

fn scenario_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot list {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "toml"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.to_path_buf());
        }
    }
    if files.is_empty() {
        anyhow::bail!("no scenario files in {}", show(paths));
    }
    Ok(files)
}

fn show(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p: &PathBuf| Path::display(p).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
