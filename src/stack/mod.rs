//! The observability stack obsctl runs: the real one (Collector, Tempo, Prometheus, Loki,
//! Grafana in Docker) or the embedded backend, and the endpoints file that tells other commands
//! which one is up and where.

pub mod background;
pub mod config;
pub mod definition;
pub mod docker;
pub mod endpoints;
pub mod files;
pub mod pins;
pub mod ports;
pub mod ready;
pub mod runtime;
