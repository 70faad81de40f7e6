//! `obsctl shim`: argument handling and output only; the work is in `obsctl::shim`.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::checks::time::parse_duration;
use crate::commands::CommandError;
use crate::conventions::env;
use crate::otlp::export::ExportConfig;
use crate::shim::{self, DEFAULT_EXPORT_BUDGET, Options};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit code: the command's own; 128+N when it died of signal N; 127 when it was \
not found; 126 when it could not be executed. With --check: 0 when the collector answered, 1 \
otherwise (0 with --warn-only). Telemetry problems never change the exit code. See docs/shim.md."
)]
pub struct Args {
    /// Agent name (default: $AGENT); the span is named <agent>/<step>.
    #[arg(long)]
    pub agent: Option<String>,

    /// Step name (default: $STEP, else the command's file name).
    #[arg(long)]
    pub step: Option<String>,

    /// Extra span attribute; a correlation key (repo, prNumber, ref, taskId, workflowName,
    /// nodeId, commitSha, namespace) overrides the matching environment variable. Repeatable.
    #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_attr)]
    pub attrs: Vec<(String, String)>,

    /// Total time allowed for exporting after the step ended, whatever
    /// OTEL_EXPORTER_OTLP_TIMEOUT says, e.g. 500ms, 2s; what is not delivered by then is spooled
    /// [default: $OBSCTL_EXPORT_BUDGET_MS (milliseconds), else 1s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub export_budget: Option<Duration>,

    /// Only dial the configured collector, print what was found, and exit 0 (reachable) or 1.
    #[arg(long, conflicts_with = "command")]
    pub check: bool,

    /// With --check: exit 0 even when the collector does not answer (the message still says
    /// so); the `warn` policy of `obsctl instrument --check-policy`.
    #[arg(long, requires = "check")]
    pub warn_only: bool,

    /// Copy this obsctl into DIR as DIR/obsctl and exit: the init container `obsctl instrument`
    /// adds to each pod, so that a step image without obsctl can start through the shim.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["command", "check"])]
    pub install: Option<std::path::PathBuf>,

    /// The step to run, after `--`.
    #[arg(
        last = true,
        value_name = "COMMAND",
        required_unless_present_any = ["check", "install"]
    )]
    pub command: Vec<OsString>,
}

/// A bad value in the environment must not stop the step from running: warn, use the default.
fn budget_from_env() -> Option<u64> {
    let value = std::env::var(env::OBSCTL_EXPORT_BUDGET_MS).ok()?;
    match value.trim().parse() {
        Ok(ms) => Some(ms),
        Err(_) => {
            shim::warn(format!(
                "{} is {value:?}; expected milliseconds, using {} ms",
                env::OBSCTL_EXPORT_BUDGET_MS,
                DEFAULT_EXPORT_BUDGET.as_millis()
            ));
            None
        }
    }
}

fn parse_attr(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let budget = args
        .export_budget
        .or_else(|| budget_from_env().map(Duration::from_millis))
        .unwrap_or(DEFAULT_EXPORT_BUDGET);
    if let Some(dir) = &args.install {
        let target = crate::argo::instrument::install_self(dir)
            .with_context(|| format!("cannot install obsctl into {}", dir.display()))?;
        println!("installed {}", target.display());
        return Ok(ExitCode::SUCCESS);
    }
    if args.check {
        return check(budget, args.warn_only);
    }
    let code = shim::run(Options {
        agent: args.agent,
        step: args.step,
        attrs: args.attrs,
        command: args.command,
        export_budget: budget,
    });
    Ok(ExitCode::from(code))
}

fn check(budget: Duration, warn_only: bool) -> anyhow::Result<ExitCode> {
    let config = ExportConfig::from_env().map_err(|e| CommandError::new(1, e))?;
    let timeout = budget.min(config.timeout);
    let report = shim::check::check(config, timeout).context("starting the async runtime")?;
    let ms = report.elapsed.as_secs_f64() * 1000.0;
    match report.result {
        Ok(()) => {
            println!(
                "collector reachable: {} {} accepted an empty traces export in {ms:.1} ms",
                report.protocol, report.endpoint
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!(
                "collector NOT reachable: {} {}: {e} (after {ms:.1} ms)",
                report.protocol, report.endpoint
            );
            Ok(ExitCode::from(if warn_only { 0 } else { 1 }))
        }
    }
}
