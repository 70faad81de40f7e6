//! Real Argo: `instrument` makes a workflow observable for a cluster (the shim copied into every
//! pod, the OTEL environment, labels and annotations). See `docs/argo.md`.

pub mod instrument;
