//! Metric accumulation and exposition. Delta points are added into persisted totals; cumulative
//! streams are tracked per identity (latest snapshot, reset by start time) and only their
//! increase is added, so a series is exact across thousands of short-lived processes.
//! Exposition follows the collector's Prometheus exporter naming, in OpenMetrics text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};

use crate::otlp::{SpanId, TraceId};

use super::identity;
use super::store::{StoreError, now_ns};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A monotonic sum: exposed with `_total`.
    Counter,
    /// A gauge or a non-monotonic sum.
    Gauge,
    Histogram,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Temporality {
    Delta,
    Cumulative,
    /// A gauge: the latest value wins.
    Last,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exemplar {
    pub trace_id: Option<TraceId>,
    pub span_id: Option<SpanId>,
    pub value: f64,
    pub time_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Number(f64),
    Histogram {
        count: u64,
        sum: f64,
        bounds: Vec<f64>,
        /// Per bucket (not cumulative), `bounds.len() + 1` entries.
        buckets: Vec<u64>,
    },
}

/// One data point, converted at the edge: name and labels already in Prometheus form.
#[derive(Debug, Clone)]
pub struct MetricPoint {
    pub name: String,
    pub kind: Kind,
    pub help: String,
    pub labels: BTreeMap<String, String>,
    pub temporality: Temporality,
    /// Hash of resource + scope + metric + point attributes: one cumulative stream.
    pub stream: [u8; 16],
    pub start_ns: u64,
    pub time_ns: u64,
    pub value: Value,
    pub exemplars: Vec<Exemplar>,
    /// Whether a decrease of a cumulative value means a reset (monotonic sums, histograms).
    pub monotonic: bool,
}

/// A persisted series: its running total and the latest exemplar per bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    pub kind: Kind,
    pub help: String,
    pub labels: BTreeMap<String, String>,
    pub value: Value,
    /// Counters: one slot; histograms: one per bucket.
    pub exemplars: Vec<Option<Exemplar>>,
    pub time_ns: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Snapshot {
    start_ns: u64,
    time_ns: u64,
    value: Value,
}

/// What applying a point did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Taken into its series (an out-of-order cumulative point is taken and adds nothing).
    New,
    /// The same point again (a delta point with the same stream, start and time, or a
    /// cumulative one at its stream's latest time): absorbed, nothing added.
    Repeat,
}

pub struct SeriesStore<'a> {
    tx: &'a Transaction<'a>,
}

impl Value {
    fn add(&mut self, other: &Value, sign: f64) -> Result<(), String> {
        match (self, other) {
            (Value::Number(a), Value::Number(b)) => *a += sign * b,
            (
                Value::Histogram {
                    count,
                    sum,
                    bounds,
                    buckets,
                },
                Value::Histogram {
                    count: c,
                    sum: s,
                    bounds: b,
                    buckets: bk,
                },
            ) => {
                if bounds != b {
                    return Err(format!(
                        "histogram bucket bounds {b:?} differ from the series' bounds {bounds:?}"
                    ));
                }
                if sign > 0.0 {
                    *count += c;
                    buckets.iter_mut().zip(bk).for_each(|(x, y)| *x += y);
                } else {
                    *count = count.saturating_sub(*c);
                    buckets
                        .iter_mut()
                        .zip(bk)
                        .for_each(|(x, y)| *x = x.saturating_sub(*y));
                }
                *sum += sign * s;
            }
            _ => return Err("data point type differs from the series' type".into()),
        }
        Ok(())
    }

    fn minus(&self, earlier: &Value) -> Result<Value, String> {
        let mut diff = self.clone();
        diff.add(earlier, -1.0)?;
        Ok(diff)
    }

    /// A cumulative value smaller than its predecessor: the stream restarted.
    fn decreased_from(&self, earlier: &Value) -> bool {
        match (self, earlier) {
            (Value::Number(a), Value::Number(b)) => a < b,
            (Value::Histogram { count: a, .. }, Value::Histogram { count: b, .. }) => a < b,
            _ => true,
        }
    }

    fn zero_like(&self) -> Value {
        match self {
            Value::Number(_) => Value::Number(0.0),
            Value::Histogram { bounds, .. } => Value::Histogram {
                count: 0,
                sum: 0.0,
                bounds: bounds.clone(),
                buckets: vec![0; bounds.len() + 1],
            },
        }
    }
}

impl MetricPoint {
    fn series_key(&self) -> String {
        let labels = serde_json::to_string(&self.labels).expect("string map serializes");
        format!("{}|{:?}|{labels}", self.name, self.kind)
    }

    /// Which exemplar slot an exemplar lands in: the bucket holding its value.
    fn slot(&self, exemplar: &Exemplar) -> usize {
        match &self.value {
            Value::Number(_) => 0,
            Value::Histogram { bounds, .. } => bounds
                .iter()
                .position(|b| exemplar.value <= *b)
                .unwrap_or(bounds.len()),
        }
    }
}

impl<'a> SeriesStore<'a> {
    pub fn new(tx: &'a Transaction<'a>) -> Self {
        Self { tx }
    }

    /// Applies one point; `Ok(Err(reason))` when the point cannot be added to its series.
    pub fn apply(&mut self, point: &MetricPoint) -> Result<Result<Applied, String>, StoreError> {
        let key = point.series_key();
        let existing: Option<(i64, String)> = self
            .tx
            .prepare_cached("SELECT id, state FROM series WHERE key = ?1")?
            .query_row([&key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let mut series = match &existing {
            Some((_, state)) => serde_json::from_str::<Series>(state)?,
            None => Series {
                name: point.name.clone(),
                kind: point.kind,
                help: point.help.clone(),
                labels: point.labels.clone(),
                value: point.value.zero_like(),
                exemplars: Vec::new(),
                time_ns: 0,
            },
        };
        let increment = match point.temporality {
            Temporality::Delta => {
                let stream = &point.stream;
                if !identity::claim_delta(self.tx, stream, point.start_ns, point.time_ns, now_ns())?
                {
                    return Ok(Ok(Applied::Repeat));
                }
                Some(point.value.clone())
            }
            Temporality::Last => {
                if point.time_ns >= series.time_ns {
                    series.value = point.value.clone();
                }
                None
            }
            Temporality::Cumulative => {
                let snapshot: Option<String> = self
                    .tx
                    .prepare_cached("SELECT snapshot FROM streams WHERE key = ?1")?
                    .query_row([point.stream.as_slice()], |r| r.get(0))
                    .optional()?;
                let snapshot = snapshot
                    .map(|s| serde_json::from_str::<Snapshot>(&s))
                    .transpose()?;
                let increment = match &snapshot {
                    // A repeat or an out-of-order point adds nothing.
                    Some(prev)
                        if point.time_ns <= prev.time_ns && prev.start_ns == point.start_ns =>
                    {
                        return Ok(Ok(if point.time_ns == prev.time_ns {
                            Applied::Repeat
                        } else {
                            Applied::New
                        }));
                    }
                    Some(prev)
                        if prev.start_ns == point.start_ns
                            && !(point.monotonic && point.value.decreased_from(&prev.value)) =>
                    {
                        match point.value.minus(&prev.value) {
                            Ok(diff) => diff,
                            Err(reason) => return Ok(Err(reason)),
                        }
                    }
                    // New stream, or a restart (new start time or a decrease): all of it is new.
                    _ => point.value.clone(),
                };
                let snap = Snapshot {
                    start_ns: point.start_ns,
                    time_ns: point.time_ns,
                    value: point.value.clone(),
                };
                self.tx
                    .prepare_cached(
                        "INSERT INTO streams (key, updated_ns, snapshot) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (key) DO UPDATE SET updated_ns = ?2, snapshot = ?3",
                    )?
                    .execute(params![
                        point.stream.as_slice(),
                        now_ns(),
                        serde_json::to_string(&snap)?
                    ])?;
                Some(increment)
            }
        };
        if let Some(increment) = increment
            && let Err(reason) = series.value.add(&increment, 1.0)
        {
            return Ok(Err(reason));
        }
        series.time_ns = series.time_ns.max(point.time_ns);
        let slots = match &series.value {
            Value::Number(_) => 1,
            Value::Histogram { bounds, .. } => bounds.len() + 1,
        };
        series.exemplars.resize(slots, None);
        for exemplar in &point.exemplars {
            let slot = point.slot(exemplar);
            let newer = series.exemplars[slot]
                .as_ref()
                .is_none_or(|e| e.time_ns <= exemplar.time_ns);
            if newer {
                series.exemplars[slot] = Some(exemplar.clone());
            }
        }
        let state = serde_json::to_string(&series)?;
        // Every value is kept by time so that queries at a past time see the value then. The
        // exemplars stay out: only the current ones are ever queried.
        let past = Series {
            exemplars: Vec::new(),
            ..series.clone()
        };
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO series_history (key, time_ns, state) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![key, now_ns(), serde_json::to_string(&past)?])?;
        match existing {
            Some((id, _)) => {
                self.tx
                    .prepare_cached("UPDATE series SET updated_ns = ?2, state = ?3 WHERE id = ?1")?
                    .execute(params![id, now_ns(), state])?;
            }
            None => {
                self.tx
                    .prepare_cached(
                        "INSERT INTO series (key, updated_ns, state) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![key, now_ns(), state])?;
            }
        }
        Ok(Ok(Applied::New))
    }
}

/// A metric or label name as the collector's Prometheus exporter writes it: every character
/// outside `[a-zA-Z0-9_]` (and `:` for metric names) becomes `_`, a leading digit gets a prefix.
pub fn sanitize_name(name: &str, allow_colon: bool) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || (allow_colon && c == ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, if allow_colon { "_" } else { "key_" });
    }
    out
}

/// One exposed sample: what `/metrics` prints and what the query API selects from.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// Labels including `le` for buckets, excluding `__name__`.
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub exemplar: Option<Exemplar>,
}

/// Prometheus' float text: `+Inf`, `-Inf`, `NaN`, otherwise the shortest round-trip form.
pub fn fmt_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

impl Series {
    /// The family name: counters lose nothing here, `_total` is added per sample.
    pub fn family(&self) -> String {
        match self.kind {
            Kind::Counter => self
                .name
                .strip_suffix("_total")
                .unwrap_or(&self.name)
                .to_string(),
            _ => self.name.clone(),
        }
    }

    pub fn samples(&self) -> Vec<Sample> {
        let family = self.family();
        match (&self.value, self.kind) {
            (Value::Number(v), Kind::Counter) => vec![Sample {
                name: format!("{family}_total"),
                labels: self.labels.clone(),
                value: *v,
                exemplar: self.exemplars.first().cloned().flatten(),
            }],
            (Value::Number(v), _) => vec![Sample {
                name: family,
                labels: self.labels.clone(),
                value: *v,
                exemplar: None,
            }],
            (
                Value::Histogram {
                    count,
                    sum,
                    bounds,
                    buckets,
                },
                _,
            ) => {
                let mut out = Vec::with_capacity(buckets.len() + 2);
                let mut cumulative = 0u64;
                for (i, n) in buckets.iter().enumerate() {
                    cumulative += n;
                    let le = bounds.get(i).copied().unwrap_or(f64::INFINITY);
                    let mut labels = self.labels.clone();
                    labels.insert("le".into(), fmt_float(le));
                    out.push(Sample {
                        name: format!("{family}_bucket"),
                        labels,
                        value: cumulative as f64,
                        exemplar: self.exemplars.get(i).cloned().flatten(),
                    });
                }
                out.push(Sample {
                    name: format!("{family}_sum"),
                    labels: self.labels.clone(),
                    value: *sum,
                    exemplar: None,
                });
                out.push(Sample {
                    name: format!("{family}_count"),
                    labels: self.labels.clone(),
                    value: *count as f64,
                    exemplar: None,
                });
                out
            }
        }
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn write_labels(out: &mut String, labels: &BTreeMap<String, String>) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{k}=\"{}\"", escape_label(v));
    }
    out.push('}');
}

/// The OpenMetrics text of every series, ending in `# EOF`. No `# UNIT` line: OpenMetrics
/// requires the unit to be a suffix of the name, and a mismatch fails the whole scrape.
pub fn render_openmetrics(series: &[Series]) -> String {
    let mut families: BTreeMap<String, Vec<&Series>> = BTreeMap::new();
    for s in series {
        families.entry(s.family()).or_default().push(s);
    }
    let mut out = String::new();
    for (family, members) in families {
        // One family has one type; series of another kind under the same name are left out.
        let kind = members[0].kind;
        let type_name = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(out, "# TYPE {family} {type_name}");
        if !members[0].help.is_empty() {
            let help = escape_label(&members[0].help);
            let _ = writeln!(out, "# HELP {family} {help}");
        }
        for s in members.iter().filter(|s| s.kind == kind) {
            for sample in s.samples() {
                out.push_str(&sample.name);
                write_labels(&mut out, &sample.labels);
                let _ = write!(out, " {}", fmt_float(sample.value));
                if let Some(e) = &sample.exemplar {
                    let mut labels = BTreeMap::new();
                    if let Some(t) = &e.trace_id {
                        labels.insert("trace_id".to_string(), t.to_hex());
                    }
                    if let Some(s) = &e.span_id {
                        labels.insert("span_id".to_string(), s.to_hex());
                    }
                    out.push_str(" # ");
                    if labels.is_empty() {
                        out.push_str("{}");
                    } else {
                        write_labels(&mut out, &labels);
                    }
                    let _ = write!(
                        out,
                        " {} {}",
                        fmt_float(e.value),
                        fmt_float(e.time_ns as f64 / 1e9)
                    );
                }
                out.push('\n');
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitised_like_the_collector_exporter() {
        assert_eq!(
            sanitize_name("http.server.duration", true),
            "http_server_duration"
        );
        assert_eq!(sanitize_name("service.name", false), "service_name");
        assert_eq!(sanitize_name("9lives", false), "key_9lives");
        assert_eq!(sanitize_name("a:b", true), "a:b");
        assert_eq!(sanitize_name("a:b", false), "a_b");
    }

    #[test]
    fn histogram_exposition_is_cumulative_with_inf_and_exemplar() {
        let series = Series {
            name: "d_ms".into(),
            kind: Kind::Histogram,
            help: String::new(),
            labels: BTreeMap::from([("agent".into(), "a".into())]),
            value: Value::Histogram {
                count: 3,
                sum: 12.5,
                bounds: vec![1.0, 10.0],
                buckets: vec![1, 1, 1],
            },
            exemplars: vec![
                None,
                Some(Exemplar {
                    trace_id: Some(TraceId::from_bytes([1; 16])),
                    span_id: Some(SpanId::from_bytes([2; 8])),
                    value: 5.0,
                    time_ns: 1_700_000_000_000_000_000,
                }),
                None,
            ],
            time_ns: 0,
        };
        let text = render_openmetrics(&[series]);
        assert!(
            text.contains("d_ms_bucket{agent=\"a\",le=\"1\"} 1\n"),
            "{text}"
        );
        assert!(text.contains(
            "d_ms_bucket{agent=\"a\",le=\"10\"} 2 # {span_id=\"0202020202020202\",trace_id=\"01010101010101010101010101010101\"} 5 1700000000\n"
        ), "{text}");
        assert!(text.contains("d_ms_bucket{agent=\"a\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("d_ms_count{agent=\"a\"} 3\n"));
        assert!(!text.contains("# UNIT"));
        assert!(text.ends_with("# EOF\n"));
    }
}
