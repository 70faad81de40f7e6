//! Argo Workflows, run locally: parsing Workflow YAML into typed specs, Argo's semantics for
//! steps, DAGs, loops and retries, the runners that execute a step, and the persisted run records.

pub mod expr;
pub mod load;
pub mod record;
pub mod spec;
pub mod vars;
