//! `obsctl chaos`: argument handling and output only. The scenarios live in `chaos`, the
//! renderings in `report::chaos`. Exit codes: 0 every scenario passed, 1 usage or setup error,
//! 2 a scenario failed (as `verify`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use anyhow::Context;

use super::CommandError;
use super::verify::EXIT_CHECK_FAILED;
use crate::chaos::target::Runtime as TargetRuntime;
use crate::chaos::{self, OutageMode, Progress, Scenario, ScenarioName};
use crate::checks::time::parse_duration;
use crate::report::chaos::{ChaosReport, json, junit, table};
use crate::report::html::ReportFormat;
use crate::stack::endpoints::{Endpoints, Runtime as StackRuntime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
    Junit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Runtime {
    /// The Docker stack when the endpoints file says it is up, else the embedded runtime.
    Auto,
    /// A private `obsctl serve` that chaos starts, breaks and stops.
    Embedded,
    /// The Docker stack that is up: faults hit its collector container, steps run as containers.
    Docker,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenarios to run, in this order: pod-kill, collector-outage, burst, controller-restart.
    #[arg(value_enum, default_value = "all")]
    pub scenarios: Vec<ScenarioName>,
    /// Collector-outage modes to run [default: all four].
    #[arg(long = "mode", value_enum, value_name = "MODE")]
    pub modes: Vec<OutageMode>,
    #[arg(long, value_enum, default_value_t = Runtime::Auto)]
    pub runtime: Runtime,
    /// The Docker stack's project (`obsctl up --project`), for --runtime docker.
    #[arg(long, default_value = "obsctl", env = "OBSCTL_PROJECT")]
    pub project: String,
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Also write the whole result to FILE: one self-contained HTML page when FILE ends in .html
    /// (each scenario's loss account and its timeline with the fault window shaded over the
    /// steps), else JSON with each scenario's timeline.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Parallel steps of the burst scenario.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub steps: u32,
    /// How long the collector stays away in collector-outage (e.g. 10s, 1m).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub outage: Duration,
    /// How long each scenario's accounting waits for its data (e.g. 30s).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Run the remaining scenarios after one fails (default: stop at the first failure).
    #[arg(long)]
    pub keep_going: bool,
    /// Keep each scenario's scratch directory (backend data, run records, logs) [default: removed when every scenario passed].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    #[command(flatten)]
    pub access: super::access::AccessArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let docker_up = || {
        Endpoints::load(&Endpoints::default_path())
            .is_some_and(|e| e.runtime == StackRuntime::Docker)
    };
    let runtime = match args.runtime {
        Runtime::Embedded => TargetRuntime::Embedded,
        Runtime::Auto if !docker_up() => TargetRuntime::Embedded,
        Runtime::Docker | Runtime::Auto => TargetRuntime::Docker {
            project: args.project.clone(),
        },
    };
    let connector = args.access.connector(Default::default())?;
    if runtime == TargetRuntime::Embedded && !connector.is_default() {
        crate::ui::note(
            "chaos: the backend access options apply to the Docker stack; the embedded \
             runtime's backend is chaos's own and read directly",
        );
    }
    let scenarios = Scenario::expand(&args.scenarios, &args.modes);
    let keep = args.work_dir.is_some();
    let work_dir = args.work_dir.clone().unwrap_or_else(|| {
        crate::paths::state_home().join(format!("chaos-{}", std::process::id()))
    });
    let options = chaos::Options {
        exe: std::env::current_exe().context("cannot find the obsctl executable")?,
        runtime: runtime.clone(),
        work_dir: work_dir.clone(),
        steps: args.steps,
        outage: args.outage,
        timeout: args.timeout,
        connector,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let started = Instant::now();
    let view = LiveView::new();
    let progress = |p: Progress| view.show(p);
    let mut reports = Vec::new();
    for scenario in scenarios {
        // Ctrl-C drops the scenario: its backend is resumed, healed and stopped on the way out.
        let result = rt.block_on(async {
            tokio::select! {
                r = chaos::scenarios::run(&options, scenario, &progress) => Some(r),
                _ = tokio::signal::ctrl_c() => None,
            }
        });
        let Some(result) = result else {
            return Err(CommandError::new(
                130,
                anyhow::anyhow!("interrupted; every fault was undone"),
            )
            .into());
        };
        let report = result.with_context(|| format!("scenario {}", scenario.name()))?;
        let passed = report.passed;
        reports.push(report);
        if !passed && !args.keep_going {
            break;
        }
    }
    view.finish();
    let report = ChaosReport::new(
        runtime.name(),
        started.elapsed().as_millis() as u64,
        reports,
    );
    if let Some(path) = &args.report {
        let text = match ReportFormat::of(path) {
            ReportFormat::Html => crate::report::html::chaos::render(&report),
            ReportFormat::Json => json(&report),
        };
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    match args.output {
        Output::Table => print!("{}", table(&report, crate::ui::color_enabled())),
        Output::Json => println!("{}", json(&report)),
        Output::Junit => print!("{}", junit(&report)),
    }
    if report.passed && !keep {
        let _ = std::fs::remove_dir_all(&work_dir);
    } else if !report.passed {
        eprintln!("obsctl chaos: scratch kept in {}", work_dir.display());
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CHECK_FAILED)
    })
}

/// On a terminal, a spinner with the scenario's phase and its steps (finished, running), each
/// phase kept above it as a line; elsewhere one line per phase on stderr.
struct LiveView {
    spinner: Option<ProgressBar>,
    phase: Mutex<String>,
}

impl LiveView {
    fn new() -> Self {
        let spinner = crate::ui::progress_enabled().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                    .expect("a valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            spinner,
            phase: Mutex::new(String::new()),
        }
    }

    fn show(&self, progress: Progress) {
        let mut phase = self.phase.lock().expect("live view lock");
        match (progress, &self.spinner) {
            (
                Progress::Phase {
                    scenario,
                    phase: now,
                },
                Some(bar),
            ) => {
                bar.println(format!("chaos {scenario}: {now}"));
                *phase = format!("{scenario}: {now}");
                bar.set_message(phase.clone());
                bar.reset_elapsed();
            }
            (
                Progress::Phase {
                    scenario,
                    phase: now,
                },
                None,
            ) => {
                eprintln!("chaos {scenario}: {now}");
            }
            (
                Progress::Steps {
                    finished, running, ..
                },
                Some(bar),
            ) => bar.set_message(format!(
                "{phase} · steps: {finished} finished, {running} running"
            )),
            (Progress::Steps { .. }, None) => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.spinner {
            bar.finish_and_clear();
        }
    }
}
