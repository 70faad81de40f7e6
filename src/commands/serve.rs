//! `obsctl serve`: argument handling and output only; the backend is `crate::embedded`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::embedded::{self, Config, Retention, Server};
use crate::stack::endpoints::Endpoints;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address for OTLP over gRPC. Port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = embedded::DEFAULT_OTLP_GRPC)]
    pub otlp_grpc: SocketAddr,
    /// Address for OTLP over HTTP (/v1/traces, /v1/metrics, /v1/logs).
    #[arg(long, value_name = "ADDR", default_value = embedded::DEFAULT_OTLP_HTTP)]
    pub otlp_http: SocketAddr,
    /// Address of the query API: Tempo-, Loki- and Prometheus-shaped endpoints and /metrics.
    #[arg(long, value_name = "ADDR", default_value = embedded::DEFAULT_API)]
    pub api: SocketAddr,
    /// Where the database lives [default: $XDG_STATE_HOME/obsctl/data or ~/.local/state/obsctl/data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Allow binding to addresses other than loopback (the backend has no authentication).
    #[arg(long)]
    pub allow_remote: bool,
    /// Where to record the endpoints for other obsctl commands [default: <state dir>/endpoints.json].
    #[arg(long, value_name = "FILE")]
    pub endpoints_file: Option<PathBuf>,
    /// Delete spans, logs and idle metric series older than this many hours.
    #[arg(long, value_name = "HOURS", default_value_t = embedded::DEFAULT_RETENTION_AGE.as_secs() / 3600)]
    pub retention_hours: u64,
    /// Delete the oldest spans and logs while the database is larger than this many MiB.
    #[arg(long, value_name = "MIB", default_value_t = embedded::DEFAULT_RETENTION_BYTES / (1024 * 1024))]
    pub max_size_mib: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    let data_dir = args.data_dir.unwrap_or_else(crate::paths::default_data_dir);
    let config = Config {
        otlp_grpc: args.otlp_grpc,
        otlp_http: args.otlp_http,
        api: args.api,
        data_dir: data_dir.clone(),
        allow_remote: args.allow_remote,
        retention: Retention {
            max_age: Duration::from_secs(args.retention_hours.saturating_mul(3600)),
            max_bytes: args.max_size_mib.saturating_mul(1024 * 1024),
        },
        request_timeout: embedded::REQUEST_TIMEOUT,
    };
    // Install the handlers before announcing readiness so that an early SIGTERM is graceful.
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let retention = format!(
        "retention {} h or {} MiB",
        args.retention_hours, args.max_size_mib
    );
    let server = Server::start(config).await?;
    crate::ui::debug(
        1,
        format!(
            "serve: data in {}, {retention}; -v prints one line per stored request",
            data_dir.display()
        ),
    );
    let endpoints_file = args.endpoints_file.unwrap_or_else(Endpoints::default_path);
    Endpoints::embedded(
        &server.otlp_grpc.to_string(),
        &server.otlp_http.to_string(),
        &server.api.to_string(),
    )
    .save(&endpoints_file)
    .with_context(|| format!("cannot write {}", endpoints_file.display()))?;
    // A reader that stops reading the banner must not stop the backend: a failed write is
    // reported and otherwise ignored.
    let banner = format!(
        "otlp-grpc {}\notlp-http {}\napi {}\ndata-dir {}\n",
        server.otlp_grpc,
        server.otlp_http,
        server.api,
        data_dir.display()
    );
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(banner.as_bytes()).and_then(|()| out.flush()) {
        eprintln!("obsctl serve: cannot print the endpoints on stdout: {e}");
    }
    drop(out);
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let result = server.shutdown().await;
    let _ = std::fs::remove_file(&endpoints_file);
    result?;
    Ok(ExitCode::SUCCESS)
}
