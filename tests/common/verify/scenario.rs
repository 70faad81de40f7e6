//! A known run and the telemetry a correct pipeline leaves for it, built by hand: the run record
//! `obsctl run` would write, and what Tempo, Prometheus and Loki would then hold. Tests break one
//! thing at a time and check that exactly the right check fails with the right numbers.
//! `serve` renders it as the real APIs' JSON (reference §2) for the scripted stand-in server.

use std::collections::BTreeMap;

use obsctl::backends::loki::LogEntry;
use obsctl::backends::prometheus::{Exemplar, Sample};
use obsctl::backends::tempo::{Span, SpanStatus, StatusCode, Trace};
use obsctl::checks::collect::{Observed, SeriesCount};
use obsctl::checks::expect::Expectation;
use obsctl::otlp::{SpanId, TraceId};
use obsctl::workflow::record::{
    NodeStatus, NodeType, Outputs, Parameter, Phase, RunRecord, StepTelemetry, WorkflowStatus,
};
use serde_json::json;

use super::{Canned, FakeBackend};

pub const REPO: &str = "acme/widgets";
pub const PR: &str = "42";
pub const TASK: &str = "T-1";
pub const T0: u64 = 1_795_455_600_000_000_000; // 2026-11-23T17:40:00Z

pub struct Step {
    pub agent: &'static str,
    pub step: &'static str,
    pub node_id: String,
    pub attempt: u32,
    pub outcome_ok: bool,
    pub span_id: SpanId,
    pub start: u64,
    pub end: u64,
}

pub struct Scenario {
    pub record: RunRecord,
    pub steps: Vec<Step>,
    pub spans: Vec<Span>,
    pub success: Vec<Sample>,
    pub fail: Vec<Sample>,
    pub histogram_counts: Vec<Sample>,
    pub exemplars: Vec<Exemplar>,
    pub logs: Vec<LogEntry>,
    pub series: Vec<SeriesCount>,
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ids(n: u8) -> SpanId {
    SpanId::from_bytes([0x10, 0, 0, 0, 0, 0, 0, n])
}

impl Scenario {
    /// Run `name`: clippy/verify succeeds, tests/unit fails once then succeeds on retry,
    /// deploy/preview succeeds; the run succeeds and sets its three link outputs.
    pub fn clean(name: &str) -> Self {
        let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let root = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        let sec = 1_000_000_000;
        let plan = [
            ("clippy", "verify", 0, true, 0, 2 * sec),
            ("tests", "unit", 0, false, 2 * sec, 3 * sec),
            ("tests", "unit", 1, true, 3 * sec, 5 * sec),
            ("deploy", "preview", 0, true, 5 * sec, 6 * sec),
        ];
        let steps: Vec<Step> = plan
            .iter()
            .enumerate()
            .map(|(i, (agent, step, attempt, ok, start, end))| Step {
                agent,
                step,
                node_id: format!("{name}-{}", 1000 + i),
                attempt: *attempt,
                outcome_ok: *ok,
                span_id: ids(i as u8 + 1),
                start: T0 + start,
                end: T0 + end,
            })
            .collect();

        let mut nodes = BTreeMap::new();
        for (i, s) in steps.iter().enumerate() {
            let display = if s.attempt > 0 {
                format!("{}({})", s.step, s.attempt)
            } else {
                s.step.to_string()
            };
            nodes.insert(
                s.node_id.clone(),
                NodeStatus {
                    id: s.node_id.clone(),
                    name: format!("{name}.{}-{}({i})", s.agent, s.step),
                    display_name: display,
                    node_type: NodeType::Pod,
                    template_name: Some("traced-step".into()),
                    phase: if s.outcome_ok {
                        Phase::Succeeded
                    } else {
                        Phase::Failed
                    },
                    boundary_id: Some(name.to_string()),
                    children: vec![],
                    message: None,
                    started_at: None,
                    finished_at: None,
                    outputs: None,
                    process_group: None,
                    interrupted: Vec::new(),
                    telemetry: Some(StepTelemetry {
                        agent: s.agent.into(),
                        step: s.step.into(),
                        trace_id,
                        span_id: s.span_id,
                        attempt: s.attempt,
                    }),
                },
            );
        }
        nodes.insert(
            name.to_string(),
            NodeStatus {
                id: name.to_string(),
                name: name.to_string(),
                display_name: name.to_string(),
                node_type: NodeType::DAG,
                template_name: Some("main".into()),
                phase: Phase::Succeeded,
                boundary_id: None,
                children: steps.iter().map(|s| s.node_id.clone()).collect(),
                message: None,
                started_at: None,
                finished_at: None,
                outputs: None,
                process_group: None,
                telemetry: None,
                interrupted: Vec::new(),
            },
        );
        let param = |n: &str, v: &str| Parameter {
            name: n.into(),
            value: v.into(),
        };
        let record = RunRecord {
            name: name.to_string(),
            namespace: "default".into(),
            workflow_file: "workflows/agent-pipeline.yaml".into(),
            parameters: vec![
                param("repo", REPO),
                param("prNumber", PR),
                param("taskId", TASK),
                param("ref", "refs/pull/42/head"),
            ],
            trace_id,
            root_span_id: root,
            sampled: None,
            status: WorkflowStatus {
                phase: Phase::Succeeded,
                started_at: Some("2026-11-23T17:40:00Z".into()),
                finished_at: Some("2026-11-23T17:40:06Z".into()),
                message: None,
                nodes,
                outputs: Some(Outputs {
                    parameters: vec![
                        param("prHtmlUrl", "https://github.com/acme/widgets/pull/42"),
                        param(
                            "actionsRunUrl",
                            "https://github.com/acme/widgets/actions/runs/777",
                        ),
                        param("previewUrl", "https://pr-42.preview.example.com/"),
                    ],
                    exit_code: None,
                    result: None,
                }),
            },
        };

        let resource = labels(&[("service.name", "agent-steps")]);
        let mut spans = vec![Span {
            trace_id,
            span_id: root,
            parent_span_id: None,
            name: name.to_string(),
            start_unix_nano: T0,
            end_unix_nano: T0 + 6 * sec,
            status: SpanStatus::default(),
            attributes: labels(&[("workflowName", name)]),
            resource: resource.clone(),
        }];
        for s in &steps {
            spans.push(Span {
                trace_id,
                span_id: s.span_id,
                parent_span_id: Some(root),
                name: format!("{}/{}", s.agent, s.step),
                start_unix_nano: s.start,
                end_unix_nano: s.end,
                status: SpanStatus {
                    code: if s.outcome_ok {
                        StatusCode::Ok
                    } else {
                        StatusCode::Error
                    },
                    message: if s.outcome_ok {
                        String::new()
                    } else {
                        "exit code 1".into()
                    },
                },
                attributes: labels(&[
                    ("repo", REPO),
                    ("prNumber", PR),
                    ("ref", "refs/pull/42/head"),
                    ("taskId", TASK),
                    ("agent", s.agent),
                    ("workflowName", name),
                    ("nodeId", &s.node_id),
                    ("stepName", s.step),
                    ("process.exit.code", if s.outcome_ok { "0" } else { "1" }),
                ]),
                resource: resource.clone(),
            });
        }

        let counter = |metric: &str, agent: &str, step: &str, v: f64| Sample {
            labels: labels(&[
                ("__name__", metric),
                ("agent", agent),
                ("repo", REPO),
                ("prNumber", PR),
                ("stepName", step),
                ("job", "obsctl"),
            ]),
            value: v,
            timestamp: 1_795_455_610.0,
        };
        let success = vec![
            counter("agent_step_success_total", "clippy", "verify", 1.0),
            counter("agent_step_success_total", "tests", "unit", 1.0),
            counter("agent_step_success_total", "deploy", "preview", 1.0),
        ];
        let fail = vec![counter("agent_step_fail_total", "tests", "unit", 1.0)];
        let hist = |agent: &str, step: &str, outcome: &str, v: f64| Sample {
            labels: labels(&[
                ("__name__", "agent_step_duration_ms_count"),
                ("agent", agent),
                ("repo", REPO),
                ("prNumber", PR),
                ("taskId", TASK),
                ("workflowName", name),
                ("stepName", step),
                ("outcome", outcome),
            ]),
            value: v,
            timestamp: 1_795_455_610.0,
        };
        let histogram_counts = vec![
            hist("clippy", "verify", "success", 1.0),
            hist("tests", "unit", "failure", 1.0),
            hist("tests", "unit", "success", 1.0),
            hist("deploy", "preview", "success", 1.0),
        ];
        let exemplars = steps
            .iter()
            .map(|s| Exemplar {
                series_labels: labels(&[
                    ("__name__", "agent_step_duration_ms_bucket"),
                    ("agent", s.agent),
                    ("stepName", s.step),
                    ("taskId", TASK),
                    ("le", "+Inf"),
                ]),
                labels: labels(&[
                    ("trace_id", &trace_id.to_hex()),
                    ("span_id", &s.span_id.to_hex()),
                ]),
                value: ((s.end - s.start) / 1_000_000) as f64,
                timestamp: (s.end / 1_000_000) as f64 / 1000.0,
            })
            .collect();
        let mut logs = Vec::new();
        for s in &steps {
            for (offset, line) in [(1, "step started"), (s.end - s.start - 1, "step finished")] {
                logs.push(LogEntry {
                    timestamp_ns: s.start + offset,
                    line: format!("{}/{}: {line}", s.agent, s.step),
                    labels: labels(&[("service_name", "agent-steps")]),
                    structured_metadata: labels(&[
                        ("trace_id", &trace_id.to_hex()),
                        ("span_id", &s.span_id.to_hex()),
                        ("repo", REPO),
                        ("prNumber", PR),
                        ("taskId", TASK),
                    ]),
                    parsed: BTreeMap::new(),
                });
            }
        }
        let series = [
            "agent_step_success_total",
            "agent_step_fail_total",
            "agent_step_duration_ms_count",
        ]
        .iter()
        .zip([3, 1, 4])
        .map(|(m, n)| SeriesCount {
            metric: m.to_string(),
            series: n,
        })
        .collect();
        Self {
            record,
            steps,
            spans,
            success,
            fail,
            histogram_counts,
            exemplars,
            logs,
            series,
        }
    }

    /// `clean(name)` of a workflow without repo, prNumber, taskId and ref parameters: the shim
    /// leaves those attributes empty and the metric and log labels absent.
    pub fn uncorrelated(name: &str) -> Self {
        const CORRELATION: [&str; 4] = ["repo", "prNumber", "taskId", "ref"];
        let mut s = Self::clean(name);
        s.record
            .parameters
            .retain(|p| !CORRELATION.contains(&p.name.as_str()));
        for span in &mut s.spans {
            for key in CORRELATION {
                if let Some(value) = span.attributes.get_mut(key) {
                    value.clear();
                }
            }
        }
        for sample in s
            .success
            .iter_mut()
            .chain(s.fail.iter_mut())
            .chain(s.histogram_counts.iter_mut())
        {
            sample
                .labels
                .retain(|k, _| !CORRELATION.contains(&k.as_str()));
        }
        for entry in &mut s.logs {
            entry
                .structured_metadata
                .retain(|k, _| !CORRELATION.contains(&k.as_str()));
        }
        s
    }

    pub fn trace_id(&self) -> TraceId {
        self.record.trace_id
    }

    pub fn expectation(&self) -> Expectation {
        Expectation::new(
            vec![self.record.clone()],
            std::slice::from_ref(&self.record),
        )
    }

    pub fn observed(&self) -> Observed {
        let mut traces = BTreeMap::new();
        traces.insert(
            self.trace_id(),
            Some(Trace {
                spans: self.spans.clone(),
                partial: false,
            }),
        );
        Observed {
            traces,
            success_counters: self.success.clone(),
            fail_counters: self.fail.clone(),
            histogram_counts: self.histogram_counts.clone(),
            exemplars: self.exemplars.clone(),
            logs: self.logs.clone(),
            log_selections: {
                let (repo, pr) = obsctl::checks::expect::scope_of(&self.record);
                [("repo", repo), ("prNumber", pr)]
                    .into_iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(l, v)| obsctl::checks::collect::LogSelection {
                        label: l.to_string(),
                        value: v,
                        entries: self.logs.clone(),
                    })
                    .collect()
            },
            series: self.series.clone(),
            baseline: Vec::new(),
        }
    }

    /// Tempo's trace-by-id JSON (v1 `batches`, base64 ids, string ints).
    pub fn tempo_json(&self) -> String {
        let attrs = |m: &BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| match v.parse::<i64>() {
                    Ok(i) if k != "prNumber" => {
                        json!({"key": k, "value": {"intValue": i.to_string()}})
                    }
                    _ => json!({"key": k, "value": {"stringValue": v}}),
                })
                .collect::<Vec<_>>()
        };
        let spans: Vec<_> = self
            .spans
            .iter()
            .map(|s| {
                let mut span = json!({
                    "traceId": s.trace_id.to_base64(),
                    "spanId": s.span_id.to_base64(),
                    "name": s.name,
                    "kind": "SPAN_KIND_INTERNAL",
                    "startTimeUnixNano": s.start_unix_nano.to_string(),
                    "endTimeUnixNano": s.end_unix_nano.to_string(),
                    "attributes": attrs(&s.attributes),
                    "status": match s.status.code {
                        StatusCode::Unset => json!({}),
                        StatusCode::Ok => json!({"code": "STATUS_CODE_OK"}),
                        StatusCode::Error => json!({"code": "STATUS_CODE_ERROR", "message": s.status.message}),
                    },
                });
                if let Some(p) = s.parent_span_id {
                    span["parentSpanId"] = json!(p.to_base64());
                }
                span
            })
            .collect();
        json!({"batches": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "agent-steps"}}]},
            "scopeSpans": [{"scope": {"name": "obsctl"}, "spans": spans}]
        }]})
        .to_string()
    }

    pub fn vector_json(samples: &[Sample]) -> String {
        let result: Vec<_> = samples
            .iter()
            .map(|s| json!({"metric": s.labels, "value": [s.timestamp, s.value.to_string()]}))
            .collect();
        json!({"status": "success", "data": {"resultType": "vector", "result": result}}).to_string()
    }

    pub fn exemplars_json(exemplars: &[Exemplar]) -> String {
        let data: Vec<_> = exemplars
            .iter()
            .map(|e| {
                json!({"seriesLabels": e.series_labels, "exemplars": [
                    {"labels": e.labels, "value": e.value.to_string(), "timestamp": e.timestamp}
                ]})
            })
            .collect();
        json!({"status": "success", "data": data}).to_string()
    }

    /// Loki `query_range` with categorized labels: one stream, structured metadata third.
    pub fn loki_json(entries: &[LogEntry]) -> String {
        let values: Vec<_> = entries
            .iter()
            .map(|e| {
                json!([e.timestamp_ns.to_string(), e.line, {"structuredMetadata": e.structured_metadata}])
            })
            .collect();
        json!({"status": "success", "data": {"resultType": "streams", "encodingFlags": ["categorize-labels"],
            "result": [{"stream": {"service_name": "agent-steps"}, "values": values}]}})
        .to_string()
    }

    /// Scripts `fake` to answer every query `obsctl verify` and `obsctl trace` make for this run.
    pub fn serve(&self, fake: &FakeBackend) {
        fake.script(
            &format!("/api/traces/{}", self.trace_id()),
            vec![Canned::ok(self.tempo_json())],
        );
        let (repo, pr) = obsctl::checks::expect::scope_of(&self.record);
        let sel = format!(r#"{{repo="{repo}",prNumber="{pr}"}}"#);
        fake.script(
            &format!("/api/v1/query?agent_step_success_total{sel}"),
            vec![Canned::ok(Self::vector_json(&self.success))],
        );
        fake.script(
            &format!("/api/v1/query?agent_step_fail_total{sel}"),
            vec![Canned::ok(Self::vector_json(&self.fail))],
        );
        fake.script(
            &format!(
                r#"/api/v1/query?agent_step_duration_ms_count{{workflowName="{}"}}"#,
                self.record.name
            ),
            vec![Canned::ok(Self::vector_json(&self.histogram_counts))],
        );
        for s in &self.series {
            let count = Sample {
                labels: BTreeMap::new(),
                value: s.series as f64,
                timestamp: 1_795_455_610.0,
            };
            fake.script(
                &format!("/api/v1/query?count({})", s.metric),
                vec![Canned::ok(Self::vector_json(&[count]))],
            );
        }
        fake.script(
            "/api/v1/query_exemplars",
            vec![Canned::ok(Self::exemplars_json(&self.exemplars))],
        );
        let task = obsctl::checks::expect::task_of(&self.record).unwrap_or_default();
        for (label, value) in [
            ("taskId", task),
            ("repo", repo.as_str()),
            ("prNumber", pr.as_str()),
            ("trace_id", &self.trace_id().to_hex()),
        ] {
            fake.script(
                &format!(
                    r#"/loki/api/v1/query_range?{{service_name="agent-steps"}} | {label}="{value}""#
                ),
                vec![Canned::ok(Self::loki_json(&self.logs))],
            );
        }
    }

    pub fn save(&self, dir: &std::path::Path) {
        obsctl::workflow::record::RecordStore::new(dir)
            .save(&self.record)
            .unwrap();
    }
}
