//! OpenTelemetry protocol pieces shared by the shim, the embedded backend and the clients:
//! trace and span ids as newtypes, W3C trace context, and attribute helpers over the OTLP types.

pub mod attrs;
pub mod export;
pub mod ids;
pub mod spool;

pub use ids::{IdError, SpanId, TraceContext, TraceId};
/// The generated OTLP message types (protobuf with serde for OTLP/JSON), re-exported so that
/// the rest of obsctl names one crate path.
pub use opentelemetry_proto::tonic as proto;
