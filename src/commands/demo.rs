//! `obsctl demo`: argument handling and output. The demo itself is `crate::demo`.
//! Exit codes as `verify`: 0 passed, 1 could not run, 2 a check failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::verify::EXIT_CHECK_FAILED;
use crate::checks::time::parse_duration;
use crate::report::task::render_task;
use crate::report::verify::table;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Start a private in-process backend even when a stack is running.
    #[arg(long)]
    pub embedded: bool,
    /// How long verification waits for the telemetry to arrive.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Where to record the demo run [default: a temporary directory with the in-process
    /// backend, the usual state directory with a running stack].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub access: super::access::AccessArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let connector = args.access.connector(Default::default())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let options = crate::demo::Options {
        embedded: args.embedded,
        timeout: args.timeout,
        state_dir: args.state_dir,
        connector,
    };
    let outcome = runtime.block_on(crate::demo::run(options))?;
    eprintln!("obsctl demo: {}", outcome.backend);
    println!(
        "running {} as {}",
        crate::demo::PIPELINE_PATH,
        outcome.run_name
    );
    println!(
        "run {} {} (trace {})\n",
        outcome.run_name, outcome.phase, outcome.trace_id
    );
    let color = crate::ui::color_enabled();
    print!("{}", table(&outcome.report, color));
    if let Some(task) = &outcome.task {
        println!();
        print!("{}", render_task(task, color));
        if outcome.own_backend {
            println!(
                "  (the demo's own backend stopped with it, so no link leads into it; \
                 `obsctl up` keeps a backend running for `obsctl trace`)"
            );
        }
    }
    if outcome.report.passed {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "obsctl demo: {} of {} checks failed",
            outcome.report.failures(),
            outcome.report.checks.len()
        );
        Ok(ExitCode::from(EXIT_CHECK_FAILED))
    }
}
