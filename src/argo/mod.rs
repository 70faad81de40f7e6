//! Real Argo: `instrument` makes a workflow observable for a cluster (the shim copied into every
//! pod, the OTEL environment, labels and annotations). See `docs/argo.md`.

pub mod client;
pub mod instrument;
pub mod remote;

use crate::otlp::{SpanId, TraceId};

/// The span id of the step that ran as node `node_id` in the trace `trace_id`: FNV-1a 64 of
/// both, never zero. The shim uses it when `OBSCTL_SPAN_ID_FROM=node` (set by `instrument` for
/// `obsctl run --argo-server`), so the run's record names each step's span without reading the
/// pod's log. Argo gives every retry its own node, so ids stay unique within a trace.
pub fn node_span_id(trace_id: TraceId, node_id: &str) -> SpanId {
    let hash = crate::encode::fnv64a(
        trace_id
            .as_bytes()
            .iter()
            .chain(node_id.as_bytes())
            .copied(),
    );
    SpanId::from_bytes(hash.max(1).to_be_bytes())
}
