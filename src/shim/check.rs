//! `obsctl shim --check`: the init-container health check. Dials the configured endpoint and
//! sends an empty export request, which a collector acknowledges without storing anything.

use std::time::Duration;

use crate::otlp::export::{ExportConfig, ExportError, ExportRequest, Exporter, Signal};

/// What the check found.
#[derive(Debug)]
pub struct CheckReport {
    pub protocol: String,
    pub endpoint: String,
    pub elapsed: Duration,
    pub result: Result<(), ExportError>,
}

/// Sends an empty traces request within `timeout`.
pub fn check(config: ExportConfig, timeout: Duration) -> std::io::Result<CheckReport> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let protocol = config.protocol.to_string();
    let endpoint = config.endpoint(Signal::Traces).to_string();
    let exporter = Exporter::new(config);
    let start = tokio::time::Instant::now();
    let result = runtime
        .block_on(exporter.send(&ExportRequest::Traces(Default::default()), start + timeout));
    Ok(CheckReport {
        protocol,
        endpoint,
        elapsed: start.elapsed(),
        result,
    })
}
