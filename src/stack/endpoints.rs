//! Where the running stack listens. `obsctl serve` and `obsctl up` write this file when they
//! start and remove it when they stop; `run`, `verify`, `trace`, `demo`, `shim` and `flush` read
//! it so that users need no URL flags. Command-line flags always win over the file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::otlp::export::Protocol;

/// Which kind of stack answers at these endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Docker,
    Embedded,
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Runtime::Docker => "Docker",
            Runtime::Embedded => "embedded",
        })
    }
}

/// Base URLs (scheme, host, port; no trailing slash) of every component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    pub runtime: Runtime,
    /// OTLP over gRPC, for `OTEL_EXPORTER_OTLP_ENDPOINT` with protocol `grpc`.
    pub otlp_grpc: String,
    /// OTLP over HTTP, for protocol `http/protobuf` or `http/json`.
    pub otlp_http: String,
    /// Tempo-shaped trace API.
    pub tempo: String,
    /// Loki-shaped log API.
    pub loki: String,
    /// Prometheus-shaped metric API.
    pub prometheus: String,
    /// Grafana, when the Docker stack runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grafana: Option<String>,
    /// The process that owns these endpoints (`obsctl serve`), so a stale file can be detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

impl Endpoints {
    /// The embedded backend answers every query API on one address.
    pub fn embedded(otlp_grpc: &str, otlp_http: &str, api: &str) -> Self {
        let url = |addr: &str| format!("http://{addr}");
        Self {
            runtime: Runtime::Embedded,
            otlp_grpc: url(otlp_grpc),
            otlp_http: url(otlp_http),
            tempo: url(api),
            loki: url(api),
            prometheus: url(api),
            grafana: None,
            pid: Some(std::process::id()),
        }
    }

    /// The OTLP base URL for `protocol`.
    pub fn otlp(&self, protocol: Protocol) -> &str {
        match protocol {
            Protocol::Grpc => &self.otlp_grpc,
            Protocol::HttpProtobuf | Protocol::HttpJson => &self.otlp_http,
        }
    }

    /// `state_home()/endpoints.json`.
    pub fn default_path() -> PathBuf {
        crate::paths::state_home().join("endpoints.json")
    }

    /// The endpoints file if present and readable; `None` when no stack is recorded as up.
    pub fn load(path: &Path) -> Option<Self> {
        let body = std::fs::read(path).ok()?;
        serde_json::from_slice(&body).ok()
    }

    /// Written atomically (temporary file, then rename), so readers never see half a file.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).expect("endpoints always serialize"),
        )?;
        std::fs::rename(tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_endpoints_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("endpoints.json");
        assert_eq!(Endpoints::load(&path), None);
        let endpoints = Endpoints::embedded("127.0.0.1:4317", "127.0.0.1:4318", "127.0.0.1:3200");
        endpoints.save(&path).unwrap();
        let loaded = Endpoints::load(&path).unwrap();
        assert_eq!(loaded, endpoints);
        assert_eq!(loaded.prometheus, "http://127.0.0.1:3200");
    }
}
