//! Argo Workflows, run locally: parsing Workflow YAML into typed specs, Argo's semantics for
//! steps, DAGs, loops and retries, the runners that execute a step, and the persisted run records.

pub mod clock;
pub mod engine;
pub mod expr;
pub mod expression;
pub mod load;
pub mod record;
pub mod runner;
pub mod spec;
pub mod telemetry;
pub mod vars;
