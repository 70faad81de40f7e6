//! Fixtures for the embedded-backend tests: the Python OTLP client (a real, separate SDK
//! process) and readers for the OTLP/JSON shapes the backend answers with.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use obsctl::otlp::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use obsctl::otlp::proto::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    metric::Data,
};
use obsctl::otlp::proto::resource::v1::Resource;

use super::{require_probe, wait_with_deadline};

/// An export of one monotonic delta counter `name` with `points`, as a step's shim sends it.
pub fn delta_counter(
    name: &str,
    resource: Option<Resource>,
    points: Vec<NumberDataPoint>,
) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource,
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: name.into(),
                    data: Some(Data::Sum(Sum {
                        data_points: points,
                        aggregation_temporality: AggregationTemporality::Delta as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The Python OTLP client can run (SDK and exporters importable); see [`super::missing`].
pub fn require_python(test: &str) -> bool {
    require_probe(
        "python3 with opentelemetry-sdk and the OTLP exporters",
        test,
        Command::new("python3").args([
            "-c",
            "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http",
        ]),
    )
}

pub fn python_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/otlp_client.py")
}

/// Runs the Python client once (one separate process) and returns the ids it printed.
pub fn run_python(args: &[&str]) -> serde_json::Value {
    let mut child = Command::new("python3")
        .arg(python_script())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let status = wait_with_deadline(&mut child, Duration::from_secs(60));
    let out = child.wait_with_output().expect("python output");
    assert!(
        status.success(),
        "python client failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python client prints JSON")
}

/// The attribute `key` of an OTLP/JSON attribute list, as its JSON value object.
pub fn attr<'a>(list: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    list.as_array()?
        .iter()
        .find(|kv| kv["key"] == key)
        .map(|kv| &kv["value"])
}

pub fn b64_to_hex(text: &str) -> String {
    use base64::Engine;
    obsctl::encode::hex(
        &base64::engine::general_purpose::STANDARD
            .decode(text)
            .expect("base64 id"),
    )
}
