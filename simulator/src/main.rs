//! `surfaces-sim`: play scenarios against the shipped guest.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
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
    },
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
            let component = match guest {
                Some(path) => {
                    let wasm = std::fs::read(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    let e = surfaces_sim::embedding()?;
                    Box::leak(Box::new(e.compile(&wasm)?))
                }
                None => surfaces_sim::shipped_guest().map_err(anyhow::Error::msg)?,
            };
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
                }
                println!(
                    "# replay: {}",
                    replay_command(&scenario.display().to_string(), seed)
                );
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Check {
            paths,
            seeds,
            first_seed,
        } => {
            let component = surfaces_sim::shipped_guest().map_err(anyhow::Error::msg)?;
            let files = scenario_files(&paths)?;
            let mut failures = 0u64;
            let mut runs = 0u64;
            for file in &files {
                let s = Scenario::load(file)?;
                for seed in first_seed..first_seed + seeds {
                    runs += 1;
                    let run = surfaces_sim::run(&s, seed, component);
                    let broken = check::violations(&run);
                    if !broken.is_empty() {
                        failures += 1;
                        println!("{} seed {seed}:", file.display());
                        for b in broken {
                            println!("  {b}");
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
