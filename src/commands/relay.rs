//! `obsctl relay`: argument handling and output only; the relay is `crate::embedded::relay`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::embedded::relay::Relay;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "A stand-in, not a collector: no processors, batching or persistent queue. \
It answers a sender only after the next hop accepted the data (docs/observability.md, stand-ins)."
)]
pub struct Args {
    /// The OpenTelemetry Collector config whose receivers, health check and pipeline exporters
    /// the relay follows.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(relay(args))
}

async fn relay(args: Args) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    // Installed before the listeners so that an early SIGTERM (docker stop) is graceful.
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let (relay, routes) = Relay::start(&args.config).await?;
    let mut banner = format!(
        "otlp-grpc {}\notlp-http {}\n",
        relay.otlp_grpc, relay.otlp_http
    );
    if let Some(health) = relay.health {
        banner += &format!("health {health}\n");
    }
    for route in routes {
        banner += &format!("route {route}\n");
    }
    // A reader that stops reading the banner must not stop the relay.
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(banner.as_bytes()).and_then(|()| out.flush()) {
        eprintln!("obsctl relay: cannot print the routes on stdout: {e}");
    }
    drop(out);
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    relay.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}
