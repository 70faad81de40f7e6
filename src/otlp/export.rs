//! OTLP export with a hard deadline, for short-lived processes: build the request messages,
//! send them over gRPC, HTTP/protobuf or HTTP/JSON, and report which ones the collector
//! acknowledged. The SDK is the wrong tool here: its shutdown can ignore timeouts (reference §6).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::proto::collector::logs::v1::ExportLogsServiceRequest;
use super::proto::collector::logs::v1::logs_service_client::LogsServiceClient;
use super::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use super::proto::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use super::proto::collector::trace::v1::ExportTraceServiceRequest;
use super::proto::collector::trace::v1::trace_service_client::TraceServiceClient;
use super::proto::common::v1::InstrumentationScope;
use super::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use super::proto::metrics::v1::metric::Data;
use super::proto::metrics::v1::{Metric, ResourceMetrics, ScopeMetrics};
use super::proto::resource::v1::Resource;
use super::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
use crate::conventions::env;
use crate::secret::Secret;
use crate::stack::endpoints::Endpoints;
use crate::tls::TlsOptions;

/// `OTEL_EXPORTER_OTLP_TIMEOUT` when unset, per the spec (milliseconds).
pub const SPEC_DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The protocol when neither a flag nor `OTEL_EXPORTER_OTLP_PROTOCOL` names one, for the shim,
/// `flush` and `run` alike: gRPC, the protocol the stack's docs give every step. (The spec's
/// default is http/protobuf; an endpoint on the gRPC port with that default would fail.)
pub const DEFAULT_PROTOCOL: Protocol = Protocol::Grpc;

/// The wire protocol, as `OTEL_EXPORTER_OTLP_PROTOCOL` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::HttpJson => "http/json",
        }
    }

    /// The default base endpoint for this protocol: the spec's ports on 127.0.0.1, where
    /// everything obsctl starts listens (`localhost` may resolve to `::1` first).
    pub fn default_endpoint(self) -> &'static str {
        match self {
            Protocol::Grpc => "http://127.0.0.1:4317",
            Protocol::HttpProtobuf | Protocol::HttpJson => "http://127.0.0.1:4318",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            "http/json" => Ok(Protocol::HttpJson),
            other => Err(ConfigError::Protocol(other.to_string())),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn endpoint_env(self) -> &'static str {
        match self {
            Signal::Traces => env::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
            Signal::Metrics => env::OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
            Signal::Logs => env::OTEL_EXPORTER_OTLP_LOGS_ENDPOINT,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Signal {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Signal::ALL.into_iter().find(|x| x.as_str() == s).ok_or(())
    }
}

/// One OTLP export request of any signal.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportRequest {
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
    Logs(ExportLogsServiceRequest),
}

impl ExportRequest {
    /// Spans of one resource and instrumentation scope.
    pub fn spans(resource: Resource, scope: InstrumentationScope, spans: Vec<Span>) -> Self {
        ExportRequest::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    /// Metrics of one resource and instrumentation scope.
    pub fn metrics(resource: Resource, scope: InstrumentationScope, metrics: Vec<Metric>) -> Self {
        ExportRequest::Metrics(ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(resource),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    /// Log records of one resource and instrumentation scope.
    pub fn logs(resource: Resource, scope: InstrumentationScope, records: Vec<LogRecord>) -> Self {
        ExportRequest::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(resource),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope),
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    pub fn signal(&self) -> Signal {
        match self {
            ExportRequest::Traces(_) => Signal::Traces,
            ExportRequest::Metrics(_) => Signal::Metrics,
            ExportRequest::Logs(_) => Signal::Logs,
        }
    }

    /// Spans, metric data points or log records in the request.
    pub fn item_count(&self) -> usize {
        match self {
            ExportRequest::Traces(r) => r
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .map(|ss| ss.spans.len())
                .sum(),
            ExportRequest::Metrics(r) => r
                .resource_metrics
                .iter()
                .flat_map(|rm| &rm.scope_metrics)
                .flat_map(|sm| &sm.metrics)
                .map(|m| match &m.data {
                    Some(Data::Gauge(g)) => g.data_points.len(),
                    Some(Data::Sum(s)) => s.data_points.len(),
                    Some(Data::Histogram(h)) => h.data_points.len(),
                    Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
                    Some(Data::Summary(s)) => s.data_points.len(),
                    None => 0,
                })
                .sum(),
            ExportRequest::Logs(r) => r
                .resource_logs
                .iter()
                .flat_map(|rl| &rl.scope_logs)
                .map(|sl| sl.log_records.len())
                .sum(),
        }
    }

    pub fn encode_protobuf(&self) -> Vec<u8> {
        match self {
            ExportRequest::Traces(r) => r.encode_to_vec(),
            ExportRequest::Metrics(r) => r.encode_to_vec(),
            ExportRequest::Logs(r) => r.encode_to_vec(),
        }
    }

    pub fn decode_protobuf(signal: Signal, bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        Ok(match signal {
            Signal::Traces => ExportRequest::Traces(ExportTraceServiceRequest::decode(bytes)?),
            Signal::Metrics => ExportRequest::Metrics(ExportMetricsServiceRequest::decode(bytes)?),
            Signal::Logs => ExportRequest::Logs(ExportLogsServiceRequest::decode(bytes)?),
        })
    }

    /// OTLP/JSON: camelCase fields, hex ids, 64-bit integers as strings.
    pub fn encode_json(&self) -> Vec<u8> {
        let encoded = match self {
            ExportRequest::Traces(r) => serde_json::to_vec(r),
            ExportRequest::Metrics(r) => serde_json::to_vec(r),
            ExportRequest::Logs(r) => serde_json::to_vec(r),
        };
        encoded.expect("OTLP messages always serialise to JSON")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("OTEL_EXPORTER_OTLP_PROTOCOL is {0:?}; expected grpc, http/protobuf or http/json")]
    Protocol(String),
    #[error("{var} is {value:?}; expected an http:// or https:// URL")]
    Endpoint { var: String, value: String },
    #[error("OTEL_EXPORTER_OTLP_TIMEOUT is {0:?}; expected milliseconds")]
    Timeout(String),
    #[error("{var} has an invalid entry (no '=' or no key); expected key=value,...")]
    Header { var: String },
    #[error("{var} is {value:?}; expected {expected}")]
    Value {
        var: String,
        value: String,
        expected: &'static str,
    },
}

/// `OTEL_EXPORTER_OTLP_COMPRESSION`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

/// Where and how one signal goes: its endpoint and what its requests carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Full URL: for HTTP including the `/v1/<signal>` path, for gRPC the authority.
    pub endpoint: String,
    /// Header values are secrets: `OTEL_EXPORTER_OTLP_HEADERS` is where tokens go.
    pub headers: Vec<(String, Secret)>,
    /// Used when the endpoint is `https://`.
    pub tls: TlsOptions,
    pub compression: Compression,
}

impl Target {
    fn is_tls(&self) -> bool {
        self.endpoint.starts_with("https://")
    }
}

/// Where and how to export, from the standard `OTEL_EXPORTER_OTLP_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    pub protocol: Protocol,
    targets: [Target; 3],
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`; callers apply their own budget on top.
    pub timeout: Duration,
}

/// The per-signal form of an `OTEL_EXPORTER_OTLP_*` variable: `OTEL_EXPORTER_OTLP_TRACES_*`.
pub fn signal_var(general: &str, signal: Signal) -> String {
    let rest = general
        .strip_prefix("OTEL_EXPORTER_OTLP_")
        .expect("an OTLP exporter variable");
    format!(
        "OTEL_EXPORTER_OTLP_{}_{rest}",
        signal.as_str().to_ascii_uppercase()
    )
}

impl ExportConfig {
    /// The process environment; without an endpoint variable, the running stack's endpoint
    /// for the protocol (the endpoints file `obsctl up`/`serve` write), else the default.
    pub fn from_env() -> Result<Self, ConfigError> {
        let stack = Endpoints::load(&Endpoints::default_path());
        Self::resolve(|name| std::env::var(name).ok(), stack.as_ref())
    }

    /// Spec rules: a per-signal endpoint is used as it is; the base endpoint gets
    /// `/v1/<signal>` appended for HTTP; empty variables count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::resolve(lookup, None)
    }

    /// [`ExportConfig::from_lookup`], with `stack`'s endpoint as the base endpoint when no
    /// variable names one.
    fn resolve(
        lookup: impl Fn(&str) -> Option<String>,
        stack: Option<&Endpoints>,
    ) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let protocol = match get(env::OTEL_EXPORTER_OTLP_PROTOCOL) {
            Some(p) => p.parse()?,
            None => DEFAULT_PROTOCOL,
        };
        let (base_var, base) = match (get(env::OTEL_EXPORTER_OTLP_ENDPOINT), stack) {
            (Some(url), _) => (env::OTEL_EXPORTER_OTLP_ENDPOINT, url),
            (None, Some(stack)) => ("the endpoints file", stack.otlp(protocol).to_string()),
            (None, None) => (
                "the default endpoint",
                protocol.default_endpoint().to_string(),
            ),
        };
        // A per-signal variable wins over the general one, and names itself in errors.
        let pick = |general: &str, signal: Signal| {
            let specific = signal_var(general, signal);
            match get(&specific) {
                Some(v) => Some((specific, v)),
                None => get(general).map(|v| (general.to_string(), v)),
            }
        };
        let path = |var: &str, signal: Signal| {
            pick(var, signal).map(|(_, v)| std::path::PathBuf::from(v.trim()))
        };
        let mut targets: Vec<Target> = Vec::with_capacity(3);
        for signal in Signal::ALL {
            let (var, url) = match get(signal.endpoint_env()) {
                Some(url) => (signal.endpoint_env(), url.trim().to_string()),
                None if protocol == Protocol::Grpc => (base_var, base.trim().to_string()),
                None => (
                    base_var,
                    format!("{}/v1/{}", base.trim().trim_end_matches('/'), signal),
                ),
            };
            let insecure = match pick(env::OTEL_EXPORTER_OTLP_INSECURE, signal) {
                Some((var, v)) => parse_bool(&var, &v)?,
                None => false,
            };
            let endpoint = with_scheme(var, url, protocol, insecure)?;
            let headers = match pick(env::OTEL_EXPORTER_OTLP_HEADERS, signal) {
                Some((var, h)) => parse_headers(&var, &h)?,
                None => Vec::new(),
            };
            let compression = match pick(env::OTEL_EXPORTER_OTLP_COMPRESSION, signal) {
                Some((var, v)) => match v.trim() {
                    "gzip" => Compression::Gzip,
                    "none" => Compression::None,
                    _ => {
                        return Err(ConfigError::Value {
                            var,
                            value: v,
                            expected: "gzip or none",
                        });
                    }
                },
                None => Compression::None,
            };
            targets.push(Target {
                endpoint,
                headers,
                tls: TlsOptions {
                    ca_file: path(env::OTEL_EXPORTER_OTLP_CERTIFICATE, signal),
                    client_cert: path(env::OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE, signal),
                    client_key: path(env::OTEL_EXPORTER_OTLP_CLIENT_KEY, signal),
                    insecure_skip_verify: false,
                },
                compression,
            });
        }
        let timeout = match get(env::OTEL_EXPORTER_OTLP_TIMEOUT) {
            Some(ms) => Duration::from_millis(
                ms.trim()
                    .parse()
                    .map_err(|_| ConfigError::Timeout(ms.clone()))?,
            ),
            None => SPEC_DEFAULT_TIMEOUT,
        };
        Ok(Self {
            protocol,
            targets: targets.try_into().expect("one target per signal"),
            timeout,
        })
    }

    pub fn endpoint(&self, signal: Signal) -> &str {
        &self.targets[signal.index()].endpoint
    }

    pub fn target(&self, signal: Signal) -> &Target {
        &self.targets[signal.index()]
    }
}

/// The endpoint with its scheme: `http://` and `https://` as given; without one, the spec's
/// rule for gRPC (TLS unless `OTEL_EXPORTER_OTLP_INSECURE=true`). HTTP endpoints need one.
fn with_scheme(
    var: &str,
    url: String,
    protocol: Protocol,
    insecure: bool,
) -> Result<String, ConfigError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(url);
    }
    if protocol == Protocol::Grpc && !url.contains("://") && !url.is_empty() {
        let scheme = if insecure { "http" } else { "https" };
        return Ok(format!("{scheme}://{url}"));
    }
    Err(ConfigError::Endpoint {
        var: var.to_string(),
        value: url,
    })
}

fn parse_bool(var: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ConfigError::Value {
            var: var.to_string(),
            value: value.to_string(),
            expected: "true or false",
        }),
    }
}

/// `key1=value1,key2=value2` with percent-encoded values (W3C baggage format, as the spec says).
/// Errors name the variable, never the entry: header values are credentials.
fn parse_headers(var: &str, text: &str) -> Result<Vec<(String, Secret)>, ConfigError> {
    let invalid = || ConfigError::Header {
        var: var.to_string(),
    };
    text.split(',')
        .filter(|entry| !entry.trim().is_empty())
        .map(|entry| {
            let (k, v) = entry.split_once('=').ok_or_else(invalid)?;
            let key = k.trim().to_ascii_lowercase();
            if key.is_empty() {
                return Err(invalid());
            }
            Ok((key, Secret::new(percent_decode(v.trim()))))
        })
        .collect()
}

/// Decodes `%XX` escapes, as OTel environment variables (headers, resource attributes) use.
pub fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(hi * 16 + lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How [`ExportError::Deadline`] ends: a request in doubt (the backend may have committed it
/// without its answer arriving), which the replay then delivers again. Chaos looks for it in
/// the shim's warnings.
pub const IN_DOUBT: &str = "before the export deadline";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("no answer from {endpoint} {IN_DOUBT}")]
    Deadline { endpoint: String },
    #[error("{endpoint} answered {status}")]
    Rejected {
        endpoint: String,
        status: String,
        retryable: bool,
    },
    /// The endpoint speaks the other protocol: a gRPC port asked for OTLP/HTTP, or the reverse.
    #[error(
        "{endpoint} answered {answered} ({speaks}?); set {}={fix}",
        env::OTEL_EXPORTER_OTLP_PROTOCOL
    )]
    WrongProtocol {
        endpoint: String,
        answered: String,
        speaks: &'static str,
        fix: Protocol,
    },
}

impl ExportError {
    /// Whether sending the same request later may succeed (so it is worth spooling).
    pub fn is_retryable(&self) -> bool {
        match self {
            ExportError::Connect { .. } | ExportError::Deadline { .. } => true,
            ExportError::Rejected { retryable, .. } => *retryable,
            // Kept for `obsctl flush` once the protocol is set right.
            ExportError::WrongProtocol { .. } => true,
        }
    }
}

type GrpcChannel = Arc<OnceCell<Result<tonic::transport::Channel, ExportError>>>;
type TlsConfig = Arc<OnceCell<Result<Arc<rustls::ClientConfig>, String>>>;

/// Sends export requests; one per process, reusing its connections and TLS configurations,
/// and the name lookups [`Exporter::prepare`] started (only those: a long-lived sender's peer
/// may move).
pub struct Exporter {
    config: ExportConfig,
    grpc: std::sync::Mutex<HashMap<String, GrpcChannel>>,
    tls: std::sync::Mutex<HashMap<TlsOptions, TlsConfig>>,
    hosts: Arc<resolve::Resolver>,
    keepalive: Option<Duration>,
}

impl Exporter {
    pub fn new(config: ExportConfig) -> Self {
        Self {
            config,
            grpc: Default::default(),
            tls: Default::default(),
            hosts: Default::default(),
            keepalive: None,
        }
    }

    /// Starts, in the background, what every export needs before its first byte: the TLS
    /// configurations (the system's roots take milliseconds to read) and the endpoints' name
    /// lookups (each a thread; on a busy machine a few milliseconds of waiting). The shim calls
    /// it while the step runs, so a short step's export finds them done; an export that comes
    /// first waits for the same work instead of doing it twice. Connections are not opened
    /// ahead: one held idle through an hour-long step would cost every collector a connection
    /// per running step.
    pub fn prepare(&self) {
        for target in &self.config.targets {
            if target.is_tls() {
                let cell = self.tls_cell(&target.tls);
                let options = target.tls.clone();
                let alpn = self.alpn();
                tokio::spawn(async move {
                    let _ = cell
                        .get_or_init(|| async move {
                            tokio::task::spawn_blocking(move || build_tls(&options, alpn))
                                .await
                                .unwrap_or_else(|e| Err(e.to_string()))
                        })
                        .await;
                });
            }
            if let Some((host, port)) = resolve::host_port(&target.endpoint) {
                self.hosts.keep(&host, port);
                let hosts = self.hosts.clone();
                tokio::spawn(async move {
                    let _ = hosts.resolve(&host, port).await;
                });
            }
        }
    }

    /// HTTP/2 pings every `every` while a gRPC request is in flight, the connection closed when
    /// one goes unanswered as long: for a long-lived sender (the relay), whose peer can vanish
    /// without a reset (a container cut from its network and given a new address), so a request
    /// fails within two periods and the next one reconnects instead of hanging to its deadline.
    /// Not for senders to a real Collector, whose gRPC server refuses frequent pings.
    pub fn with_keepalive(mut self, every: Duration) -> Self {
        self.keepalive = Some(every);
        self
    }

    fn alpn(&self) -> &'static [u8] {
        match self.config.protocol {
            Protocol::Grpc => crate::tls::ALPN_H2,
            Protocol::HttpProtobuf | Protocol::HttpJson => crate::tls::ALPN_HTTP1,
        }
    }

    fn tls_cell(&self, options: &TlsOptions) -> TlsConfig {
        self.tls
            .lock()
            .expect("TLS config lock")
            .entry(options.clone())
            .or_default()
            .clone()
    }

    /// The rustls configuration for `target`, `None` for a plain endpoint; built once per set
    /// of options: the three signals usually share it, and reading the system's roots is the
    /// costly part.
    async fn tls_config(
        &self,
        target: &Target,
    ) -> Result<Option<Arc<rustls::ClientConfig>>, ExportError> {
        if !target.is_tls() {
            return Ok(None);
        }
        let alpn = self.alpn();
        self.tls_cell(&target.tls)
            .get_or_init(|| async { build_tls(&target.tls, alpn) })
            .await
            .clone()
            .map(Some)
            .map_err(|reason| ExportError::Connect {
                endpoint: target.endpoint.clone(),
                reason,
            })
    }

    pub fn config(&self) -> &ExportConfig {
        &self.config
    }

    /// Sends every request concurrently and answers in the same order; nothing outlives
    /// `deadline`.
    pub async fn send_all(
        &self,
        requests: &[ExportRequest],
        deadline: Instant,
    ) -> Vec<Result<(), ExportError>> {
        futures_join_all(requests.iter().map(|r| self.send(r, deadline))).await
    }

    /// Sends one request and waits for the collector's answer, at most until `deadline`.
    pub async fn send(
        &self,
        request: &ExportRequest,
        deadline: Instant,
    ) -> Result<(), ExportError> {
        let target = self.config.target(request.signal());
        let endpoint = target.endpoint.clone();
        let attempt = async {
            let sent = match self.config.protocol {
                Protocol::Grpc => self.send_grpc(target, request, deadline).await,
                Protocol::HttpProtobuf | Protocol::HttpJson => {
                    self.send_http(target, request).await
                }
            };
            match sent {
                Err(e @ (ExportError::Connect { .. } | ExportError::Rejected { .. })) => {
                    Err(self.name_wrong_protocol(&endpoint, e).await)
                }
                other => other,
            }
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(result) => result,
            Err(_) => Err(ExportError::Deadline { endpoint }),
        }
    }

    /// A failed export, or [`ExportError::WrongProtocol`] when the endpoint turns out to speak
    /// the other protocol: checked only after a failure, so a working export pays nothing.
    async fn name_wrong_protocol(&self, endpoint: &str, failure: ExportError) -> ExportError {
        let wrong = |answered: String, speaks, fix| ExportError::WrongProtocol {
            endpoint: endpoint.to_string(),
            answered,
            speaks,
            fix,
        };
        // tonic's words for an HTTP answer without gRPC status: an HTTP server that speaks
        // HTTP/2 too, whose routes are OTLP/HTTP's. A TLS terminator's own refusals (400 for a
        // missing client certificate, 401, 403) are not that.
        if let ExportError::Rejected { status, .. } = &failure
            && let Some((_, code)) = status.split_once("mapped from HTTP status code ")
            && !matches!(code.trim(), "400" | "401" | "403")
        {
            return wrong(
                format!("HTTP {code} without a gRPC status"),
                "OTLP/HTTP",
                Protocol::HttpProtobuf,
            );
        }
        match (self.config.protocol, http1::sniff(endpoint).await) {
            (Protocol::Grpc, Some(http1::Speaks::Http1)) => {
                wrong("HTTP/1.1".into(), "OTLP/HTTP", Protocol::HttpProtobuf)
            }
            (Protocol::HttpProtobuf | Protocol::HttpJson, Some(http1::Speaks::Http2)) => {
                wrong("HTTP/2".into(), "gRPC", Protocol::Grpc)
            }
            _ => failure,
        }
    }

    async fn send_http(&self, target: &Target, request: &ExportRequest) -> Result<(), ExportError> {
        let endpoint = target.endpoint.as_str();
        let (body, content_type) = match self.config.protocol {
            Protocol::HttpJson => (request.encode_json(), "application/json"),
            _ => (request.encode_protobuf(), "application/x-protobuf"),
        };
        let mut headers: Vec<(&str, &str)> = vec![("Content-Type", content_type)];
        let body = match target.compression {
            Compression::Gzip => {
                headers.push(("Content-Encoding", "gzip"));
                gzip(&body)
            }
            Compression::None => body,
        };
        headers.extend(target.headers.iter().map(|(k, v)| (k.as_str(), v.expose())));
        let tls = self.tls_config(target).await?;
        let status = http1::post(endpoint, &self.hosts, tls, &headers, &body)
            .await
            .map_err(|e| ExportError::Connect {
                endpoint: endpoint.to_string(),
                reason: crate::tls::describe(&e),
            })?;
        if (200..300).contains(&status) {
            return Ok(());
        }
        Err(ExportError::Rejected {
            endpoint: endpoint.to_string(),
            status: format!("HTTP {status}"),
            // The spec's retryable HTTP codes.
            retryable: matches!(status, 429 | 502 | 503 | 504),
        })
    }

    async fn grpc_channel(
        &self,
        target: &Target,
        deadline: Instant,
    ) -> Result<tonic::transport::Channel, ExportError> {
        let endpoint = target.endpoint.as_str();
        let tls = self.tls_config(target).await?;
        let cell = self
            .grpc
            .lock()
            .expect("channel map lock")
            .entry(endpoint.to_string())
            .or_default()
            .clone();
        cell.get_or_init(|| async {
            let connect_error = |reason: String| ExportError::Connect {
                endpoint: endpoint.to_string(),
                reason,
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
                .map_err(|e| connect_error(e.to_string()))?
                .connect_timeout(remaining)
                .tcp_nodelay(true);
            let channel = match self.keepalive {
                Some(every) => channel
                    .http2_keep_alive_interval(every)
                    .keep_alive_timeout(every),
                None => channel,
            };
            let connector = connector::Connector::new(self.hosts.clone(), tls);
            channel
                .connect_with_connector(connector)
                .await
                .map_err(|e| connect_error(crate::tls::describe(&e)))
        })
        .await
        .clone()
    }

    async fn send_grpc(
        &self,
        target: &Target,
        request: &ExportRequest,
        deadline: Instant,
    ) -> Result<(), ExportError> {
        let endpoint = target.endpoint.as_str();
        let channel = self.grpc_channel(target, deadline).await?;
        let gzip = (target.compression == Compression::Gzip)
            .then_some(tonic::codec::CompressionEncoding::Gzip);
        // The three generated clients share no trait: one body, instantiated per signal.
        macro_rules! export {
            ($client:ident, $request:expr) => {{
                let mut client = $client::new(channel);
                if let Some(encoding) = gzip {
                    client = client.send_compressed(encoding);
                }
                client
                    .export(grpc_request(target, $request.clone()))
                    .await
                    .map(drop)
            }};
        }
        let result = match request {
            ExportRequest::Traces(r) => export!(TraceServiceClient, r),
            ExportRequest::Metrics(r) => export!(MetricsServiceClient, r),
            ExportRequest::Logs(r) => export!(LogsServiceClient, r),
        };
        result.map_err(|status| {
            use tonic::Code;
            ExportError::Rejected {
                endpoint: endpoint.to_string(),
                status: format!("gRPC {:?}: {}", status.code(), status.message()),
                // The spec's retryable gRPC codes; Unknown covers transport failures.
                retryable: matches!(
                    status.code(),
                    Code::Cancelled
                        | Code::DeadlineExceeded
                        | Code::ResourceExhausted
                        | Code::Aborted
                        | Code::OutOfRange
                        | Code::Unavailable
                        | Code::DataLoss
                        | Code::Unknown
                ),
            }
        })
    }
}

/// The message with the target's headers as gRPC metadata.
fn grpc_request<T>(target: &Target, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    for (k, v) in &target.headers {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(k.as_bytes()),
            tonic::metadata::MetadataValue::try_from(v.expose()),
        ) {
            request.metadata_mut().insert(key, value);
        }
    }
    request
}

fn build_tls(options: &TlsOptions, alpn: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    options.client_config(&[alpn]).map_err(|e| e.to_string())
}

fn gzip(body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder
        .write_all(body)
        .expect("writing to memory cannot fail");
    encoder.finish().expect("writing to memory cannot fail")
}

/// gRPC's transport for tonic's channel: TCP to the endpoint's looked-up addresses, then for
/// `https://` a rustls handshake offering `h2`.
mod connector {
    use std::future::Future;
    use std::io;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use hyper_util::rt::TokioIo;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::TcpStream;
    use tokio_rustls::client::TlsStream;
    use tonic::codegen::http::Uri;

    use super::resolve::Resolver;

    #[derive(Clone)]
    pub struct Connector {
        hosts: Arc<Resolver>,
        tls: Option<tokio_rustls::TlsConnector>,
    }

    impl Connector {
        pub fn new(hosts: Arc<Resolver>, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
            Self {
                hosts,
                tls: tls.map(tokio_rustls::TlsConnector::from),
            }
        }
    }

    pub enum Stream {
        Plain(TcpStream),
        Tls(Box<TlsStream<TcpStream>>),
    }

    type Connecting = Pin<Box<dyn Future<Output = io::Result<TokioIo<Stream>>> + Send>>;

    impl tower::Service<Uri> for Connector {
        type Response = TokioIo<Stream>;
        type Error = io::Error;
        type Future = Connecting;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, uri: Uri) -> Self::Future {
            let Connector { hosts, tls } = self.clone();
            Box::pin(async move {
                let invalid = |what: &str| {
                    io::Error::new(io::ErrorKind::InvalidInput, format!("{what} in {uri}"))
                };
                let host = uri
                    .host()
                    .ok_or_else(|| invalid("no host"))?
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                let port = uri
                    .port_u16()
                    .unwrap_or(if tls.is_some() { 443 } else { 80 });
                let addrs = hosts.resolve(&host, port).await?;
                let tcp = TcpStream::connect(&addrs[..]).await?;
                tcp.set_nodelay(true)?;
                let stream = match tls {
                    Some(tls) => {
                        let name =
                            ServerName::try_from(host).map_err(|_| invalid("a bad host name"))?;
                        Stream::Tls(Box::new(tls.connect(name, tcp).await?))
                    }
                    None => Stream::Plain(tcp),
                };
                Ok(TokioIo::new(stream))
            })
        }
    }

    impl AsyncRead for Stream {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            match self.get_mut() {
                Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
                Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            }
        }
    }

    impl AsyncWrite for Stream {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            match self.get_mut() {
                Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
                Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            }
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            match self.get_mut() {
                Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            }
        }

        fn is_write_vectored(&self) -> bool {
            match self {
                Stream::Plain(s) => s.is_write_vectored(),
                Stream::Tls(s) => s.is_write_vectored(),
            }
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            match self.get_mut() {
                Stream::Plain(s) => Pin::new(s).poll_flush(cx),
                Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            }
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            match self.get_mut() {
                Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
                Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            }
        }
    }
}

/// Name lookups started ahead of need by [`Exporter::prepare`] and kept for the connections
/// that follow (each lookup runs on a thread of its own). A name nobody prepared is looked up
/// for every connection, as a long-lived sender (the relay, `obsctl run`) should: its peer may
/// move.
mod resolve {
    use std::collections::HashMap;
    use std::io;
    use std::net::{IpAddr, SocketAddr};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::sync::OnceCell;
    use tokio::time::Instant;

    /// How long looked-up addresses are used: long enough for a lookup started with a short
    /// step to serve its export, short enough that a long step's export looks the name up
    /// again, as a DNS TTL would (Kubernetes' cluster DNS answers with 5 s).
    const FRESH_FOR: Duration = Duration::from_secs(5);

    type Lookup = Arc<OnceCell<(Instant, Vec<SocketAddr>)>>;

    #[derive(Default)]
    pub struct Resolver(Mutex<HashMap<(String, u16), Lookup>>);

    impl Resolver {
        /// Keeps the lookup of `host` for the connections to come, while it is fresh.
        pub fn keep(&self, host: &str, port: u16) {
            if host.parse::<IpAddr>().is_err() {
                let mut lookups = self.0.lock().expect("lookup lock");
                lookups.entry((host.to_string(), port)).or_default();
            }
        }

        /// The addresses of `host`; an IP address is its own. A failed lookup is not kept: the
        /// next caller tries again.
        pub async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
            if let Ok(ip) = host.parse::<IpAddr>() {
                return Ok(vec![SocketAddr::new(ip, port)]);
            }
            let kept = self
                .0
                .lock()
                .expect("lookup lock")
                .get(&(host.to_string(), port))
                .filter(|cell| cell.get().is_none_or(|(at, _)| at.elapsed() <= FRESH_FOR))
                .cloned();
            let Some(cell) = kept else {
                return lookup(host, port).await.map(|(_, addrs)| addrs);
            };
            let (_, addrs) = cell.get_or_try_init(|| lookup(host, port)).await?;
            Ok(addrs.clone())
        }
    }

    async fn lookup(host: &str, port: u16) -> io::Result<(Instant, Vec<SocketAddr>)> {
        let addrs: Vec<_> = tokio::net::lookup_host((host, port)).await?.collect();
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} has no address"),
            ));
        }
        Ok((Instant::now(), addrs))
    }

    #[cfg(test)]
    impl Resolver {
        pub fn holds(&self, host: &str, port: u16) -> bool {
            self.0
                .lock()
                .unwrap()
                .get(&(host.to_string(), port))
                .is_some_and(|cell| cell.initialized())
        }
    }

    /// The host and port an `http[s]://` endpoint connects to.
    pub fn host_port(url: &str) -> Option<(String, u16)> {
        super::http1::split(url)
            .ok()
            .map(|(host, port, _)| (host, port))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[tokio::test(flavor = "current_thread")]
        async fn names_are_looked_up_once_while_fresh() {
            let hosts = Resolver::default();
            let ip = hosts.resolve("127.0.0.1", 4317).await.unwrap();
            assert_eq!(ip, vec!["127.0.0.1:4317".parse().unwrap()]);
            hosts.keep("127.0.0.1", 4317);
            assert!(hosts.0.lock().unwrap().is_empty(), "an IP is not looked up");
            let unkept = hosts.resolve("localhost", 4318).await.unwrap();
            assert!(
                unkept
                    .iter()
                    .all(|a| a.ip().is_loopback() && a.port() == 4318)
            );
            assert!(
                hosts.0.lock().unwrap().is_empty(),
                "a name nobody kept is not kept"
            );
            hosts.keep("localhost", 4317);
            let first = hosts.resolve("localhost", 4317).await.unwrap();
            assert!(
                first
                    .iter()
                    .all(|a| a.ip().is_loopback() && a.port() == 4317)
            );
            let cell =
                |hosts: &Resolver| hosts.0.lock().unwrap()[&("localhost".into(), 4317)].clone();
            let before = cell(&hosts);
            hosts.resolve("localhost", 4317).await.unwrap();
            assert!(
                Arc::ptr_eq(&before, &cell(&hosts)),
                "a fresh lookup is reused"
            );
        }
    }
}

/// A minimal HTTP/1.1 client for one POST per connection: measured cheaper to start and
/// smaller in memory than a general client, which matters in a process that lives 5 ms.
/// Proxies (`HTTP_PROXY`) are not used: a collector is a local sidecar or service.
mod http1 {
    use std::io;
    use std::sync::Arc;

    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::resolve::Resolver;

    /// The most of the answer that is read: the status line and headers fit many times over.
    const MAX_HEAD: usize = 16 * 1024;

    /// `http[s]://host[:port][/path]` split into what the request needs.
    pub(super) fn split(url: &str) -> io::Result<(String, u16, &str)> {
        let invalid = || io::Error::new(io::ErrorKind::InvalidInput, format!("bad URL {url:?}"));
        let (rest, default_port) = match url.strip_prefix("https://") {
            Some(rest) => (rest, 443),
            None => (url.strip_prefix("http://").ok_or_else(invalid)?, 80),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => (h, p.parse().map_err(|_| invalid())?),
            _ => (authority, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(invalid());
        }
        Ok((host.to_string(), port, path))
    }

    /// Sends the request (over TLS when `tls` is given) and answers the status code once the
    /// final response head arrived.
    ///
    /// The body goes out only after the server's `100 Continue`: a collector that is frozen
    /// (SIGSTOP, a hung process, a black-holed path) never sees a body it could still commit
    /// after this client gave up and spooled the request, so a later replay cannot duplicate
    /// it. Both hyper (obsctl's backend) and Go's net/http (the Collector) answer 100 when the
    /// handler starts reading, so the cost is one round trip.
    pub async fn post(
        url: &str,
        hosts: &Resolver,
        tls: Option<Arc<rustls::ClientConfig>>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<u16> {
        let (host, port, path) = split(url)?;
        let addrs = hosts.resolve(&host, port).await?;
        let stream = TcpStream::connect(&addrs[..]).await?;
        stream.set_nodelay(true)?;
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\n\
             Content-Length: {}\r\nConnection: close\r\nExpect: 100-continue\r\n",
            body.len()
        );
        // A CR or LF in a configured header would split the request: such headers are skipped.
        for (k, v) in headers {
            if !(k.contains(['\r', '\n']) || v.contains(['\r', '\n'])) {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        head.push_str("\r\n");
        match tls {
            Some(config) => {
                let name = ServerName::try_from(host).map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, format!("bad host in {url:?}"))
                })?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, stream)
                    .await?;
                exchange(stream, head.as_bytes(), body).await
            }
            None => exchange(stream, head.as_bytes(), body).await,
        }
    }

    async fn exchange(
        mut stream: impl AsyncRead + AsyncWrite + Unpin,
        head: &[u8],
        body: &[u8],
    ) -> io::Result<u16> {
        stream.write_all(head).await?;
        stream.flush().await?;
        let mut pending = Vec::with_capacity(1024);
        let mut status = read_head(&mut stream, &mut pending).await?;
        if status == 100 {
            stream.write_all(body).await?;
            stream.flush().await?;
            status = read_head(&mut stream, &mut pending).await?;
        }
        Ok(status)
    }

    /// Reads one response head and answers its status; bytes after it stay in `pending` (a
    /// server may send the final head right behind its `100 Continue`).
    async fn read_head(
        stream: &mut (impl AsyncRead + Unpin),
        pending: &mut Vec<u8>,
    ) -> io::Result<u16> {
        let mut buf = [0u8; 1024];
        loop {
            if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let status = parse_status(&pending[..end]);
                pending.drain(..end + 4);
                return status.ok_or_else(not_http);
            }
            let n = stream.read(&mut buf).await?;
            if n == 0 || pending.len() + n > MAX_HEAD {
                return Err(not_http());
            }
            pending.extend_from_slice(&buf[..n]);
        }
    }

    fn not_http() -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the answer is not an HTTP/1.x response",
        )
    }

    /// Which HTTP an endpoint speaks.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Speaks {
        Http1,
        Http2,
    }

    /// The HTTP/2 connection preface and an empty SETTINGS frame: an HTTP/2 server answers
    /// with its own SETTINGS frame, an HTTP/1 server with a status line (400).
    const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

    /// Asks `url`'s server which HTTP it speaks; `None` when it cannot be reached or answers
    /// neither way within a second.
    pub async fn sniff(url: &str) -> Option<Speaks> {
        // Behind TLS the preface would meet a handshake, not an answer.
        if !url.starts_with("http://") {
            return None;
        }
        let (host, port, _) = split(url).ok()?;
        let exchange = async {
            let mut stream = TcpStream::connect((host.as_str(), port)).await.ok()?;
            stream.write_all(H2_PREFACE).await.ok()?;
            let mut answer = Vec::new();
            let mut buf = [0u8; 64];
            while answer.len() < 9 {
                let n = stream.read(&mut buf).await.ok()?;
                if n == 0 {
                    break;
                }
                answer.extend_from_slice(&buf[..n]);
            }
            classify(&answer)
        };
        tokio::time::timeout(std::time::Duration::from_secs(1), exchange)
            .await
            .ok()?
    }

    /// An HTTP/1 status line, or an HTTP/2 frame header (9 bytes) of type SETTINGS (4).
    fn classify(answer: &[u8]) -> Option<Speaks> {
        if answer.starts_with(b"HTTP/1.") {
            Some(Speaks::Http1)
        } else if answer.len() >= 9 && answer[3] == 0x04 {
            Some(Speaks::Http2)
        } else {
            None
        }
    }

    fn parse_status(answer: &[u8]) -> Option<u16> {
        let line = answer.split(|b| *b == b'\n').next()?;
        let line = std::str::from_utf8(line).ok()?;
        let mut parts = line.split_whitespace();
        parts.next().filter(|v| v.starts_with("HTTP/1."))?;
        parts.next()?.parse().ok()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn urls_and_status_lines_parse() {
            assert_eq!(
                split("http://collector:4318/v1/traces").unwrap(),
                ("collector".to_string(), 4318, "/v1/traces")
            );
            assert_eq!(
                split("http://[::1]:4318/otlp/v1/logs").unwrap(),
                ("::1".to_string(), 4318, "/otlp/v1/logs")
            );
            assert_eq!(split("http://h").unwrap(), ("h".to_string(), 80, "/"));
            assert_eq!(split("https://h").unwrap(), ("h".to_string(), 443, "/"));
            assert_eq!(
                split("https://c:4318/v1/logs").unwrap(),
                ("c".to_string(), 4318, "/v1/logs")
            );
            assert!(split("http://:1/x").is_err());
            assert_eq!(
                parse_status(b"HTTP/1.1 503 Service Unavailable\r\n"),
                Some(503)
            );
            assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        }

        #[test]
        fn answers_to_the_h2_preface_are_classified() {
            assert_eq!(
                classify(b"HTTP/1.1 400 Bad Request\r\n"),
                Some(Speaks::Http1)
            );
            assert_eq!(
                classify(b"\0\0\x06\x04\0\0\0\0\0\0\x03\0\0\0\x64"),
                Some(Speaks::Http2)
            );
            assert_eq!(classify(b"SSH-2.0-OpenSSH\r\n"), None);
            assert_eq!(classify(b""), None);
        }
    }
}

/// Polls every future on the current task; the order of results is the order of futures.
async fn futures_join_all<F, T>(futures: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T>,
{
    let mut pending: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<T>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all_done = true;
        for (fut, slot) in pending.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => all_done = false,
                }
            }
        }
        if all_done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results
        .into_iter()
        .map(|r| r.expect("polled to completion"))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<ExportConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ExportConfig::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_are_grpc_on_loopback_and_a_stack_fills_in_the_endpoint() {
        let c = config(&[]).unwrap();
        assert_eq!(c.protocol, Protocol::Grpc);
        assert_eq!(c.endpoint(Signal::Traces), "http://127.0.0.1:4317");
        assert_eq!(c.timeout, Duration::from_secs(10));
        let h = config(&[(env::OTEL_EXPORTER_OTLP_PROTOCOL, "http/protobuf")]).unwrap();
        assert_eq!(h.endpoint(Signal::Logs), "http://127.0.0.1:4318/v1/logs");

        let stack = Endpoints::embedded("127.0.0.1:14317", "127.0.0.1:14318", "127.0.0.1:13200");
        let lookup = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = ExportConfig::resolve(lookup(&[]), Some(&stack)).unwrap();
        assert_eq!(c.endpoint(Signal::Traces), "http://127.0.0.1:14317");
        let h = ExportConfig::resolve(
            lookup(&[(env::OTEL_EXPORTER_OTLP_PROTOCOL, "http/json")]),
            Some(&stack),
        )
        .unwrap();
        assert_eq!(
            h.endpoint(Signal::Metrics),
            "http://127.0.0.1:14318/v1/metrics"
        );
        // A variable beats the file.
        let e = ExportConfig::resolve(
            lookup(&[(env::OTEL_EXPORTER_OTLP_ENDPOINT, "http://collector:4317")]),
            Some(&stack),
        )
        .unwrap();
        assert_eq!(e.endpoint(Signal::Logs), "http://collector:4317");
    }

    #[test]
    fn base_endpoint_gets_the_path_and_per_signal_endpoints_do_not() {
        let c = config(&[
            (env::OTEL_EXPORTER_OTLP_PROTOCOL, "http/protobuf"),
            (env::OTEL_EXPORTER_OTLP_ENDPOINT, "http://collector:4318/"),
            (
                env::OTEL_EXPORTER_OTLP_LOGS_ENDPOINT,
                "http://loki:3100/otlp/v1/logs",
            ),
            (env::OTEL_EXPORTER_OTLP_TIMEOUT, "250"),
        ])
        .unwrap();
        assert_eq!(
            c.endpoint(Signal::Metrics),
            "http://collector:4318/v1/metrics"
        );
        assert_eq!(c.endpoint(Signal::Logs), "http://loki:3100/otlp/v1/logs");
        assert_eq!(c.timeout, Duration::from_millis(250));
    }

    #[test]
    fn bad_values_are_named() {
        assert_eq!(
            config(&[(env::OTEL_EXPORTER_OTLP_PROTOCOL, "udp")]),
            Err(ConfigError::Protocol("udp".into()))
        );
        assert!(matches!(
            config(&[(env::OTEL_EXPORTER_OTLP_ENDPOINT, "ftp://x:4318")]),
            Err(ConfigError::Endpoint { .. })
        ));
        assert!(matches!(
            config(&[
                (env::OTEL_EXPORTER_OTLP_PROTOCOL, "http/protobuf"),
                (env::OTEL_EXPORTER_OTLP_ENDPOINT, "collector:4318"),
            ]),
            Err(ConfigError::Endpoint { .. })
        ));
        let err = config(&[("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "br")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"),
            "{err}"
        );
        assert!(config(&[(env::OTEL_EXPORTER_OTLP_INSECURE, "yes")]).is_err());
        assert!(matches!(
            config(&[(env::OTEL_EXPORTER_OTLP_TIMEOUT, "10s")]),
            Err(ConfigError::Timeout(_))
        ));
    }

    #[test]
    fn headers_are_percent_decoded_and_keys_lowercased() {
        let c = config(&[(
            env::OTEL_EXPORTER_OTLP_HEADERS,
            "Authorization=Bearer%20abc, x-tenant=t1",
        )])
        .unwrap();
        let shown = |signal| -> Vec<(String, String)> {
            c.target(signal)
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_string()))
                .collect()
        };
        assert_eq!(
            shown(Signal::Logs),
            vec![
                ("authorization".to_string(), "Bearer abc".to_string()),
                ("x-tenant".to_string(), "t1".to_string())
            ]
        );
        assert!(!format!("{c:?}").contains("abc"), "{c:?}");
        let err = config(&[(env::OTEL_EXPORTER_OTLP_HEADERS, "tok-secret")]).unwrap_err();
        assert!(!err.to_string().contains("tok-secret"), "{err}");
    }

    #[test]
    fn tls_settings_follow_the_spec_and_per_signal_forms_win() {
        let c = config(&[
            (env::OTEL_EXPORTER_OTLP_ENDPOINT, "collector:4317"),
            (env::OTEL_EXPORTER_OTLP_CERTIFICATE, "/ca.pem"),
            ("OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE", "/logs-ca.pem"),
            (env::OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE, "/client.pem"),
            (env::OTEL_EXPORTER_OTLP_CLIENT_KEY, "/client.key"),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-m=1"),
            (env::OTEL_EXPORTER_OTLP_COMPRESSION, "gzip"),
        ])
        .unwrap();
        // gRPC without a scheme is TLS unless OTEL_EXPORTER_OTLP_INSECURE says otherwise.
        assert_eq!(c.endpoint(Signal::Traces), "https://collector:4317");
        let traces = c.target(Signal::Traces);
        assert_eq!(traces.tls.ca_file.as_deref(), Some(Path::new("/ca.pem")));
        assert_eq!(
            traces.tls.client_key.as_deref(),
            Some(Path::new("/client.key"))
        );
        assert_eq!(
            c.target(Signal::Logs).tls.ca_file.as_deref(),
            Some(Path::new("/logs-ca.pem"))
        );
        assert!(traces.headers.is_empty());
        assert_eq!(c.target(Signal::Metrics).headers.len(), 1);
        assert_eq!(traces.compression, Compression::Gzip);
        let plain = config(&[
            (env::OTEL_EXPORTER_OTLP_ENDPOINT, "collector:4317"),
            (env::OTEL_EXPORTER_OTLP_INSECURE, "TRUE"),
        ])
        .unwrap();
        assert_eq!(plain.endpoint(Signal::Logs), "http://collector:4317");
    }

    #[test]
    fn protobuf_round_trip_keeps_the_request() {
        let req = ExportRequest::Traces(ExportTraceServiceRequest::default());
        let bytes = req.encode_protobuf();
        assert_eq!(
            ExportRequest::decode_protobuf(Signal::Traces, &bytes).unwrap(),
            req
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn prepare_builds_tls_and_looks_names_up_before_any_export() {
        let c = config(&[
            (env::OTEL_EXPORTER_OTLP_ENDPOINT, "https://localhost:4317"),
            (
                env::OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
                "http://localhost:4318",
            ),
        ])
        .unwrap();
        let exporter = Exporter::new(c);
        let tls = exporter.tls_cell(&exporter.config.target(Signal::Traces).tls);
        assert!(!tls.initialized() && !exporter.hosts.holds("localhost", 4317));
        exporter.prepare();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(tls.initialized()
            && exporter.hosts.holds("localhost", 4317)
            && exporter.hosts.holds("localhost", 4318))
        {
            assert!(Instant::now() < deadline, "prepare did not finish in 10 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            exporter.tls.lock().unwrap().len(),
            1,
            "one configuration for all signals"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn refused_connection_fails_fast_and_is_retryable() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        for protocol in ["grpc", "http/protobuf"] {
            let endpoint = format!("http://127.0.0.1:{port}");
            let c = config(&[
                (env::OTEL_EXPORTER_OTLP_PROTOCOL, protocol),
                (env::OTEL_EXPORTER_OTLP_ENDPOINT, &endpoint),
            ])
            .unwrap();
            let exporter = Exporter::new(c);
            let start = Instant::now();
            let results = exporter
                .send_all(
                    &[ExportRequest::Traces(Default::default())],
                    start + Duration::from_secs(5),
                )
                .await;
            assert!(start.elapsed() < Duration::from_secs(1), "{protocol}");
            let err = results[0].clone().unwrap_err();
            assert!(err.is_retryable(), "{protocol}: {err}");
        }
    }
}
