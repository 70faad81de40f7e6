//! The OTLP messages one step produces: its span, one delta sample of the duration histogram
//! and of each counter, and one log record per captured output line, all on one resource.

use std::time::SystemTime;

use super::child::{ChildRun, Exit, Line, Stream};
use super::context::StepContext;
use super::redact::Redactor;
use crate::conventions::{attr, metric, resource as res};
use crate::otlp::export::{ExportRequest, percent_decode};
use crate::otlp::proto::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use crate::otlp::proto::logs::v1::{LogRecord, SeverityNumber};
use crate::otlp::proto::metrics::v1::{
    AggregationTemporality, Exemplar, Histogram, HistogramDataPoint, Metric, NumberDataPoint, Sum,
    exemplar, metric::Data, number_data_point,
};
use crate::otlp::proto::resource::v1::Resource;
use crate::otlp::proto::trace::v1::{Span, Status, span, status};
use crate::otlp::{TraceContext, attrs};

/// Explicit bounds of `agent_step_duration_ms`, in milliseconds: from sub-second tool calls to
/// hour-long agent runs.
pub const DURATION_BOUNDS_MS: [f64; 18] = [
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1_000.0,
    2_500.0,
    5_000.0,
    10_000.0,
    30_000.0,
    60_000.0,
    120_000.0,
    300_000.0,
    600_000.0,
    1_800_000.0,
    3_600_000.0,
];
/// The instrumentation scope of everything the shim emits.
pub const SCOPE_NAME: &str = "obsctl.shim";
/// `process.command` longer than this is cut (it may carry a whole prompt).
const MAX_COMMAND_BYTES: usize = 4096;

/// Everything known about one finished step.
pub struct StepRecord<'a> {
    pub context: &'a StepContext,
    pub span: TraceContext,
    pub parent: Option<TraceContext>,
    pub tracestate: Option<String>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub command: String,
    pub run: &'a ChildRun,
    pub redactor: &'a Redactor,
    /// The attempt this one replaces: the span gets a link to it.
    pub replaces: Option<TraceContext>,
    /// Set when the runner records the step because the shim died first: why it did.
    pub recorded_by_runner: Option<&'a str>,
}

use crate::encode::unix_nanos as nanos;

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: SCOPE_NAME.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    }
}

/// Cuts at a character boundary at or below `max` bytes.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `service.name` (`OTEL_SERVICE_NAME`, else `OTEL_RESOURCE_ATTRIBUTES`, else `agent-steps`),
/// the `OTEL_RESOURCE_ATTRIBUTES` pairs, a per-process `service.instance.id`, and the pod
/// name and namespace when known.
pub fn resource(
    lookup: impl Fn(&str) -> Option<String>,
    instance_id: &str,
    pod_name: Option<String>,
    namespace: Option<&str>,
    redactor: &Redactor,
) -> Resource {
    use crate::conventions::env;
    let mut pairs: Vec<(String, String)> = lookup(env::OTEL_RESOURCE_ATTRIBUTES)
        .unwrap_or_default()
        .split(',')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), percent_decode(v.trim())))
        .filter(|(k, _)| !k.is_empty() && k != res::SERVICE_INSTANCE_ID)
        .collect();
    let service = lookup(env::OTEL_SERVICE_NAME)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            pairs
                .iter()
                .find(|(k, _)| k == res::SERVICE_NAME)
                .map(|(_, v)| v.clone())
        })
        .unwrap_or_else(|| res::DEFAULT_SERVICE_NAME.to_string());
    pairs.retain(|(k, _)| k != res::SERVICE_NAME);
    let mut attributes = vec![
        attrs::string(res::SERVICE_NAME, service),
        attrs::string(res::SERVICE_INSTANCE_ID, instance_id),
    ];
    for (k, v) in pairs {
        if attributes.iter().all(|a| a.key != k) {
            attributes.push(attrs::string(&k, redactor.redact_owned(&v)));
        }
    }
    for (key, value) in [
        (res::K8S_POD_NAME, pod_name),
        (res::K8S_NAMESPACE, namespace.map(str::to_string)),
    ] {
        if let Some(v) = value.filter(|v| !v.is_empty())
            && attributes.iter().all(|a| a.key != key)
        {
            attributes.push(attrs::string(key, v));
        }
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

impl StepRecord<'_> {
    fn redact(&self) -> impl Fn(&str) -> String + '_ {
        |v| self.redactor.redact_owned(v)
    }

    fn failed(&self) -> bool {
        !self.run.exit.success() || self.run.forwarded.is_some()
    }

    fn duration_ms(&self) -> f64 {
        self.end
            .duration_since(self.start)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }

    pub fn trace_request(&self, resource: &Resource) -> ExportRequest {
        let mut attributes = self.context.span_attributes(self.redact());
        attributes.push(attrs::string(
            attr::PROCESS_COMMAND,
            truncate(&self.redactor.redact(&self.command), MAX_COMMAND_BYTES),
        ));
        attributes.push(attrs::int(
            attr::PROCESS_EXIT_CODE,
            i64::from(self.run.exit.code()),
        ));
        let signal = match &self.run.exit {
            Exit::Signaled(s) => Some(*s),
            _ => self.run.forwarded,
        };
        if let Some(s) = signal {
            attributes.push(attrs::string(attr::PROCESS_SIGNAL, s.as_str()));
        }
        if self.run.logs.dropped > 0 {
            attributes.push(attrs::int(attr::LOGS_DROPPED, self.run.logs.dropped as i64));
        }
        if let Some(why) = self.recorded_by_runner {
            attributes.push(attrs::string(attr::RECORDED_BY_RUNNER, why));
        }
        let status = if self.failed() {
            let message = self.run.exit.describe().unwrap_or_else(|| {
                format!(
                    "interrupted by {}",
                    signal.map_or("a signal", |s| s.as_str())
                )
            });
            Status {
                code: status::StatusCode::Error as i32,
                message,
            }
        } else {
            Status {
                code: status::StatusCode::Ok as i32,
                message: String::new(),
            }
        };
        let span = Span {
            trace_id: self.span.trace_id.as_bytes().to_vec(),
            span_id: self.span.span_id.as_bytes().to_vec(),
            parent_span_id: self
                .parent
                .map(|p| p.span_id.as_bytes().to_vec())
                .unwrap_or_default(),
            trace_state: self.tracestate.clone().unwrap_or_default(),
            flags: 0x100 | u32::from(self.span.sampled),
            name: self.context.span_name(),
            kind: span::SpanKind::Internal as i32,
            start_time_unix_nano: nanos(self.start),
            end_time_unix_nano: nanos(self.end),
            attributes,
            status: Some(status),
            links: self
                .replaces
                .iter()
                .map(|r| span::Link {
                    trace_id: r.trace_id.as_bytes().to_vec(),
                    span_id: r.span_id.as_bytes().to_vec(),
                    flags: 0x100 | u32::from(r.sampled),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        ExportRequest::spans(resource.clone(), scope(), vec![span])
    }

    /// Delta temporality: each process reports exactly its own step, so a backend that adds
    /// deltas (or a collector's deltatocumulative) sums thousands of processes exactly.
    pub fn metrics_request(&self, resource: &Resource) -> ExportRequest {
        let outcome = if self.failed() {
            metric::OUTCOME_FAILURE
        } else {
            metric::OUTCOME_SUCCESS
        };
        let start = nanos(self.start);
        let end = nanos(self.end);
        let ms = self.duration_ms();
        let mut bucket_counts = vec![0u64; DURATION_BOUNDS_MS.len() + 1];
        let bucket = DURATION_BOUNDS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(DURATION_BOUNDS_MS.len());
        bucket_counts[bucket] = 1;
        let exemplars = if self.span.sampled {
            vec![Exemplar {
                time_unix_nano: end,
                span_id: self.span.span_id.as_bytes().to_vec(),
                trace_id: self.span.trace_id.as_bytes().to_vec(),
                value: Some(exemplar::Value::AsDouble(ms)),
                ..Default::default()
            }]
        } else {
            Vec::new()
        };
        let histogram = Metric {
            name: metric::STEP_DURATION.to_string(),
            description: "Wall time of one agent step".to_string(),
            unit: "ms".to_string(),
            data: Some(Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: self.context.labels(
                        &metric::DURATION_LABELS,
                        outcome,
                        self.redact(),
                    ),
                    start_time_unix_nano: start,
                    time_unix_nano: end,
                    count: 1,
                    sum: Some(ms),
                    bucket_counts,
                    explicit_bounds: DURATION_BOUNDS_MS.to_vec(),
                    exemplars,
                    min: Some(ms),
                    max: Some(ms),
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Delta as i32,
            })),
            ..Default::default()
        };
        let counter = |name: &str, description: &str, value: i64| Metric {
            name: name.to_string(),
            description: description.to_string(),
            data: Some(Data::Sum(Sum {
                data_points: vec![NumberDataPoint {
                    attributes: self.context.labels(
                        &metric::COUNTER_LABELS,
                        outcome,
                        self.redact(),
                    ),
                    start_time_unix_nano: start,
                    time_unix_nano: end,
                    value: Some(number_data_point::Value::AsInt(value)),
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Delta as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        };
        // Both counters are always sent (one with 0) so both series exist for ratio queries.
        let failed = self.failed();
        ExportRequest::metrics(
            resource.clone(),
            scope(),
            vec![
                histogram,
                counter(
                    metric::STEP_SUCCESS,
                    "Agent steps that succeeded",
                    i64::from(!failed),
                ),
                counter(
                    metric::STEP_FAIL,
                    "Agent steps that failed",
                    i64::from(failed),
                ),
            ],
        )
    }

    /// One record per captured line; `None` when the step printed nothing. Records carry the
    /// step's ids even when the span is not sampled (flags say so), like SDK log bridges do.
    pub fn logs_request(&self, resource: &Resource) -> Option<ExportRequest> {
        if self.run.logs.lines.is_empty() {
            return None;
        }
        let correlation = self.context.log_attributes(self.redact());
        let records = self
            .run
            .logs
            .lines
            .iter()
            .map(|line| self.log_record(line, &correlation))
            .collect();
        Some(ExportRequest::logs(resource.clone(), scope(), records))
    }

    fn log_record(&self, line: &Line, correlation: &[KeyValue]) -> LogRecord {
        let (severity, text) = match line.stream {
            Stream::Stdout => (SeverityNumber::Info, "INFO"),
            Stream::Stderr => (SeverityNumber::Warn, "WARN"),
        };
        let mut body = self
            .redactor
            .redact(&String::from_utf8_lossy(&line.bytes))
            .into_owned();
        if line.truncated > 0 {
            body.push_str(&format!(" …[truncated {} bytes]", line.truncated));
        }
        let mut attributes = correlation.to_vec();
        attributes.push(attrs::string(attr::LOG_IOSTREAM, line.stream.as_str()));
        if let Some(why) = self.recorded_by_runner {
            attributes.push(attrs::string(attr::RECORDED_BY_RUNNER, why));
        }
        let time = nanos(line.time);
        LogRecord {
            time_unix_nano: time,
            observed_time_unix_nano: time,
            severity_number: severity as i32,
            severity_text: text.to_string(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(body)),
            }),
            attributes,
            flags: u32::from(self.span.sampled),
            trace_id: self.span.trace_id.as_bytes().to_vec(),
            span_id: self.span.span_id.as_bytes().to_vec(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{SpanId, TraceId};
    use crate::shim::child::LogBuffer;
    use std::time::{Duration, UNIX_EPOCH};

    fn ctx() -> StepContext {
        StepContext::resolve(Some("clippy"), Some("verify"), &[], "true", |_| None)
    }

    fn record<'a>(
        context: &'a StepContext,
        run: &'a ChildRun,
        redactor: &'a Redactor,
        sampled: bool,
    ) -> StepRecord<'a> {
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        StepRecord {
            context,
            span: TraceContext {
                trace_id: TraceId::random(),
                span_id: SpanId::random(),
                sampled,
            },
            parent: None,
            tracestate: None,
            start,
            end: start + Duration::from_millis(42),
            command: "echo s3cretvalue".into(),
            run,
            redactor,
            replaces: None,
            recorded_by_runner: None,
        }
    }

    #[test]
    fn a_failed_step_counts_as_failure_with_an_exemplar_in_the_right_bucket() {
        let context = ctx();
        let run = ChildRun {
            exit: Exit::Code(3),
            forwarded: None,
            logs: LogBuffer::default(),
        };
        let redactor = Redactor::default();
        let rec = record(&context, &run, &redactor, true);
        let ExportRequest::Metrics(m) = rec.metrics_request(&Resource::default()) else {
            panic!()
        };
        let metrics = &m.resource_metrics[0].scope_metrics[0].metrics;
        let Some(Data::Histogram(h)) = &metrics[0].data else {
            panic!()
        };
        let p = &h.data_points[0];
        assert_eq!(p.sum, Some(42.0));
        assert_eq!(p.bucket_counts[3], 1); // 25 < 42 <= 50
        assert_eq!(p.exemplars[0].trace_id, rec.span.trace_id.as_bytes());
        assert_eq!(
            attrs::get(&p.attributes, metric::OUTCOME).unwrap(),
            "failure"
        );
        let value = |i: usize| match &metrics[i].data {
            Some(Data::Sum(s)) => {
                assert_eq!(
                    s.aggregation_temporality,
                    AggregationTemporality::Delta as i32
                );
                s.data_points[0].value
            }
            _ => panic!(),
        };
        assert_eq!(metrics[1].name, metric::STEP_SUCCESS);
        assert_eq!(value(1), Some(number_data_point::Value::AsInt(0)));
        assert_eq!(value(2), Some(number_data_point::Value::AsInt(1)));
        let ExportRequest::Traces(t) = rec.trace_request(&Resource::default()) else {
            panic!()
        };
        let span = &t.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.name, "clippy/verify");
        assert_eq!(
            span.status.as_ref().unwrap().code,
            status::StatusCode::Error as i32
        );
        assert_eq!(
            attrs::get(&span.attributes, attr::PROCESS_EXIT_CODE).unwrap(),
            "3"
        );
    }

    #[test]
    fn unsampled_steps_have_no_exemplar_and_secrets_never_leave() {
        let context = ctx();
        let run = ChildRun {
            exit: Exit::Code(0),
            forwarded: None,
            logs: LogBuffer {
                lines: vec![Line {
                    stream: Stream::Stderr,
                    time: SystemTime::now(),
                    bytes: b"token is s3cretvalue".to_vec(),
                    truncated: 0,
                }],
                ..Default::default()
            },
        };
        let redactor = Redactor::from_vars([("API_TOKEN".into(), "s3cretvalue".into())]);
        let rec = record(&context, &run, &redactor, false);
        let ExportRequest::Metrics(m) = rec.metrics_request(&Resource::default()) else {
            panic!()
        };
        let Some(Data::Histogram(h)) = &m.resource_metrics[0].scope_metrics[0].metrics[0].data
        else {
            panic!()
        };
        assert!(h.data_points[0].exemplars.is_empty());
        let all = [
            rec.trace_request(&Resource::default()),
            rec.logs_request(&Resource::default()).unwrap(),
        ];
        for r in &all {
            let json = String::from_utf8(r.encode_json()).unwrap();
            assert!(!json.contains("s3cretvalue"), "{json}");
            assert!(json.contains("[REDACTED]"), "{json}");
        }
        let ExportRequest::Logs(l) = &all[1] else {
            panic!()
        };
        let rec0 = &l.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(rec0.severity_number, SeverityNumber::Warn as i32);
        assert_eq!(rec0.span_id, rec.span.span_id.as_bytes());
    }

    #[test]
    fn resource_merges_env_with_service_name_precedence() {
        let vars = |name: &str| match name {
            "OTEL_RESOURCE_ATTRIBUTES" => Some(
                "service.name=from-attrs,deployment.environment=dev,k8s.namespace=ns%2D1".into(),
            ),
            _ => None,
        };
        let r = resource(
            vars,
            "abc",
            Some("pod-1".into()),
            Some("other"),
            &Redactor::default(),
        );
        assert_eq!(
            attrs::get(&r.attributes, res::SERVICE_NAME).unwrap(),
            "from-attrs"
        );
        assert_eq!(
            attrs::get(&r.attributes, res::SERVICE_INSTANCE_ID).unwrap(),
            "abc"
        );
        assert_eq!(
            attrs::get(&r.attributes, res::K8S_NAMESPACE).unwrap(),
            "ns-1"
        );
        assert_eq!(
            attrs::get(&r.attributes, res::K8S_POD_NAME).unwrap(),
            "pod-1"
        );
        let with_name = |name: &str| match name {
            "OTEL_SERVICE_NAME" => Some("svc".into()),
            _ => None,
        };
        let r = resource(with_name, "abc", None, None, &Redactor::default());
        assert_eq!(attrs::get(&r.attributes, res::SERVICE_NAME).unwrap(), "svc");
    }
}
