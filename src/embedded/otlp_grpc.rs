//! OTLP over gRPC: the three collector services on tonic, with gzip accepted and the decoded
//! message size capped (larger requests get `ResourceExhausted` from tonic itself).

use std::sync::Arc;

use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use crate::otlp::proto::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use crate::otlp::proto::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use crate::otlp::proto::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use crate::otlp::proto::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use crate::otlp::proto::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use crate::otlp::proto::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use super::ingest::MAX_BODY_BYTES;
use super::pipeline::{self, IngestError, Outcome};
use super::store::Store;

#[derive(Clone)]
pub struct Otlp {
    store: Arc<Store>,
}

fn unavailable(err: IngestError) -> Status {
    Status::unavailable(err.to_string())
}

fn partial<T>(outcome: Outcome, make: impl FnOnce(i64, String) -> T) -> Option<T> {
    (outcome.rejected > 0).then(|| make(outcome.rejected, outcome.message))
}

#[tonic::async_trait]
impl TraceService for Otlp {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let outcome = pipeline::traces(&self.store, request.into_inner(), Vec::new())
            .await
            .map_err(unavailable)?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: partial(outcome, |rejected_spans, error_message| {
                ExportTracePartialSuccess {
                    rejected_spans,
                    error_message,
                }
            }),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for Otlp {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let outcome = pipeline::logs(&self.store, request.into_inner(), Vec::new())
            .await
            .map_err(unavailable)?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: partial(outcome, |rejected_log_records, error_message| {
                ExportLogsPartialSuccess {
                    rejected_log_records,
                    error_message,
                }
            }),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Otlp {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let outcome = pipeline::metrics(&self.store, request.into_inner(), Vec::new())
            .await
            .map_err(unavailable)?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: partial(outcome, |rejected_data_points, error_message| {
                ExportMetricsPartialSuccess {
                    rejected_data_points,
                    error_message,
                }
            }),
        }))
    }
}

/// The gRPC router with all three services.
pub fn router(store: Arc<Store>) -> tonic::transport::server::Router {
    let otlp = Otlp { store };
    tonic::transport::Server::builder()
        .add_service(
            TraceServiceServer::new(otlp.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(MAX_BODY_BYTES),
        )
        .add_service(
            MetricsServiceServer::new(otlp.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(MAX_BODY_BYTES),
        )
        .add_service(
            LogsServiceServer::new(otlp)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(MAX_BODY_BYTES),
        )
}
