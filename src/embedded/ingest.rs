//! The ingest edge shared by OTLP/gRPC and OTLP/HTTP: decoding (protobuf, OTLP/JSON, gzip with
//! a size cap), per-item validation with partial success, and the conversion of metric data
//! points into Prometheus-named points.

use crate::encode::hex;
use std::collections::BTreeMap;
use std::io::Read;

use prost::Message;
use serde_json::Value as Json;

use crate::otlp::proto::collector::logs::v1::ExportLogsServiceRequest;
use crate::otlp::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use crate::otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use crate::otlp::proto::common::v1::KeyValue;
use crate::otlp::proto::metrics::v1::{
    AggregationTemporality, Metric, exemplar, metric::Data, number_data_point,
};
use crate::otlp::{SpanId, TraceId, attrs};

use super::metrics::{Exemplar, Kind, MetricPoint, Temporality, Value, sanitize_name};

/// Largest accepted request body, compressed or decompressed.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("request body exceeds the {MAX_BODY_BYTES}-byte limit")]
    TooLarge,
    #[error("invalid gzip body: {0}")]
    Gzip(String),
    #[error("invalid protobuf: {0}")]
    Protobuf(String),
    #[error("invalid OTLP/JSON: {0}")]
    Json(String),
}

/// Which wire encoding a request used; the response uses the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

/// Inflates a gzip body, refusing to produce more than [`MAX_BODY_BYTES`].
pub fn gunzip(body: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(MAX_BODY_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Gzip(e.to_string()))?;
    if out.len() > MAX_BODY_BYTES {
        return Err(DecodeError::TooLarge);
    }
    Ok(out)
}

/// Id fields of OTLP/JSON, hex-encoded.
const ID_FIELDS: [&str; 3] = ["traceId", "spanId", "parentSpanId"];

/// The OTLP/JSON mapping says ids are hex, case-insensitive. The generated serde decoder takes
/// lowercase only and fails the whole request on one bad id, so ids are normalised here and an
/// invalid one is replaced by a one-byte id that per-item validation then rejects, with the
/// reason remembered for the partial-success message.
fn normalise_ids(value: &mut Json, problems: &mut Vec<String>) {
    match value {
        Json::Object(map) => {
            for (key, v) in map.iter_mut() {
                if ID_FIELDS.contains(&key.as_str())
                    && let Json::String(s) = v
                {
                    let ok = s.len() % 2 == 0 && s.bytes().all(|b| b.is_ascii_hexdigit());
                    if ok {
                        s.make_ascii_lowercase();
                    } else {
                        problems.push(format!("{key} {s:?} is not hex"));
                        *s = "00".into();
                    }
                } else {
                    normalise_ids(v, problems);
                }
            }
        }
        Json::Array(items) => items.iter_mut().for_each(|v| normalise_ids(v, problems)),
        _ => {}
    }
}

/// A decoded export request plus the id problems found while decoding OTLP/JSON.
pub struct Decoded<T> {
    pub request: T,
    pub problems: Vec<String>,
}

pub fn decode<T>(body: &[u8], encoding: Encoding) -> Result<Decoded<T>, DecodeError>
where
    T: Message + Default + serde::de::DeserializeOwned,
{
    match encoding {
        Encoding::Protobuf => T::decode(body)
            .map(|request| Decoded {
                request,
                problems: Vec::new(),
            })
            .map_err(|e| DecodeError::Protobuf(e.to_string())),
        Encoding::Json => {
            let mut json: Json =
                serde_json::from_slice(body).map_err(|e| DecodeError::Json(e.to_string()))?;
            if !json.is_object() {
                return Err(DecodeError::Json("expected a JSON object".into()));
            }
            let mut problems = Vec::new();
            normalise_ids(&mut json, &mut problems);
            serde_json::from_value(json)
                .map(|request| Decoded { request, problems })
                .map_err(|e| DecodeError::Json(e.to_string()))
        }
    }
}

/// How many items of a request were rejected, and why (the partial-success message).
#[derive(Debug, Default, PartialEq)]
pub struct Rejections {
    pub count: i64,
    pub reasons: Vec<String>,
}

impl Rejections {
    fn reject(&mut self, reason: String) {
        self.count += 1;
        if self.reasons.len() < 10 {
            self.reasons.push(reason);
        }
    }

    pub fn message(&self, problems: &[String]) -> String {
        let mut all: Vec<&str> = problems.iter().map(String::as_str).collect();
        all.extend(self.reasons.iter().map(String::as_str));
        all.join("; ")
    }
}

fn trace_id_ok(id: &[u8]) -> bool {
    TraceId::from_slice(id).is_ok_and(|t| t.as_bytes() != &[0; 16])
}

fn span_id_ok(id: &[u8]) -> bool {
    SpanId::from_slice(id).is_ok_and(|s| s.as_bytes() != &[0; 8])
}

/// Drops spans with invalid ids (wrong length, all zero) and reports them.
pub fn validate_spans(request: &mut ExportTraceServiceRequest) -> Rejections {
    let mut rejections = Rejections::default();
    for rs in &mut request.resource_spans {
        for ss in &mut rs.scope_spans {
            ss.spans.retain(|span| {
                let problem = if !trace_id_ok(&span.trace_id) {
                    Some(format!(
                        "trace id {:?} is not 16 non-zero bytes",
                        hex(&span.trace_id)
                    ))
                } else if !span_id_ok(&span.span_id) {
                    Some(format!(
                        "span id {:?} is not 8 non-zero bytes",
                        hex(&span.span_id)
                    ))
                } else if !span.parent_span_id.is_empty() && !span_id_ok(&span.parent_span_id) {
                    Some(format!(
                        "parent span id {:?} is not 8 non-zero bytes",
                        hex(&span.parent_span_id)
                    ))
                } else {
                    None
                };
                match problem {
                    Some(p) => {
                        rejections.reject(format!("span {:?}: {p}", span.name));
                        false
                    }
                    None => true,
                }
            });
        }
    }
    rejections
}

/// Drops log records whose optional ids are present but invalid.
pub fn validate_logs(request: &mut ExportLogsServiceRequest) -> Rejections {
    let mut rejections = Rejections::default();
    for rl in &mut request.resource_logs {
        for sl in &mut rl.scope_logs {
            sl.log_records.retain(|record| {
                let problem = if !record.trace_id.is_empty() && !trace_id_ok(&record.trace_id) {
                    Some(format!(
                        "trace id {:?} is not 16 bytes",
                        hex(&record.trace_id)
                    ))
                } else if !record.span_id.is_empty() && !span_id_ok(&record.span_id) {
                    Some(format!("span id {:?} is not 8 bytes", hex(&record.span_id)))
                } else {
                    None
                };
                match problem {
                    Some(p) => {
                        rejections.reject(format!("log record: {p}"));
                        false
                    }
                    None => true,
                }
            });
        }
    }
    rejections
}

fn labels_of(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    for kv in attributes {
        let Some(value) = kv.value.as_ref().and_then(attrs::value_to_string) else {
            continue;
        };
        // Keys that collide after sanitising are joined with `;`, as the collector does.
        labels
            .entry(sanitize_name(&kv.key, false))
            .and_modify(|v| {
                v.push(';');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    labels
}

/// A 128-bit FNV-style hash of `parts`: a stream's identity, and a log record's (`identity`).
pub(super) fn stream_hash(parts: &[&[u8]]) -> [u8; 16] {
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x6c62_272e_07bb_0142;
    for part in parts {
        for &byte in part.iter().chain(&[0xff]) {
            a = (a ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            b = (b ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3 ^ 0x5bd1_e995);
        }
    }
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&b.to_le_bytes());
    out
}

fn exemplars_of(
    raw: &[crate::otlp::proto::metrics::v1::Exemplar],
) -> Result<Vec<Exemplar>, String> {
    raw.iter()
        .map(|e| {
            let trace_id = (!e.trace_id.is_empty())
                .then(|| TraceId::from_slice(&e.trace_id))
                .transpose()
                .map_err(|_| format!("exemplar trace id {:?} is not 16 bytes", hex(&e.trace_id)))?;
            let span_id = (!e.span_id.is_empty())
                .then(|| SpanId::from_slice(&e.span_id))
                .transpose()
                .map_err(|_| format!("exemplar span id {:?} is not 8 bytes", hex(&e.span_id)))?;
            let value = match e.value {
                Some(exemplar::Value::AsDouble(d)) => d,
                Some(exemplar::Value::AsInt(i)) => i as f64,
                None => 0.0,
            };
            Ok(Exemplar {
                trace_id,
                span_id,
                value,
                time_ns: e.time_unix_nano,
            })
        })
        .collect()
}

fn temporality(raw: i32) -> Option<Temporality> {
    match AggregationTemporality::try_from(raw).ok()? {
        AggregationTemporality::Delta => Some(Temporality::Delta),
        AggregationTemporality::Cumulative => Some(Temporality::Cumulative),
        AggregationTemporality::Unspecified => None,
    }
}

/// Resource attributes that become labels of every point: bounded by how many environments
/// exist, and what the dashboard filters on. Every other resource attribute (above all the
/// per-process `service.instance.id`) stays out, so a series never multiplies by processes.
pub const RESOURCE_LABELS: [&str; 1] = [crate::conventions::resource::DEPLOYMENT_ENVIRONMENT];

/// Converts every data point into a [`MetricPoint`]; points of unsupported types or with
/// invalid exemplar ids are rejected.
pub fn metric_points(request: &ExportMetricsServiceRequest) -> (Vec<MetricPoint>, Rejections) {
    let mut points = Vec::new();
    let mut rejections = Rejections::default();
    for rm in &request.resource_metrics {
        let resource = rm
            .resource
            .as_ref()
            .map(|r| r.attributes.encode_to_vec_kv())
            .unwrap_or_default();
        let promoted: Vec<KeyValue> = rm
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .filter(|kv| RESOURCE_LABELS.contains(&kv.key.as_str()))
            .cloned()
            .collect();
        let resource = (resource.as_slice(), promoted.as_slice());
        for sm in &rm.scope_metrics {
            let scope = sm
                .scope
                .as_ref()
                .map(|s| format!("{}@{}", s.name, s.version))
                .unwrap_or_default();
            for metric in &sm.metrics {
                convert_metric(metric, resource, &scope, &mut points, &mut rejections);
            }
        }
    }
    (points, rejections)
}

trait EncodeKv {
    fn encode_to_vec_kv(&self) -> Vec<u8>;
}

impl EncodeKv for Vec<KeyValue> {
    /// A canonical byte form of an attribute set (sorted by key), for stream identity.
    fn encode_to_vec_kv(&self) -> Vec<u8> {
        let mut sorted: Vec<&KeyValue> = self.iter().collect();
        sorted.sort_by(|a, b| a.key.cmp(&b.key));
        sorted.iter().flat_map(|kv| kv.encode_to_vec()).collect()
    }
}

fn convert_metric(
    metric: &Metric,
    (resource, promoted): (&[u8], &[KeyValue]),
    scope: &str,
    points: &mut Vec<MetricPoint>,
    rejections: &mut Rejections,
) {
    let name = sanitize_name(&metric.name, true);
    let make = |attributes: &Vec<KeyValue>,
                kind: Kind,
                temporality: Temporality,
                monotonic: bool,
                start_ns: u64,
                time_ns: u64,
                value: Value,
                exemplars: &[crate::otlp::proto::metrics::v1::Exemplar]| {
        let exemplars = exemplars_of(exemplars)
            .map_err(|reason| format!("metric {:?}: {reason}", metric.name))?;
        let stream = stream_hash(&[
            resource,
            scope.as_bytes(),
            metric.name.as_bytes(),
            &attributes.encode_to_vec_kv(),
        ]);
        let mut labels = labels_of(promoted);
        // A point attribute of the same name wins over the resource's.
        labels.extend(labels_of(attributes));
        Ok(MetricPoint {
            name: name.clone(),
            kind,
            help: metric.description.clone(),
            labels,
            temporality,
            stream,
            start_ns,
            time_ns,
            value,
            exemplars,
            monotonic,
        })
    };
    let mut keep = |made: Result<MetricPoint, String>| match made {
        Ok(point) => points.push(point),
        Err(reason) => rejections.reject(reason),
    };
    let number = |v: &Option<number_data_point::Value>| match v {
        Some(number_data_point::Value::AsDouble(d)) => *d,
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        None => 0.0,
    };
    match &metric.data {
        Some(Data::Sum(sum)) => {
            let Some(temporality) = temporality(sum.aggregation_temporality) else {
                rejections.count += sum.data_points.len() as i64;
                rejections.reasons.push(format!(
                    "metric {:?}: sum without aggregation temporality",
                    metric.name
                ));
                return;
            };
            let kind = if sum.is_monotonic {
                Kind::Counter
            } else {
                Kind::Gauge
            };
            for p in &sum.data_points {
                keep(make(
                    &p.attributes,
                    kind,
                    temporality,
                    sum.is_monotonic,
                    p.start_time_unix_nano,
                    p.time_unix_nano,
                    Value::Number(number(&p.value)),
                    &p.exemplars,
                ));
            }
        }
        Some(Data::Gauge(gauge)) => {
            for p in &gauge.data_points {
                keep(make(
                    &p.attributes,
                    Kind::Gauge,
                    Temporality::Last,
                    false,
                    p.start_time_unix_nano,
                    p.time_unix_nano,
                    Value::Number(number(&p.value)),
                    &p.exemplars,
                ));
            }
        }
        Some(Data::Histogram(h)) => {
            let Some(temporality) = temporality(h.aggregation_temporality) else {
                rejections.count += h.data_points.len() as i64;
                rejections.reasons.push(format!(
                    "metric {:?}: histogram without aggregation temporality",
                    metric.name
                ));
                return;
            };
            for p in &h.data_points {
                let buckets = if p.bucket_counts.is_empty() {
                    // Count and sum only: everything lands in +Inf.
                    let mut b = vec![0; p.explicit_bounds.len() + 1];
                    *b.last_mut().expect("len >= 1") = p.count;
                    b
                } else if p.bucket_counts.len() == p.explicit_bounds.len() + 1 {
                    p.bucket_counts.clone()
                } else {
                    keep(Err(format!(
                        "metric {:?}: {} bucket counts for {} bounds (expected bounds + 1)",
                        metric.name,
                        p.bucket_counts.len(),
                        p.explicit_bounds.len()
                    )));
                    continue;
                };
                keep(make(
                    &p.attributes,
                    Kind::Histogram,
                    temporality,
                    true,
                    p.start_time_unix_nano,
                    p.time_unix_nano,
                    Value::Histogram {
                        count: p.count,
                        sum: p.sum.unwrap_or(0.0),
                        bounds: p.explicit_bounds.clone(),
                        buckets,
                    },
                    &p.exemplars,
                ));
            }
        }
        Some(Data::ExponentialHistogram(h)) => {
            rejections.count += h.data_points.len() as i64;
            rejections.reasons.push(format!(
                "metric {:?}: exponential histograms are not supported by the embedded backend",
                metric.name
            ));
        }
        Some(Data::Summary(s)) => {
            rejections.count += s.data_points.len() as i64;
            rejections.reasons.push(format!(
                "metric {:?}: summaries are not supported by the embedded backend",
                metric.name
            ));
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_ids_are_case_insensitive_and_ints_may_be_numbers() {
        let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[
            {"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
             "name":"a","kind":1,"startTimeUnixNano":1700000000000000000,"endTimeUnixNano":"1700000000000000001",
             "attributes":[{"key":"n","value":{"intValue":5}}]},
            {"traceId":"xyz","spanId":"eee19b7ec3c1b174","name":"bad"}]}]}]}"#;
        let mut decoded =
            decode::<ExportTraceServiceRequest>(body, Encoding::Json).expect("decodes");
        assert_eq!(
            decoded.problems,
            vec!["traceId \"xyz\" is not hex".to_string()]
        );
        let rejected = validate_spans(&mut decoded.request);
        assert_eq!(rejected.count, 1);
        let spans = &decoded.request.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 1);
        assert_eq!(hex(&spans[0].trace_id), "5b8efff798038103d269b633813fc60c");
        assert_eq!(spans[0].start_time_unix_nano, 1_700_000_000_000_000_000);
    }

    #[test]
    fn gzip_bombs_are_refused() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![0u8; MAX_BODY_BYTES + 10]).unwrap();
        let body = enc.finish().unwrap();
        assert!(body.len() < 100_000);
        assert_eq!(gunzip(&body), Err(DecodeError::TooLarge));
    }
}
