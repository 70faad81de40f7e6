//! What a run adds to OpenTelemetry: the environment every step gets (seed 000, subtask 3, plus
//! correlation variables and a `TRACEPARENT` naming the run's root span), and the root span
//! itself, which obsctl emits so that one run is one trace with no orphan step spans. The
//! sampling decision is taken here, once per run, at the root: every step follows it.

use std::time::{Duration, SystemTime};

use crate::conventions::{attr, env, resource};
use crate::otlp::export::{ConfigError, ExportConfig, ExportError, ExportRequest, Exporter};
use crate::otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use crate::otlp::proto::common::v1::InstrumentationScope;
use crate::otlp::proto::resource::v1::Resource;
use crate::otlp::proto::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span, status};
use crate::otlp::spool::Spool;
use crate::otlp::{SpanId, TraceContext, TraceId, attrs};
use crate::shim::sampler::Sampler;

/// Where and how steps (and obsctl) send telemetry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtelConfig {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for the steps, matching `protocol`.
    pub endpoint: String,
    /// `grpc`, `http/protobuf` or `http/json`.
    pub protocol: String,
    pub sampler: String,
    pub sampler_arg: String,
    /// `deployment.environment`.
    pub environment: String,
}

impl OtelConfig {
    /// Whether the run whose trace is `trace_id` is sampled. Decided once, as a root span with no
    /// parent decides under `sampler` / `sampler_arg` (the trace id ratio for
    /// `parentbased_traceidratio`); the steps' `parentbased_*` samplers then follow the flag in
    /// their `TRACEPARENT`, so a run is traced as a whole or not at all. Metrics and logs are
    /// never sampled.
    pub fn run_sampled(&self, trace_id: TraceId) -> bool {
        let (sampler, _) = Sampler::from_config(Some(&self.sampler), Some(&self.sampler_arg));
        sampler.should_sample(None, trace_id)
    }
}

/// `OTEL_EXPORTER_OTLP_TIMEOUT` every step gets, in milliseconds (seed 000 subtask 3). The shim
/// never waits longer than its own export budget (`OBSCTL_EXPORT_BUDGET_MS`, 1 s by default)
/// either: the smaller of the two bounds a step's exit.
pub const STEP_OTLP_TIMEOUT_MS: &str = "10000";

/// Correlation values of a run, taken from the workflow's parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Correlation {
    pub repo: Option<String>,
    pub pr_number: Option<String>,
    pub task_id: Option<String>,
    pub commit_sha: Option<String>,
    pub git_ref: Option<String>,
}

impl Correlation {
    /// Parameters named `repo`, `pr`/`prNumber`, `taskId`, `commitSha` and `ref` (the names the
    /// sample pipeline and seed 000 use).
    pub fn from_parameters(params: &[(String, String)]) -> Self {
        let get = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()))
        };
        Self {
            repo: get(&["repo"]),
            pr_number: get(&["prNumber", "pr"]),
            task_id: get(&["taskId"]),
            commit_sha: get(&["commitSha"]),
            git_ref: get(&["ref"]),
        }
    }
}

/// Identity of one step attempt, for its environment.
pub struct StepIdentity<'a> {
    pub workflow_name: &'a str,
    pub namespace: &'a str,
    pub node_id: &'a str,
    pub agent: &'a str,
    pub step: &'a str,
    /// JSON of the template, as Argo sets `ARGO_TEMPLATE`.
    pub template_json: &'a str,
}

/// The environment obsctl gives a step, before the template's own `env`.
pub fn step_env(
    otel: &OtelConfig,
    corr: &Correlation,
    id: &StepIdentity,
    trace_id: TraceId,
    root_span: SpanId,
) -> Vec<(String, String)> {
    let resource_attrs = format!(
        "{}={},{}={},{}={},{}={}",
        resource::SERVICE_NAME,
        resource::DEFAULT_SERVICE_NAME,
        resource::DEPLOYMENT_ENVIRONMENT,
        otel.environment,
        resource::K8S_NAMESPACE,
        id.namespace,
        resource::K8S_POD_NAME,
        id.node_id,
    );
    let parent = TraceContext {
        trace_id,
        span_id: root_span,
        sampled: otel.run_sampled(trace_id),
    };
    let mut out: Vec<(String, String)> = vec![
        (
            env::OTEL_EXPORTER_OTLP_ENDPOINT.into(),
            otel.endpoint.clone(),
        ),
        (
            env::OTEL_EXPORTER_OTLP_PROTOCOL.into(),
            otel.protocol.clone(),
        ),
        (
            env::OTEL_EXPORTER_OTLP_TIMEOUT.into(),
            STEP_OTLP_TIMEOUT_MS.into(),
        ),
        (
            env::OTEL_SERVICE_NAME.into(),
            resource::DEFAULT_SERVICE_NAME.into(),
        ),
        (env::OTEL_RESOURCE_ATTRIBUTES.into(), resource_attrs),
        (env::OTEL_TRACES_SAMPLER.into(), otel.sampler.clone()),
        (
            env::OTEL_TRACES_SAMPLER_ARG.into(),
            otel.sampler_arg.clone(),
        ),
        (env::OTEL_METRICS_EXPORTER.into(), "otlp".into()),
        // For the step's own SDK, as seed 000 lists it; the shim's step logs follow
        // OBSCTL_STEP_LOGS and still go out.
        (env::OTEL_LOGS_EXPORTER.into(), "none".into()),
        (env::AGENT.into(), id.agent.into()),
        (env::STEP.into(), id.step.into()),
        (env::WORKFLOW_NAME.into(), id.workflow_name.into()),
        (env::NODE_ID.into(), id.node_id.into()),
        (env::NAMESPACE.into(), id.namespace.into()),
        (env::POD_NAME.into(), id.node_id.into()),
        (env::ARGO_WORKFLOW_NAME.into(), id.workflow_name.into()),
        (env::ARGO_NODE_ID.into(), id.node_id.into()),
        (env::ARGO_TEMPLATE.into(), id.template_json.into()),
        (env::TRACEPARENT.into(), parent.to_traceparent()),
    ];
    for (key, value) in [
        (env::REPO, &corr.repo),
        (env::PR_NUMBER, &corr.pr_number),
        (env::TASK_ID, &corr.task_id),
        (env::COMMIT_SHA, &corr.commit_sha),
        (env::REF, &corr.git_ref),
    ] {
        if let Some(value) = value {
            out.push((key.into(), value.clone()));
        }
    }
    out
}

/// A task id of its own for a run whose workflow declares `taskId` empty and is given none, so
/// its spans, series and logs can be told from every other run's.
pub fn new_task_id() -> String {
    let millis = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("task-{millis:x}-{:04x}", rand::random::<u16>())
}

/// The run's root span, as obsctl records it.
pub struct RootSpan<'a> {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub workflow_name: &'a str,
    pub namespace: &'a str,
    pub corr: &'a Correlation,
    pub start: SystemTime,
    pub end: SystemTime,
    /// Argo's workflow phase (`Succeeded`, `Failed`, `Error`).
    pub phase: &'a str,
    pub environment: &'a str,
}

/// The OTLP request carrying the root span.
pub fn root_span_request(root: &RootSpan) -> ExportTraceServiceRequest {
    let nanos = crate::encode::unix_nanos;
    let mut attributes = vec![
        attrs::string(attr::WORKFLOW_NAME, root.workflow_name),
        attrs::string(attr::NAMESPACE, root.namespace),
    ];
    for (key, value) in [
        (attr::REPO, &root.corr.repo),
        (attr::PR_NUMBER, &root.corr.pr_number),
        (attr::TASK_ID, &root.corr.task_id),
        (attr::COMMIT_SHA, &root.corr.commit_sha),
        (attr::REF, &root.corr.git_ref),
    ] {
        if let Some(value) = value {
            attributes.push(attrs::string(key, value.clone()));
        }
    }
    let ok = root.phase == "Succeeded";
    let span = Span {
        trace_id: root.trace_id.as_bytes().to_vec(),
        span_id: root.span_id.as_bytes().to_vec(),
        name: format!("workflow/{}", root.workflow_name),
        kind: span::SpanKind::Internal as i32,
        start_time_unix_nano: nanos(root.start),
        end_time_unix_nano: nanos(root.end).max(nanos(root.start)),
        attributes,
        status: Some(Status {
            code: if ok {
                status::StatusCode::Ok
            } else {
                status::StatusCode::Error
            } as i32,
            message: if ok {
                String::new()
            } else {
                format!("workflow {}", root.phase)
            },
        }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    attrs::string(resource::SERVICE_NAME, resource::DEFAULT_SERVICE_NAME),
                    attrs::string(resource::DEPLOYMENT_ENVIRONMENT, root.environment),
                    attrs::string(resource::K8S_NAMESPACE, root.namespace),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "obsctl".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// How long obsctl waits for the backend to take the root span: a down collector must not
/// hold the command's exit (reference §5, §6).
pub const EXPORT_DEADLINE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum RootSpanError {
    #[error("invalid OTLP settings: {0}")]
    Config(#[from] ConfigError),
    #[error("{source}; spooled to {spool} for `obsctl flush`")]
    Spooled {
        source: ExportError,
        spool: std::path::PathBuf,
    },
    #[error("{0}")]
    Lost(ExportError),
}

/// Sends the root span through the shared OTLP exporter, with a deadline; a run that was not
/// sampled ([`OtelConfig::run_sampled`]) sends nothing, as none of its steps does. When the
/// collector is unreachable the request goes to the spool (as the shim does), so `obsctl flush`
/// can deliver it later; failure is reported, never fatal.
pub async fn emit_root_span(otel: &OtelConfig, root: &RootSpan<'_>) -> Result<(), RootSpanError> {
    if !otel.run_sampled(root.trace_id) {
        return Ok(());
    }
    let config = ExportConfig::from_lookup(|name| match name {
        env::OTEL_EXPORTER_OTLP_ENDPOINT => Some(otel.endpoint.clone()),
        env::OTEL_EXPORTER_OTLP_PROTOCOL => Some(otel.protocol.clone()),
        _ => std::env::var(name).ok(),
    })?;
    let request = ExportRequest::Traces(root_span_request(root));
    let exporter = Exporter::new(config);
    let deadline = tokio::time::Instant::now() + EXPORT_DEADLINE;
    match exporter.send(&request, deadline).await {
        Ok(()) => Ok(()),
        Err(source) if source.is_retryable() => {
            let spool = Spool::from_env();
            match spool.store(&request) {
                Ok(_) => Err(RootSpanError::Spooled {
                    source,
                    spool: spool.dir().to_path_buf(),
                }),
                Err(_) => Err(RootSpanError::Lost(source)),
            }
        }
        Err(source) => Err(RootSpanError::Lost(source)),
    }
}

/// How long the end of a run spends replaying the spool to a collector that answers.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// At the end of a run, delivers what its steps (or earlier ones) spooled while the collector
/// was away, so that recovering from an outage needs no manual `obsctl flush`. Stops at once
/// when the collector still does not answer; `None` when there was nothing to replay.
pub async fn drain_spool(otel: &OtelConfig) -> Option<crate::otlp::spool::ReplayReport> {
    let spool = Spool::from_env();
    if spool.entries().ok()?.is_empty() {
        return None;
    }
    let config = ExportConfig::from_lookup(|name| match name {
        env::OTEL_EXPORTER_OTLP_ENDPOINT => Some(otel.endpoint.clone()),
        env::OTEL_EXPORTER_OTLP_PROTOCOL => Some(otel.protocol.clone()),
        _ => std::env::var(name).ok(),
    })
    .ok()?;
    let exporter = Exporter::new(config);
    let deadline = tokio::time::Instant::now() + DRAIN_DEADLINE;
    spool.replay(&exporter, deadline, None).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_get_a_traceparent_naming_the_root_span() {
        let otel = OtelConfig {
            endpoint: "http://127.0.0.1:4317".into(),
            protocol: "grpc".into(),
            sampler: "parentbased_traceidratio".into(),
            sampler_arg: "1.0".into(),
            environment: "dev".into(),
        };
        let corr = Correlation::from_parameters(&[
            ("repo".into(), "o/r".into()),
            ("pr".into(), "7".into()),
        ]);
        let (trace, root) = (TraceId::random(), SpanId::random());
        let id = StepIdentity {
            workflow_name: "wf-abcde",
            namespace: "default",
            node_id: "wf-abcde-1",
            agent: "rex",
            step: "implement",
            template_json: "{}",
        };
        let vars = step_env(&otel, &corr, &id, trace, root);
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let parent = TraceContext::parse_traceparent(get(env::TRACEPARENT).unwrap()).unwrap();
        assert_eq!((parent.trace_id, parent.span_id), (trace, root));
        assert_eq!(get(env::PR_NUMBER), Some("7"));
        assert_eq!(get(env::REPO), Some("o/r"));
        assert_eq!(get(env::TASK_ID), None);
        assert_eq!(get(env::AGENT), Some("rex"));
        assert!(
            get(env::OTEL_RESOURCE_ATTRIBUTES)
                .unwrap()
                .contains("deployment.environment=dev")
        );
        assert_eq!(get(env::OTEL_EXPORTER_OTLP_TIMEOUT), Some("10000"));
        assert!(parent.sampled, "ratio 1.0 samples every run");
    }

    #[test]
    fn the_sampler_ratio_decides_per_run_and_every_step_follows() {
        let otel = OtelConfig {
            endpoint: "http://127.0.0.1:4317".into(),
            protocol: "grpc".into(),
            sampler: "parentbased_traceidratio".into(),
            sampler_arg: "0.5".into(),
            environment: "dev".into(),
        };
        let corr = Correlation::default();
        let mut sampled_runs = 0;
        for run in 0..400 {
            let (trace, root) = (TraceId::random(), SpanId::random());
            let flags: std::collections::BTreeSet<bool> = (0..3)
                .map(|step| {
                    let node = format!("wf-{run}-{step}");
                    let id = StepIdentity {
                        workflow_name: "wf",
                        namespace: "default",
                        node_id: &node,
                        agent: "a",
                        step: "s",
                        template_json: "{}",
                    };
                    let vars = step_env(&otel, &corr, &id, trace, root);
                    let tp = vars.iter().find(|(k, _)| k == env::TRACEPARENT).unwrap();
                    TraceContext::parse_traceparent(&tp.1).unwrap().sampled
                })
                .collect();
            assert_eq!(flags.len(), 1, "one decision for the whole run");
            assert_eq!(flags.contains(&true), otel.run_sampled(trace));
            sampled_runs += usize::from(otel.run_sampled(trace));
        }
        assert!((140..260).contains(&sampled_runs), "{sampled_runs} of 400");
    }
}
