//! `obsctl relay`: the collector's stand-in where the OpenTelemetry Collector image cannot be had
//! (no registry). It reads the stack's own collector config (`stack/collector/config.yaml`), takes
//! OTLP on the receivers' addresses and hands each request, unchanged, to the exporter of its
//! signal's pipeline (traces to Tempo, logs to Loki's `/otlp`, metrics to the aggregator), so data
//! takes the same path as through the real collector. It is not a collector: no processors, no
//! batching, no memory limiter, no persistent queue. It answers the sender only once the next hop
//! accepted the request, and `Unavailable` otherwise, so the sender keeps the data (the shim
//! spools it) instead of the relay.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::pipeline::Sink;
use super::{REQUEST_TIMEOUT, ServeError};
use crate::conventions::env;
use crate::otlp::export::{ExportConfig, ExportError, ExportRequest, Exporter, Signal};

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot read the collector config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("collector config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("collector config: no {0} pipeline with exactly one exporter")]
    Pipeline(&'static str),
    #[error("collector config: pipeline {pipeline} exports to {exporter}, which is not defined")]
    UnknownExporter { pipeline: String, exporter: String },
    #[error(
        "collector config: exporter {0} is neither otlp nor otlphttp; the relay forwards OTLP only"
    )]
    UnsupportedExporter(String),
    #[error("collector config: exporter {exporter}: {message}")]
    Endpoint { exporter: String, message: String },
    #[error("collector config: {what} endpoint {value:?} is not HOST:PORT")]
    Listen { what: &'static str, value: String },
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// The subset of the collector config the relay reads; everything else is the real collector's
/// business and ignored.
#[derive(Debug, Deserialize)]
struct CollectorConfig {
    #[serde(default)]
    extensions: Extensions,
    receivers: Receivers,
    exporters: BTreeMap<String, ExporterConfig>,
    service: ServiceConfig,
}

#[derive(Debug, Default, Deserialize)]
struct Extensions {
    health_check: Option<HealthCheck>,
}

#[derive(Debug, Deserialize)]
struct HealthCheck {
    endpoint: String,
    #[serde(default = "default_health_path")]
    path: String,
}

fn default_health_path() -> String {
    "/".into()
}

#[derive(Debug, Deserialize)]
struct Receivers {
    otlp: OtlpReceiver,
}

#[derive(Debug, Deserialize)]
struct OtlpReceiver {
    protocols: OtlpProtocols,
}

#[derive(Debug, Deserialize)]
struct OtlpProtocols {
    grpc: Listen,
    http: Listen,
}

#[derive(Debug, Deserialize)]
struct Listen {
    endpoint: String,
}

#[derive(Debug, Deserialize)]
struct ExporterConfig {
    endpoint: String,
}

#[derive(Debug, Deserialize)]
struct ServiceConfig {
    pipelines: BTreeMap<String, Pipeline>,
}

#[derive(Debug, Deserialize)]
struct Pipeline {
    exporters: Vec<String>,
}

/// Where the relay listens, from the collector config's receivers and health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listeners {
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    /// The health check's address and path (`/ready` in the stack).
    pub health: Option<(SocketAddr, String)>,
}

/// One next hop per signal.
pub struct Routes {
    exporters: [(Signal, String, Exporter); 3],
}

impl Routes {
    /// Sends `request` to its signal's next hop, within the hop's timeout.
    pub async fn send(&self, request: &ExportRequest) -> Result<(), ExportError> {
        let (_, _, exporter) = self
            .exporters
            .iter()
            .find(|(s, _, _)| *s == request.signal())
            .expect("every signal has a route");
        let deadline = tokio::time::Instant::now() + exporter.config().timeout;
        exporter.send(request, deadline).await
    }

    /// `signal → exporter name → endpoint` lines, for the relay's banner.
    pub fn describe(&self) -> Vec<String> {
        self.exporters
            .iter()
            .map(|(s, name, e)| format!("{s} -> {name} {}", e.config().endpoint(*s)))
            .collect()
    }
}

fn listen(what: &'static str, value: &str) -> Result<SocketAddr, RelayError> {
    value.parse().map_err(|_| RelayError::Listen {
        what,
        value: value.to_string(),
    })
}

/// How long one hop may take: the collector exporters' default timeout (5 s) would be shorter
/// than a shim's 10 s, and a relay that gives up first only makes the shim spool.
const HOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How soon a hop whose peer vanished is given up (`Exporter::with_keepalive`): a partition
/// that hands the next hop's old address to another container must not hang every forward
/// until `HOP_TIMEOUT`.
const HOP_KEEPALIVE: Duration = Duration::from_secs(1);

/// Parses the collector config into the relay's listeners and routes.
pub fn from_collector_config(text: &str, path: &Path) -> Result<(Listeners, Routes), RelayError> {
    let config: CollectorConfig = serde_norway::from_str(text).map_err(|e| RelayError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let route = |signal: Signal| -> Result<(Signal, String, Exporter), RelayError> {
        let pipeline = config
            .service
            .pipelines
            .iter()
            .find(|(name, _)| name.split('/').next() == Some(signal.as_str()))
            .map(|(_, p)| p)
            .filter(|p| p.exporters.len() == 1)
            .ok_or(RelayError::Pipeline(signal.as_str()))?;
        let name = &pipeline.exporters[0];
        let exporter = config
            .exporters
            .get(name)
            .ok_or_else(|| RelayError::UnknownExporter {
                pipeline: signal.as_str().to_string(),
                exporter: name.clone(),
            })?;
        let kind = name.split('/').next().unwrap_or_default();
        // The collector's `otlp` exporter takes HOST:PORT (gRPC); `otlphttp` a base URL to which
        // `/v1/<signal>` is appended, as OTEL_EXPORTER_OTLP_ENDPOINT is.
        let (protocol, endpoint) = match kind {
            "otlp" | "otlp_grpc" => (
                "grpc",
                if exporter.endpoint.contains("://") {
                    exporter.endpoint.clone()
                } else {
                    format!("http://{}", exporter.endpoint)
                },
            ),
            "otlphttp" | "otlp_http" => ("http/protobuf", exporter.endpoint.clone()),
            _ => return Err(RelayError::UnsupportedExporter(name.clone())),
        };
        let timeout = HOP_TIMEOUT.as_millis().to_string();
        let config = ExportConfig::from_lookup(|var| match var {
            env::OTEL_EXPORTER_OTLP_PROTOCOL => Some(protocol.to_string()),
            env::OTEL_EXPORTER_OTLP_ENDPOINT => Some(endpoint.clone()),
            env::OTEL_EXPORTER_OTLP_TIMEOUT => Some(timeout.clone()),
            _ => None,
        })
        .map_err(|e| RelayError::Endpoint {
            exporter: name.clone(),
            message: e.to_string(),
        })?;
        let exporter = Exporter::new(config).with_keepalive(HOP_KEEPALIVE);
        Ok((signal, name.clone(), exporter))
    };
    let routes = Routes {
        exporters: [
            route(Signal::Traces)?,
            route(Signal::Metrics)?,
            route(Signal::Logs)?,
        ],
    };
    let listeners = Listeners {
        otlp_grpc: listen(
            "grpc receiver",
            &config.receivers.otlp.protocols.grpc.endpoint,
        )?,
        otlp_http: listen(
            "http receiver",
            &config.receivers.otlp.protocols.http.endpoint,
        )?,
        health: config
            .extensions
            .health_check
            .map(|h| Ok::<_, RelayError>((listen("health_check", &h.endpoint)?, h.path)))
            .transpose()?,
    };
    Ok((listeners, routes))
}

/// A running relay; [`Relay::shutdown`] stops it.
pub struct Relay {
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub health: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<super::Task>,
}

async fn bind(name: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { name, addr, source })
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

impl Relay {
    /// Reads the collector config at `path`, binds its receivers and health check, and starts
    /// forwarding. Needs a tokio runtime.
    pub async fn start(path: &Path) -> Result<(Self, Vec<String>), RelayError> {
        let text = std::fs::read_to_string(path).map_err(|source| RelayError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let (listeners, routes) = from_collector_config(&text, path)?;
        let described = routes.describe();
        let sink = Sink::Relay(std::sync::Arc::new(routes));
        let grpc = bind("otlp-grpc", listeners.otlp_grpc).await?;
        let http = bind("otlp-http", listeners.otlp_http).await?;
        let local = |l: &TcpListener| l.local_addr().expect("bound socket has an address");
        let (otlp_grpc, otlp_http) = (local(&grpc), local(&http));
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        tasks.extend(super::serve_otlp(
            sink,
            (grpc, http),
            REQUEST_TIMEOUT,
            &stop_rx,
        ));
        let mut health = None;
        if let Some((addr, path)) = listeners.health {
            let listener = bind("health", addr).await?;
            health = Some(local(&listener));
            let app = axum::Router::new().route(
                &path,
                axum::routing::get(|| async { "ready (obsctl relay, a collector stand-in)" }),
            );
            let rx = stop_rx;
            tasks.push((
                "health",
                tokio::spawn(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(stopped(rx))
                        .await
                        .map_err(|e| e.to_string())
                }),
            ));
        }
        Ok((
            Self {
                otlp_grpc,
                otlp_http,
                health,
                stop,
                tasks,
            },
            described,
        ))
    }

    /// Stops accepting and lets in-flight requests finish.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        let _ = self.stop.send(true);
        let mut first_error = None;
        for (name, task) in std::mem::take(&mut self.tasks) {
            let result = task.await.map_err(|e| e.to_string()).and_then(|r| r);
            if let Err(message) = result {
                first_error.get_or_insert(ServeError::Server { name, message });
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stacks_collector_config_routes_each_signal_to_its_backend() {
        let text = crate::stack::files::get("collector/config.yaml").unwrap();
        let (listeners, routes) =
            from_collector_config(text, Path::new("collector/config.yaml")).unwrap();
        assert_eq!(listeners.otlp_grpc.port(), 4317);
        assert_eq!(listeners.otlp_http.port(), 4318);
        let (addr, path) = listeners.health.unwrap();
        assert_eq!((addr.port(), path.as_str()), (13133, "/ready"));
        assert_eq!(
            routes.describe(),
            [
                "traces -> otlp_grpc/tempo http://tempo:4317",
                "metrics -> otlp_grpc/aggregator http://aggregator:4317",
                "logs -> otlp_http/loki http://loki:3100/otlp/v1/logs",
            ]
        );
    }

    #[test]
    fn a_config_the_relay_cannot_follow_is_refused_with_the_reason() {
        let base = "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 0.0.0.0:4317\n      http:\n        endpoint: 0.0.0.0:4318\n";
        let text = format!(
            "{base}exporters:\n  prometheus:\n    endpoint: 0.0.0.0:8889\nservice:\n  pipelines:\n    traces:\n      exporters: [prometheus]\n    metrics:\n      exporters: [prometheus]\n    logs:\n      exporters: [prometheus]\n"
        );
        let err = from_collector_config(&text, Path::new("c.yaml"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("prometheus is neither otlp nor otlphttp"),
            "{err}"
        );
        let text = format!(
            "{base}exporters:\n  otlp:\n    endpoint: tempo:4317\nservice:\n  pipelines:\n    traces:\n      exporters: [otlp]\n"
        );
        let err = from_collector_config(&text, Path::new("c.yaml"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no metrics pipeline"), "{err}");
    }
}
