//! `obsctl up`: argument handling and output only; the work is in `stack::runtime`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::checks::time::parse_duration;
use crate::commands::CommandError;
use crate::commands::status::Output;
use crate::stack::config;
use crate::stack::definition::Component;
use crate::stack::docker::DockerError;
use crate::stack::runtime::{self, RuntimeChoice, RuntimeError, UpOutcome};

/// Exit codes `obsctl up` documents.
pub const EXIT_BAD_INPUT: u8 = 2;
pub const EXIT_DOCKER_UNAVAILABLE: u8 = 3;
pub const EXIT_NOT_READY: u8 = 4;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 ready; 2 bad input (config file, override, project name); \
3 Docker required but unreachable or an image is missing; 4 a component did not become ready \
(its state and last log lines are printed); 1 a port is held by something else (named, with the \
fix; nothing is created) or anything else."
)]
pub struct Args {
    /// Where the stack runs: Docker when the daemon answers and the images are present or can
    /// be pulled (auto), or always Docker, or the embedded backend (`obsctl serve` in the
    /// background).
    #[arg(long, value_enum, default_value = "auto")]
    pub runtime: RuntimeChoice,

    /// How long to wait for every component to be ready, e.g. 90s, 1m30s, 500ms (bare number:
    /// seconds).
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Names the stack's containers, network and volumes (`<project>-tempo`, ...), so several
    /// stacks can live on one engine.
    #[arg(long, default_value = crate::stack::docker::DEFAULT_PROJECT, env = "OBSCTL_PROJECT")]
    pub project: String,

    /// Use this image for one component, COMPONENT=IMAGE (repeatable). Also
    /// OBSCTL_IMAGE_<COMPONENT> and `images:` in the stack config file.
    #[arg(long = "image", value_name = "COMPONENT=IMAGE")]
    pub images: Vec<String>,

    /// Stack config file (`images:` and `ports:` maps); default
    /// $XDG_CONFIG_HOME/obsctl/stack.yaml when it exists.
    #[arg(long, env = "OBSCTL_STACK_CONFIG")]
    pub config: Option<PathBuf>,

    /// The endpoints as a table, or as JSON (what `endpoints.json` records).
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let names = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
    config::check_env_names(names).map_err(|e| CommandError::new(EXIT_BAD_INPUT, e))?;
    let config = config::resolve(args.config.as_deref(), &config::process_env, &args.images)
        .map_err(|e| CommandError::new(EXIT_BAD_INPUT, e))?;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let outcome = rt
        .block_on(runtime::up(
            args.runtime,
            &args.project,
            &config,
            args.timeout,
        ))
        .map_err(|e| {
            let code = match &e {
                RuntimeError::Docker(DockerError::BadProject(_)) => EXIT_BAD_INPUT,
                RuntimeError::Docker(
                    DockerError::Unreachable { .. } | DockerError::ImageMissing(_),
                ) => EXIT_DOCKER_UNAVAILABLE,
                RuntimeError::Docker(DockerError::NotReady(..))
                | RuntimeError::Background(crate::stack::background::BackgroundError::NotReady(
                    ..,
                )) => EXIT_NOT_READY,
                _ => 1,
            };
            CommandError::new(code, e)
        })?;

    let mut table =
        crate::report::table(["endpoint", "address", "notes"], crate::ui::color_enabled());
    let endpoints = match &outcome {
        UpOutcome::Docker { report, endpoints } => {
            let actions: Vec<String> = report
                .actions
                .iter()
                .map(|(c, a)| format!("{c} {a}"))
                .collect();
            eprintln!(
                "obsctl: Docker stack {} ready ({})",
                args.project,
                actions.join(", ")
            );
            table.add_row([
                "Grafana".to_string(),
                endpoints.grafana.clone().unwrap_or_default(),
                format!(
                    "anonymous viewer; admin login: admin / password in {}",
                    report.password_file.display()
                ),
            ]);
            endpoints
        }
        UpOutcome::Embedded {
            pid,
            already_running,
            endpoints,
            fallback,
        } => {
            if let Some(why) = fallback {
                eprintln!("obsctl: using the embedded backend: {why}");
            }
            eprintln!(
                "obsctl: embedded backend {} (pid {pid}, log {})",
                if *already_running {
                    "already running"
                } else {
                    "started"
                },
                crate::stack::background::log_path().display()
            );
            endpoints
        }
    };
    if args.output == Output::Json {
        let json = serde_json::to_string_pretty(endpoints).context("encoding the endpoints")?;
        println!("{json}");
        return Ok(ExitCode::SUCCESS);
    }
    let docker = endpoints.runtime == crate::stack::endpoints::Runtime::Docker;
    table.add_row([
        "OTLP gRPC",
        &endpoints.otlp_grpc,
        "OTEL_EXPORTER_OTLP_ENDPOINT, protocol grpc",
    ]);
    table.add_row([
        "OTLP HTTP",
        &endpoints.otlp_http,
        "protocol http/protobuf or http/json",
    ]);
    let (tempo, prometheus, loki) = if docker {
        let names = |component, real: &'static str| -> &'static str {
            match &outcome {
                UpOutcome::Docker { report, .. }
                    if report
                        .images
                        .get(&component)
                        .is_some_and(|i| config::is_stand_in(i)) =>
                {
                    "stand-in: obsctl serve with this API (docs/observability.md, Air-gapped)"
                }
                _ => real,
            }
        };
        (
            names(Component::Tempo, "Tempo"),
            "Prometheus (exemplars, alert rules)",
            names(Component::Loki, "Loki"),
        )
    } else {
        (
            "Tempo-shaped API",
            "Prometheus-shaped API (/metrics for scraping)",
            "Loki-shaped API",
        )
    };
    table.add_row(["Tempo", &endpoints.tempo, tempo]);
    table.add_row(["Prometheus", &endpoints.prometheus, prometheus]);
    table.add_row(["Loki", &endpoints.loki, loki]);
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}
