//! `obsctl flush`: argument handling and output only; the work is in `obsctl::otlp::spool`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::checks::time::parse_duration;
use crate::commands::CommandError;
use crate::conventions::env;
use crate::otlp::export::{ExportConfig, Exporter};
use crate::otlp::spool::{DEFAULT_MAX_BYTES, Spool};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit code: 0 when the spool is empty afterwards, 1 when something is left, 2 \
when OBSCTL_SPOOL_MAX_BYTES is not a number. \
The collector is the one the OTEL_EXPORTER_OTLP_* variables name, else the running stack's \
(the endpoints file of `obsctl up`/`serve`), as for `obsctl shim`."
)]
pub struct Args {
    /// Spool directory (default: the user's state directory, obsctl/spool).
    #[arg(long, env = env::OBSCTL_SPOOL_DIR)]
    pub spool_dir: Option<PathBuf>,

    /// Give up after this long, e.g. 60s, 1m30s, 500ms (bare number: seconds); what is left
    /// stays spooled.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let spool = match args.spool_dir {
        Some(dir) => Spool::new(dir, DEFAULT_MAX_BYTES),
        None => Spool::from_env_checked().map_err(|(_, e)| CommandError::new(2, e))?,
    };
    let config = ExportConfig::from_env().map_err(|e| CommandError::new(1, e))?;
    let endpoint = config
        .endpoint(crate::otlp::export::Signal::Traces)
        .to_string();
    let protocol = config.protocol;
    let exporter = Exporter::new(config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    crate::ui::debug(
        1,
        format!(
            "flush: replaying {} to {protocol} {endpoint} within {}",
            spool.dir().display(),
            crate::ui::duration(args.timeout)
        ),
    );
    let deadline = tokio::time::Instant::now() + args.timeout;
    let report = runtime
        .block_on(spool.replay(&exporter, deadline, None))
        .with_context(|| format!("replaying {}", spool.dir().display()))?;
    println!(
        "spool {}: delivered {} request(s) ({} items) to {protocol} {endpoint}; {} left",
        spool.dir().display(),
        report.delivered,
        report.delivered_items,
        report.remaining
    );
    if report.rejected > 0 {
        println!(
            "{} request(s) refused for good by the collector and removed",
            report.rejected
        );
    }
    if report.corrupt > 0 {
        println!(
            "{} unreadable file(s) moved aside with a .corrupt suffix",
            report.corrupt
        );
    }
    let dropped = spool.dropped();
    if dropped.requests > 0 {
        println!(
            "{} request(s) ({} items) were dropped earlier because the spool was full",
            dropped.requests, dropped.items
        );
        eprintln!(
            "obsctl flush: warning: telemetry was lost to a full spool; raise {}",
            env::OBSCTL_SPOOL_MAX_BYTES
        );
    }
    if let Some(e) = &report.stopped_by {
        println!("stopped: {e}");
    }
    Ok(if report.remaining == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
