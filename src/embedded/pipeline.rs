//! One ingest path for both transports: validate, store in one transaction, then report what
//! was rejected. The store runs on the blocking pool; the answer is sent only after commit. A
//! relay ([`super::relay`]) takes the same path but hands each request on unchanged, answering
//! only after the next hop accepted it.

use std::sync::Arc;

use crate::otlp::proto::collector::logs::v1::ExportLogsServiceRequest;
use crate::otlp::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use crate::otlp::proto::collector::trace::v1::ExportTraceServiceRequest;

use super::ingest::{self, Rejections};
use super::relay::Routes;
use super::store::{Store, StoreError};
use crate::otlp::export::{ExportError, ExportRequest};

/// Where received OTLP goes: into the store, or on to the next hop.
#[derive(Clone)]
pub enum Sink {
    Store(Arc<Store>),
    Relay(Arc<Routes>),
}

/// Items rejected from an otherwise stored request (OTLP partial success).
#[derive(Debug, Default)]
pub struct Outcome {
    pub rejected: i64,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
    #[error("storage task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("not forwarded: {0}")]
    Forward(#[from] ExportError),
}

/// `-v` on `obsctl serve`: one line per stored request.
fn said(signal: &str, items: usize, rejections: &Rejections) {
    crate::ui::debug(
        1,
        format!(
            "serve: stored {} {signal}, rejected {}",
            items as i64 - rejections.count,
            rejections.count
        ),
    );
}

fn outcome(rejections: Rejections, problems: &[String]) -> Outcome {
    Outcome {
        rejected: rejections.count,
        message: if rejections.count > 0 {
            rejections.message(problems)
        } else {
            String::new()
        },
    }
}

pub async fn traces(
    sink: &Sink,
    mut request: ExportTraceServiceRequest,
    problems: Vec<String>,
) -> Result<Outcome, IngestError> {
    let store = match sink {
        Sink::Store(store) => store,
        Sink::Relay(routes) => return forward(routes, ExportRequest::Traces(request)).await,
    };
    let items = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    let rejections = ingest::validate_spans(&mut request);
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.insert_spans(&request.resource_spans)).await??;
    said("span(s)", items, &rejections);
    Ok(outcome(rejections, &problems))
}

pub async fn logs(
    sink: &Sink,
    mut request: ExportLogsServiceRequest,
    problems: Vec<String>,
) -> Result<Outcome, IngestError> {
    let store = match sink {
        Sink::Store(store) => store,
        Sink::Relay(routes) => return forward(routes, ExportRequest::Logs(request)).await,
    };
    let items = request
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum();
    let rejections = ingest::validate_logs(&mut request);
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.insert_logs(&request.resource_logs)).await??;
    said("log record(s)", items, &rejections);
    Ok(outcome(rejections, &problems))
}

pub async fn metrics(
    sink: &Sink,
    request: ExportMetricsServiceRequest,
    problems: Vec<String>,
) -> Result<Outcome, IngestError> {
    let store = match sink {
        Sink::Store(store) => store,
        Sink::Relay(routes) => return forward(routes, ExportRequest::Metrics(request)).await,
    };
    let (points, mut rejections) = ingest::metric_points(&request);
    let items = points.len() + rejections.count as usize;
    let store = store.clone();
    let refused = tokio::task::spawn_blocking(move || store.apply_metrics(&points)).await??;
    rejections.count += refused.len() as i64;
    rejections.reasons.extend(refused);
    said("metric point(s)", items, &rejections);
    Ok(outcome(rejections, &problems))
}

/// Hands `request` to the next hop of its signal; the sender hears success only once that hop
/// accepted it (nothing is queued here), and a retryable failure otherwise.
async fn forward(routes: &Routes, request: ExportRequest) -> Result<Outcome, IngestError> {
    routes.send(&request).await?;
    Ok(Outcome::default())
}
