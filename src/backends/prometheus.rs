//! Prometheus's HTTP API: instant queries (`/api/v1/query`, vector or scalar results) and
//! exemplar queries (`/api/v1/query_exemplars`). Exemplar trace ids come under `trace_id`
//! (OTLP, OpenMetrics) or `traceID` (Tempo's metrics generator); both are read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{BackendError, Http, base_url, string_map};
use crate::otlp::{SpanId, TraceId};

const BACKEND: &str = "Prometheus";

#[derive(Debug, Clone)]
pub struct PrometheusClient {
    base: String,
    http: Http,
}

/// One series of an instant vector and its value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    /// Unix seconds of the sample.
    pub timestamp: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exemplar {
    pub series_labels: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub timestamp: f64,
}

impl Exemplar {
    /// The trace id under either label name; Tempo's generator may trim leading zeros.
    pub fn trace_id(&self) -> Option<TraceId> {
        let text = self
            .labels
            .get("trace_id")
            .or_else(|| self.labels.get("traceID"))?;
        TraceId::from_trimmed_hex(text).ok()
    }

    pub fn span_id(&self) -> Option<SpanId> {
        let text = self
            .labels
            .get("span_id")
            .or_else(|| self.labels.get("spanID"))?;
        SpanId::from_trimmed_hex(text).ok()
    }
}

impl PrometheusClient {
    pub fn new(base: &str, http: Http) -> Result<Self, BackendError> {
        Ok(Self {
            base: base_url(BACKEND, base)?,
            http,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// An instant query at `time` (unix seconds; now when `None`). A scalar result comes back
    /// as one sample without labels.
    pub async fn query(&self, expr: &str, time: Option<f64>) -> Result<Vec<Sample>, BackendError> {
        let mut params = vec![("query", expr.to_string())];
        if let Some(t) = time {
            params.push(("time", format!("{t:.3}")));
        }
        let data: QueryData = self.api("/api/v1/query", expr, &params).await?;
        Ok(match data {
            QueryData::Vector(series) => series
                .into_iter()
                .map(|s| Sample {
                    labels: s.metric,
                    value: s.value.1.0,
                    timestamp: s.value.0,
                })
                .collect(),
            QueryData::Scalar((timestamp, value)) => vec![Sample {
                labels: BTreeMap::new(),
                value: value.0,
                timestamp,
            }],
        })
    }

    /// Exemplars of the series `expr` selects, between `start` and `end` (unix seconds).
    pub async fn query_exemplars(
        &self,
        expr: &str,
        start: f64,
        end: f64,
    ) -> Result<Vec<Exemplar>, BackendError> {
        let params = [
            ("query", expr.to_string()),
            ("start", format!("{start:.3}")),
            ("end", format!("{end:.3}")),
        ];
        let data: Vec<ExemplarSeries> = self.api("/api/v1/query_exemplars", expr, &params).await?;
        Ok(data
            .into_iter()
            .flat_map(|series| {
                let series_labels = series.series_labels;
                series.exemplars.into_iter().map(move |e| Exemplar {
                    series_labels: series_labels.clone(),
                    labels: e.labels,
                    value: e.value.0,
                    timestamp: e.timestamp,
                })
            })
            .collect())
    }

    /// `/api/v1/*` calls share one envelope: `status` plus `data`, or `errorType` and `error`,
    /// which Prometheus also sends with HTTP 400 and 422.
    async fn api<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        expr: &str,
        params: &[(&str, String)],
    ) -> Result<T, BackendError> {
        let url = format!("{}{path}", self.base);
        let fetched = self.http.get(BACKEND, &url, params, &[]).await?;
        let envelope: Envelope<T> = match fetched.decode(BACKEND) {
            Ok(envelope) => envelope,
            Err(_) if !fetched.is_success() => return Err(fetched.status_error(BACKEND)),
            Err(e) => return Err(e),
        };
        match (envelope.status.as_str(), envelope.data) {
            ("success", Some(data)) => Ok(data),
            ("success", None) => Err(BackendError::Shape {
                backend: BACKEND,
                url: super::redact(&url),
                reason: "status success without data".into(),
            }),
            _ => Err(BackendError::Query {
                backend: BACKEND,
                query: expr.to_string(),
                message: format!(
                    "{}: {}",
                    envelope.error_type.unwrap_or_else(|| "error".into()),
                    envelope.error.unwrap_or_default()
                ),
            }),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<T> {
    status: String,
    #[serde(default = "Option::default")]
    data: Option<T>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum QueryData {
    Vector(Vec<VectorSeries>),
    Scalar((f64, Number)),
}

#[derive(Deserialize)]
struct VectorSeries {
    #[serde(default, deserialize_with = "string_map")]
    metric: BTreeMap<String, String>,
    value: (f64, Number),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExemplarSeries {
    #[serde(default, deserialize_with = "string_map")]
    series_labels: BTreeMap<String, String>,
    #[serde(default)]
    exemplars: Vec<RawExemplar>,
}

#[derive(Deserialize)]
struct RawExemplar {
    #[serde(default, deserialize_with = "string_map")]
    labels: BTreeMap<String, String>,
    value: Number,
    timestamp: f64,
}

/// Prometheus sends sample values as strings (`"1"`, `"NaN"`, `"+Inf"`).
#[derive(Clone, Copy)]
struct Number(f64);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s.parse::<f64>().map(Number).map_err(|_| {
                serde::de::Error::custom(format!("not a number: {}", crate::ui::quoted(&s)))
            }),
            serde_json::Value::Number(n) => Ok(Number(n.as_f64().unwrap_or(f64::NAN))),
            other => Err(serde::de::Error::custom(format!(
                "expected a number, got {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exemplar_trace_id_under_either_label() {
        let id = TraceId::from_hex("00000000000000000000000000abcdef").unwrap();
        let mut labels = BTreeMap::new();
        labels.insert("traceID".to_string(), "abcdef".to_string());
        let e = Exemplar {
            series_labels: BTreeMap::new(),
            labels,
            value: 1.0,
            timestamp: 0.0,
        };
        assert_eq!(e.trace_id(), Some(id));
        assert_eq!(e.span_id(), None);
    }

    #[test]
    fn values_parse_special_floats() {
        let n: Number = serde_json::from_str(r#""+Inf""#).unwrap();
        assert!(n.0.is_infinite());
        let n: Number = serde_json::from_str(r#""NaN""#).unwrap();
        assert!(n.0.is_nan());
        assert!(serde_json::from_str::<Number>(r#""x""#).is_err());
    }
}
