//! Fixtures for the shim tests: a throwaway OTLP receiver (the generated tonic servers and a
//! plain HTTP listener) that records every request it acknowledges, a black-hole listener, and
//! an `obsctl` command with a clean OTel environment.

use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use obsctl::otlp::export::{ExportRequest, Signal};
use obsctl::otlp::proto::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use obsctl::otlp::proto::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use obsctl::otlp::proto::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use obsctl::otlp::proto::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use obsctl::otlp::proto::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use obsctl::otlp::proto::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use obsctl::otlp::proto::logs::v1::LogRecord;
use obsctl::otlp::proto::metrics::v1::Metric;
use obsctl::otlp::proto::trace::v1::Span;

use super::free_port;

/// `obsctl SUBCOMMAND` with a clean OTel environment (see [`clean_env`]) and `env` set.
pub fn obsctl(subcommand: &str, spool: &std::path::Path, env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_obsctl"));
    clean_env(&mut cmd, spool);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.arg(subcommand);
    cmd
}

/// Removes every OTel, obsctl and trace-context variable `cmd` would inherit from the test's
/// environment, and gives it its own spool directory and an empty state home.
pub fn clean_env(cmd: &mut Command, spool: &std::path::Path) {
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_")
            || k.starts_with("OBSCTL_")
            || k == "TRACEPARENT"
            || k == "TRACESTATE"
        {
            cmd.env_remove(k);
        }
    }
    cmd.env("OBSCTL_SPOOL_DIR", spool);
    // No endpoints file of a stack running on this machine: without an endpoint variable the
    // shim would export there.
    cmd.env("XDG_STATE_HOME", spool.with_extension("state"));
}

/// The header the receiver records, to prove OTEL_EXPORTER_OTLP_HEADERS reach the collector.
pub const TEST_HEADER: &str = "x-obsctl-test";

#[derive(Clone, Default)]
pub struct Received(Arc<Mutex<Vec<ExportRequest>>>, Arc<Mutex<Vec<String>>>);

impl Received {
    fn header(&self, value: Option<&[u8]>) {
        if let Some(v) = value {
            self.1
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(v).into_owned());
        }
    }

    /// Values of `TEST_HEADER` seen, one per request that carried it.
    pub fn headers(&self) -> Vec<String> {
        self.1.lock().unwrap().clone()
    }

    fn push(&self, r: ExportRequest) {
        self.0.lock().unwrap().push(r);
    }

    pub fn all(&self) -> Vec<ExportRequest> {
        self.0.lock().unwrap().clone()
    }

    pub fn spans(&self) -> Vec<Span> {
        self.all()
            .into_iter()
            .filter_map(|r| match r {
                ExportRequest::Traces(t) => Some(t),
                _ => None,
            })
            .flat_map(|t| t.resource_spans)
            .flat_map(|rs| rs.scope_spans)
            .flat_map(|ss| ss.spans)
            .collect()
    }

    pub fn metrics(&self) -> Vec<Metric> {
        self.all()
            .into_iter()
            .filter_map(|r| match r {
                ExportRequest::Metrics(m) => Some(m),
                _ => None,
            })
            .flat_map(|m| m.resource_metrics)
            .flat_map(|rm| rm.scope_metrics)
            .flat_map(|sm| sm.metrics)
            .collect()
    }

    pub fn logs(&self) -> Vec<LogRecord> {
        self.all()
            .into_iter()
            .filter_map(|r| match r {
                ExportRequest::Logs(l) => Some(l),
                _ => None,
            })
            .flat_map(|l| l.resource_logs)
            .flat_map(|rl| rl.scope_logs)
            .flat_map(|sl| sl.log_records)
            .collect()
    }

    pub fn count(&self, signal: Signal) -> usize {
        self.all().iter().filter(|r| r.signal() == signal).count()
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.header(request.metadata().get(TEST_HEADER).map(|v| v.as_bytes()));
        self.push(ExportRequest::Traces(request.into_inner()));
        Ok(tonic::Response::new(Default::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.header(request.metadata().get(TEST_HEADER).map(|v| v.as_bytes()));
        self.push(ExportRequest::Metrics(request.into_inner()));
        Ok(tonic::Response::new(Default::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.header(request.metadata().get(TEST_HEADER).map(|v| v.as_bytes()));
        self.push(ExportRequest::Logs(request.into_inner()));
        Ok(tonic::Response::new(Default::default()))
    }
}

/// A throwaway OTLP receiver on its own runtime thread: gRPC on `grpc`, HTTP on `http`.
pub struct Receiver {
    pub received: Received,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Receiver {
    pub fn start() -> Self {
        Self::start_on(free_port(), free_port())
    }

    /// Listens on the given ports (to come back where a shim expects it).
    pub fn start_on(grpc_port: u16, http_port: u16) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let received = Received::default();
        let grpc: SocketAddr = ([127, 0, 0, 1], grpc_port).into();
        let http: SocketAddr = ([127, 0, 0, 1], http_port).into();
        let grpc_listener = runtime
            .block_on(tokio::net::TcpListener::bind(grpc))
            .unwrap();
        let http_listener = runtime
            .block_on(tokio::net::TcpListener::bind(http))
            .unwrap();
        let r = received.clone();
        runtime.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(r.clone()))
                .add_service(MetricsServiceServer::new(r.clone()))
                .add_service(LogsServiceServer::new(r))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc_listener))
                .await
                .unwrap();
        });
        let r = received.clone();
        runtime.spawn(async move {
            let app = axum::Router::new().route(
                "/v1/{signal}",
                axum::routing::post(
                    move |axum::extract::Path(signal): axum::extract::Path<String>,
                          headers: axum::http::HeaderMap,
                          body: axum::body::Bytes| {
                        let r = r.clone();
                        async move { http_export(&r, &signal, &headers, &body) }
                    },
                ),
            );
            axum::serve(http_listener, app).await.unwrap();
        });
        Self {
            received,
            grpc,
            http,
            runtime: Some(runtime),
        }
    }

    /// Environment for a shim that exports here with `protocol`.
    pub fn env(&self, protocol: &str) -> Vec<(&'static str, String)> {
        let endpoint = if protocol == "grpc" {
            format!("http://{}", self.grpc)
        } else {
            format!("http://{}", self.http)
        };
        vec![
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_string()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ]
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

fn http_export(
    received: &Received,
    signal: &str,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> axum::http::StatusCode {
    let json = headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    received.header(headers.get(TEST_HEADER).map(|v| v.as_bytes()));
    let Ok(signal) = signal.parse::<Signal>() else {
        return axum::http::StatusCode::NOT_FOUND;
    };
    let request = if json {
        match signal {
            Signal::Traces => serde_json::from_slice(body).map(ExportRequest::Traces).ok(),
            Signal::Metrics => serde_json::from_slice(body)
                .map(ExportRequest::Metrics)
                .ok(),
            Signal::Logs => serde_json::from_slice(body).map(ExportRequest::Logs).ok(),
        }
    } else {
        ExportRequest::decode_protobuf(signal, body).ok()
    };
    match request {
        Some(r) => {
            received.push(r);
            axum::http::StatusCode::OK
        }
        None => axum::http::StatusCode::BAD_REQUEST,
    }
}

/// A listener that completes TCP handshakes (the kernel does) but never reads or answers:
/// an exporter sending here waits until its own deadline.
pub struct BlackHole {
    pub addr: SocketAddr,
    _listener: TcpListener,
}

impl BlackHole {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Self {
            addr: listener.local_addr().unwrap(),
            _listener: listener,
        }
    }
}
