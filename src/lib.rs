//! obsctl: makes every step of an Argo-run AI-agent pipeline observable with OpenTelemetry,
//! and proves it. `docs/architecture.md` maps these modules and the data flowing between them.

pub mod argo;
pub mod backends;
pub mod chaos;
pub mod checks;
pub mod commands;
pub mod conventions;
pub mod defect;
pub mod demo;
pub mod embedded;
pub mod encode;
pub mod otlp;
pub mod paths;
pub mod report;
pub mod secret;
pub mod shim;
pub mod stack;
pub mod tls;
pub mod ui;
pub mod workflow;
