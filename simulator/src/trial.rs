//! A candidate guest's trial: the scenario corpus and swarm seeds run
//! against it, every rule counted on its own, and what each event cost
//! the guest (fuel, memory). `surfaces guest test` prints it; a swap
//! checked by behaviour refuses a candidate whose trial broke a rule.

use std::fmt;

use surfaces_embed::GuestComponent;

use crate::check::RULES;
use crate::{Run, Scenario, swarm};

/// The scenario corpus built into the simulator (`simulator/scenarios`).
pub mod corpus {
    include!(concat!(env!("OUT_DIR"), "/corpus.rs"));

    /// The built-in scenarios, parsed.
    pub fn scenarios() -> Result<Vec<(String, crate::Scenario)>, String> {
        SCENARIOS
            .iter()
            .map(|(name, text)| {
                let s = crate::Scenario::parse(text).map_err(|e| format!("{name}: {e}"))?;
                Ok((format!("simulator/{name}"), s))
            })
            .collect()
    }
}

/// What to run.
pub struct Trial<'a> {
    /// Scenarios by name (a path, for the replay command).
    pub scenarios: &'a [(String, Scenario)],
    /// Seeds per scenario, from 1.
    pub scenario_seeds: u64,
    /// Swarm seeds, from 1 (each run twice: the same seed must give the
    /// same transcript).
    pub swarm_seeds: u64,
    /// Worker threads.
    pub jobs: usize,
    /// The candidate's file, for replay commands.
    pub guest_path: String,
}

/// The rule a run breaks when a seed's two runs differ.
pub const DETERMINISM: &str = "the same seed gives the same transcript";

/// One run that broke a rule.
#[derive(Debug, Clone)]
pub struct Failure {
    /// `simulator/scenarios/x.toml seed 2`, or `swarm seed 17`.
    pub run: String,
    /// The names of the rules it broke.
    pub rules: Vec<&'static str>,
    pub broken: Vec<String>,
    pub replay: String,
}

/// Median and largest value of a per-event measure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spread {
    pub median: u64,
    pub max: u64,
}

impl Spread {
    fn of(mut values: Vec<u64>) -> Spread {
        values.sort_unstable();
        Spread {
            median: values.get(values.len() / 2).copied().unwrap_or(0),
            max: values.last().copied().unwrap_or(0),
        }
    }
}

/// What the trial found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub runs: u64,
    /// Every rule, with the number of runs that broke it.
    pub rules: Vec<(&'static str, u64)>,
    pub failures: Vec<Failure>,
    /// Events the guest handled.
    pub events: u64,
    pub fuel: Spread,
    pub memory_bytes: Spread,
    /// Worker threads that panicked (the simulator's own bug): their runs
    /// are missing.
    pub panicked: u64,
}

impl Report {
    /// Every run kept every rule, and there were runs.
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && self.panicked == 0 && self.runs > 0
    }
}

/// One run's result, before they are added up.
struct Outcome {
    run: String,
    replay: String,
    /// Per rule (in [`RULES`] order, then determinism), what it broke.
    broken: Vec<Vec<String>>,
    fuel: Vec<u64>,
    memory: Vec<u64>,
}

impl Trial<'_> {
    pub fn run(&self, component: &GuestComponent) -> Report {
        let mut work: Vec<Job> = Vec::new();
        for (i, _) in self.scenarios.iter().enumerate() {
            for seed in 1..=self.scenario_seeds {
                work.push(Job::Scenario(i, seed));
            }
        }
        for seed in 1..=self.swarm_seeds {
            work.push(Job::Swarm(seed));
        }
        let jobs = self.jobs.max(1);
        let mut panicked = 0;
        let outcomes: Vec<Outcome> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..jobs)
                .map(|w| {
                    let work = &work;
                    s.spawn(move || {
                        work.iter()
                            .skip(w)
                            .step_by(jobs)
                            .map(|job| self.one(job, component))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut all = Vec::new();
            for w in workers {
                match w.join() {
                    Ok(outcomes) => all.extend(outcomes),
                    // Its runs are lost: the trial cannot pass.
                    Err(_) => panicked += 1,
                }
            }
            all
        });
        let mut report = self.add_up(outcomes);
        report.panicked = panicked;
        report
    }

    fn one(&self, job: &Job, component: &GuestComponent) -> Outcome {
        match *job {
            Job::Scenario(i, seed) => {
                let (name, scenario) = &self.scenarios[i];
                let run = crate::run(scenario, seed, component);
                let mut out = judge(&run, format!("{name} seed {seed}"));
                out.replay = format!(
                    "surfaces-sim run {name} --seed {seed} --guest {}",
                    self.guest_path
                );
                out.broken.push(Vec::new());
                out
            }
            Job::Swarm(seed) => {
                let (scenario, _) = swarm::generate(seed);
                let run = crate::run(&scenario, seed, component);
                let again = crate::run(&scenario, seed, component);
                let mut out = judge(&run, format!("swarm seed {seed}"));
                out.replay = format!(
                    "surfaces-sim swarm --seeds 1 --from {seed} --verbose --guest {}",
                    self.guest_path
                );
                out.broken.push(if run.transcript == again.transcript {
                    Vec::new()
                } else {
                    vec![format!(
                        "{DETERMINISM}: swarm seed {seed}'s two runs differ"
                    )]
                });
                out
            }
        }
    }

    fn add_up(&self, outcomes: Vec<Outcome>) -> Report {
        let names: Vec<&'static str> = RULES.iter().map(|(n, _)| *n).chain([DETERMINISM]).collect();
        let mut report = Report {
            runs: outcomes.len() as u64,
            rules: names.iter().map(|n| (*n, 0)).collect(),
            ..Report::default()
        };
        let (mut fuel, mut memory) = (Vec::new(), Vec::new());
        for o in outcomes {
            for (count, broken) in report.rules.iter_mut().zip(&o.broken) {
                count.1 += u64::from(!broken.is_empty());
            }
            let rules: Vec<&'static str> = names
                .iter()
                .zip(&o.broken)
                .filter(|(_, b)| !b.is_empty())
                .map(|(n, _)| *n)
                .collect();
            let broken: Vec<String> = o.broken.into_iter().flatten().collect();
            if !broken.is_empty() {
                report.failures.push(Failure {
                    run: o.run,
                    rules,
                    broken,
                    replay: o.replay,
                });
            }
            fuel.extend(o.fuel);
            memory.extend(o.memory);
        }
        report.events = memory.len() as u64;
        report.fuel = Spread::of(fuel);
        report.memory_bytes = Spread::of(memory);
        report
    }
}

enum Job {
    Scenario(usize, u64),
    Swarm(u64),
}

fn judge(run: &Run, name: String) -> Outcome {
    Outcome {
        run: name,
        replay: String::new(),
        broken: RULES.iter().map(|(_, rule)| rule(run)).collect(),
        fuel: run.facts.costs.iter().filter_map(|c| c.fuel).collect(),
        memory: run.facts.costs.iter().map(|c| c.memory_bytes).collect(),
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for failure in &self.failures {
            writeln!(f, "{}:", failure.run)?;
            for b in &failure.broken {
                writeln!(f, "  {b}")?;
            }
            writeln!(f, "  replay: {}", failure.replay)?;
        }
        writeln!(f, "rules ({} runs):", self.runs)?;
        for (name, broken) in &self.rules {
            let mark = if *broken == 0 { "ok    " } else { "BROKEN" };
            writeln!(
                f,
                "  {mark} {name}: broken in {broken} of {} runs",
                self.runs
            )?;
        }
        writeln!(
            f,
            "per event ({} events): fuel median {} max {}; memory median {} max {}",
            self.events,
            self.fuel.median,
            self.fuel.max,
            mib(self.memory_bytes.median),
            mib(self.memory_bytes.max),
        )?;
        if self.panicked > 0 {
            writeln!(
                f,
                "{} simulator worker(s) panicked: their runs are missing",
                self.panicked
            )?;
        }
        let failed = self.failures.len();
        write!(f, "{} runs, {failed} failed", self.runs)
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}
