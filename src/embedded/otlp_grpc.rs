//! OTLP over gRPC: the three collector services on tonic, gzip accepted, message size capped
//! (tonic answers `ResourceExhausted` above it). The services are written out here rather than
//! taken from the generated servers because those answer a malformed message with `Internal`;
//! the OTLP specification asks for `InvalidArgument`, which a client must not retry.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use prost::Message;
use prost::bytes::{Buf, BufMut};
use tonic::body::Body;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::codegen::http;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::otlp::proto::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use crate::otlp::proto::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use crate::otlp::proto::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use super::ingest::MAX_BODY_BYTES;
use super::pipeline::{self, Outcome, Sink};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One OTLP signal: its gRPC service name, messages, and how a request is ingested.
pub trait Signal: Send + Sync + 'static {
    const SERVICE: &'static str;
    type Request: Message + Default + Send + 'static;
    type Response: Message + Send + 'static;
    fn ingest(sink: Sink, request: Self::Request) -> BoxFuture<Result<Self::Response, Status>>;
}

fn partial<T>(outcome: Outcome, make: impl FnOnce(i64, String) -> T) -> Option<T> {
    (outcome.rejected > 0).then(|| make(outcome.rejected, outcome.message))
}

pub struct Traces;
pub struct Metrics;
pub struct Logs;

impl Signal for Traces {
    const SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    type Request = ExportTraceServiceRequest;
    type Response = ExportTraceServiceResponse;
    fn ingest(sink: Sink, request: Self::Request) -> BoxFuture<Result<Self::Response, Status>> {
        Box::pin(async move {
            let outcome = pipeline::traces(&sink, request, Vec::new())
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            Ok(ExportTraceServiceResponse {
                partial_success: partial(outcome, |rejected_spans, error_message| {
                    ExportTracePartialSuccess {
                        rejected_spans,
                        error_message,
                    }
                }),
            })
        })
    }
}

impl Signal for Metrics {
    const SERVICE: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    type Request = ExportMetricsServiceRequest;
    type Response = ExportMetricsServiceResponse;
    fn ingest(sink: Sink, request: Self::Request) -> BoxFuture<Result<Self::Response, Status>> {
        Box::pin(async move {
            let outcome = pipeline::metrics(&sink, request, Vec::new())
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            Ok(ExportMetricsServiceResponse {
                partial_success: partial(outcome, |rejected_data_points, error_message| {
                    ExportMetricsPartialSuccess {
                        rejected_data_points,
                        error_message,
                    }
                }),
            })
        })
    }
}

impl Signal for Logs {
    const SERVICE: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    type Request = ExportLogsServiceRequest;
    type Response = ExportLogsServiceResponse;
    fn ingest(sink: Sink, request: Self::Request) -> BoxFuture<Result<Self::Response, Status>> {
        Box::pin(async move {
            let outcome = pipeline::logs(&sink, request, Vec::new())
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            Ok(ExportLogsServiceResponse {
                partial_success: partial(outcome, |rejected_log_records, error_message| {
                    ExportLogsPartialSuccess {
                        rejected_log_records,
                        error_message,
                    }
                }),
            })
        })
    }
}

/// Encodes responses with prost; hands request bytes through undecoded.
struct OtlpCodec<R>(PhantomData<R>);

impl<R: Message + Send + 'static> Codec for OtlpCodec<R> {
    type Encode = R;
    type Decode = Vec<u8>;
    type Encoder = OtlpCodec<R>;
    type Decoder = OtlpCodec<R>;
    fn encoder(&mut self) -> Self::Encoder {
        OtlpCodec(PhantomData)
    }
    fn decoder(&mut self) -> Self::Decoder {
        OtlpCodec(PhantomData)
    }
}

impl<R: Message> Encoder for OtlpCodec<R> {
    type Item = R;
    type Error = Status;
    fn encode(&mut self, item: R, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode the response: {e}")))
    }
}

impl<R> Decoder for OtlpCodec<R> {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = Vec::with_capacity(src.remaining());
        out.put(src);
        Ok(Some(out))
    }
}

struct Export<S>(Sink, PhantomData<S>);

impl<S: Signal> UnaryService<Vec<u8>> for Export<S> {
    type Response = S::Response;
    type Future = BoxFuture<Result<Response<S::Response>, Status>>;
    fn call(&mut self, request: Request<Vec<u8>>) -> Self::Future {
        let sink = self.0.clone();
        Box::pin(async move {
            let message = S::Request::decode(request.into_inner().as_slice())
                .map_err(|e| Status::invalid_argument(format!("invalid protobuf: {e}")))?;
            S::ingest(sink, message).await.map(Response::new)
        })
    }
}

/// One OTLP gRPC service (`/<SERVICE>/Export`).
pub struct OtlpService<S> {
    sink: Sink,
    signal: PhantomData<S>,
}

impl<S> Clone for OtlpService<S> {
    fn clone(&self) -> Self {
        Self {
            sink: self.sink.clone(),
            signal: PhantomData,
        }
    }
}

impl<S: Signal> NamedService for OtlpService<S> {
    const NAME: &'static str = S::SERVICE;
}

impl<S, B> tonic::codegen::Service<http::Request<B>> for OtlpService<S>
where
    S: Signal,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let sink = self.sink.clone();
        let is_export = req
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(S::SERVICE))
            == Some("/Export");
        Box::pin(async move {
            if !is_export {
                return Ok(Status::unimplemented("only Export is served").into_http());
            }
            let mut gzip = EnabledCompressionEncodings::default();
            gzip.enable(CompressionEncoding::Gzip);
            let mut grpc = Grpc::new(OtlpCodec::<S::Response>(PhantomData))
                .apply_compression_config(gzip, gzip)
                .apply_max_message_size_config(Some(MAX_BODY_BYTES), None);
            let mut response = grpc.unary(Export::<S>(sink, PhantomData), req).await;
            // tonic reports a message over the size limit as OutOfRange; OTLP clients expect
            // ResourceExhausted. Nothing else here produces OutOfRange.
            let headers = response.headers_mut();
            if headers.get(Status::GRPC_STATUS).is_some_and(|v| v == "11") {
                headers.insert(
                    Status::GRPC_STATUS,
                    (tonic::Code::ResourceExhausted as i32).into(),
                );
            }
            Ok(response)
        })
    }
}

/// The gRPC router with all three services.
pub fn router(sink: Sink, timeout: std::time::Duration) -> tonic::transport::server::Router {
    tonic::transport::Server::builder()
        .timeout(timeout)
        .add_service(OtlpService::<Traces> {
            sink: sink.clone(),
            signal: PhantomData,
        })
        .add_service(OtlpService::<Metrics> {
            sink: sink.clone(),
            signal: PhantomData,
        })
        .add_service(OtlpService::<Logs> {
            sink,
            signal: PhantomData,
        })
}
