//! The names obsctl promises to users: span attribute keys, metric names and labels, and the
//! environment variables of seed 000. Every module uses these constants, so a rename is one edit.

/// Pod annotations an instrumented workflow's pods carry (`argo::instrument`), and step
/// containers as labels (`workflow::runner::docker`).
pub mod annotation {
    /// The steps' W3C `traceparent`.
    pub const TRACE_CONTEXT: &str = "trace.context";
    pub const COMMIT_SHA: &str = "commitSha";
}

/// Span attributes every step span carries (seed 000, subtask 1; `taskId` wins over `task.id`).
pub mod attr {
    pub const REPO: &str = "repo";
    pub const PR_NUMBER: &str = "prNumber";
    pub const REF: &str = "ref";
    pub const TASK_ID: &str = "taskId";
    pub const AGENT: &str = "agent";
    pub const WORKFLOW_NAME: &str = "workflowName";
    pub const NODE_ID: &str = "nodeId";
    pub const STEP_NAME: &str = "stepName";
    pub const COMMIT_SHA: &str = "commitSha";
    pub const NAMESPACE: &str = "namespace";
    pub const PROCESS_COMMAND: &str = "process.command";
    pub const PROCESS_EXIT_CODE: &str = "process.exit.code";
    /// The signal that ended the step, when one did (for example `SIGTERM`).
    pub const PROCESS_SIGNAL: &str = "process.signal";
    /// How many of the step's output lines were not exported as log records (caps reached).
    pub const LOGS_DROPPED: &str = "obsctl.logs.dropped";
    /// Log record attribute: which stream a line came from, `stdout` or `stderr` (semconv).
    pub const LOG_IOSTREAM: &str = "log.iostream";
    /// Set on a span (and its logs) that the runner recorded on the shim's behalf, because the
    /// shim was killed before it could export; the value says why (for example `SIGKILL`).
    pub const RECORDED_BY_RUNNER: &str = "obsctl.recorded_by_runner";

    /// The attributes `obsctl verify` requires on every step span.
    pub const REQUIRED: [&str; 8] = [
        REPO,
        PR_NUMBER,
        REF,
        TASK_ID,
        AGENT,
        WORKFLOW_NAME,
        NODE_ID,
        STEP_NAME,
    ];
}

/// Resource attributes (OpenTelemetry semantic conventions).
pub mod resource {
    pub const SERVICE_NAME: &str = "service.name";
    pub const SERVICE_INSTANCE_ID: &str = "service.instance.id";
    pub const DEPLOYMENT_ENVIRONMENT: &str = "deployment.environment";
    pub const K8S_NAMESPACE: &str = "k8s.namespace";
    pub const K8S_POD_NAME: &str = "k8s.pod.name";
    /// `service.name` when `OTEL_SERVICE_NAME` is unset.
    pub const DEFAULT_SERVICE_NAME: &str = "agent-steps";
    /// The resource attributes that become log index labels (`stack/loki/loki.yaml`
    /// `limits_config.otlp_config`, and the embedded backend's Loki API): bounded by services,
    /// environments and namespaces, never by processes or steps. Everything else is structured
    /// metadata.
    pub const LOG_INDEX_LABELS: [&str; 5] = [
        SERVICE_NAME,
        "service.namespace",
        DEPLOYMENT_ENVIRONMENT,
        K8S_NAMESPACE,
        "k8s.namespace.name",
    ];
}

/// Metric names as they appear in Prometheus (seed 000, subtask 2).
pub mod metric {
    /// Histogram; Prometheus shows `_bucket`, `_sum` and `_count`.
    pub const STEP_DURATION: &str = "agent_step_duration_ms";
    /// Counter; the OTLP name is `agent_step_success`, Prometheus appends `_total`.
    pub const STEP_SUCCESS: &str = "agent_step_success";
    pub const STEP_FAIL: &str = "agent_step_fail";
    pub const STEP_SUCCESS_TOTAL: &str = "agent_step_success_total";
    pub const STEP_FAIL_TOTAL: &str = "agent_step_fail_total";

    /// Labels of the duration histogram.
    pub const DURATION_LABELS: [&str; 7] = [
        super::attr::REPO,
        super::attr::PR_NUMBER,
        super::attr::TASK_ID,
        super::attr::AGENT,
        super::attr::WORKFLOW_NAME,
        super::attr::STEP_NAME,
        OUTCOME,
    ];
    /// Labels of the success and fail counters.
    pub const COUNTER_LABELS: [&str; 4] = [
        super::attr::AGENT,
        super::attr::REPO,
        super::attr::PR_NUMBER,
        super::attr::STEP_NAME,
    ];
    pub const OUTCOME: &str = "outcome";
    pub const OUTCOME_SUCCESS: &str = "success";
    pub const OUTCOME_FAILURE: &str = "failure";
}

/// Environment variables a step sees (seed 000, subtasks 1 and 3).
pub mod env {
    pub const AGENT: &str = "AGENT";
    pub const STEP: &str = "STEP";
    pub const REPO: &str = "REPO";
    pub const PR_NUMBER: &str = "PR_NUMBER";
    pub const REF: &str = "REF";
    pub const TASK_ID: &str = "TASK_ID";
    pub const WORKFLOW_NAME: &str = "WORKFLOW_NAME";
    pub const NODE_ID: &str = "NODE_ID";
    pub const COMMIT_SHA: &str = "COMMIT_SHA";
    pub const NAMESPACE: &str = "NAMESPACE";
    pub const ARGO_WORKFLOW_NAME: &str = "ARGO_WORKFLOW_NAME";
    pub const ARGO_NODE_ID: &str = "ARGO_NODE_ID";
    /// The template's JSON, as Argo sets it in every pod.
    pub const ARGO_TEMPLATE: &str = "ARGO_TEMPLATE";
    pub const TRACEPARENT: &str = "TRACEPARENT";
    pub const TRACESTATE: &str = "TRACESTATE";
    pub const TRACE_ID: &str = "TRACE_ID";
    pub const SPAN_ID: &str = "SPAN_ID";
    /// The `traceparent` of the attempt this step attempt replaces (a retry, or the attempt a
    /// resumed run starts again): the shim links its span to it.
    pub const OBSCTL_REPLACES: &str = "OBSCTL_REPLACES";
    /// Set (to any value) by a runner that cannot see how the shim itself ended (the Docker
    /// runner only gets the container's exit code): the shim then prints
    /// [`crate::workflow::runner::ShimEnd`] as its last stdout line once its telemetry is
    /// exported or spooled, so an exit without it means the shim was killed.
    pub const OBSCTL_SHIM_END_LINE: &str = "OBSCTL_SHIM_END_LINE";
    /// A deliberate defect for obsctl's own chaos tests (`crate::defect`).
    pub const OBSCTL_DEFECT: &str = "OBSCTL_DEFECT";
    pub const OBSCTL_SPOOL_DIR: &str = "OBSCTL_SPOOL_DIR";
    /// `node`: the shim derives its span id from the trace id and the node id
    /// (`argo::node_span_id`), so that a run followed on an Argo Server, which never sees the
    /// shim's start line, knows each step's span.
    pub const OBSCTL_SPAN_ID_FROM: &str = "OBSCTL_SPAN_ID_FROM";
    /// Upper bound of the spool directory in bytes; oldest items are dropped beyond it.
    pub const OBSCTL_SPOOL_MAX_BYTES: &str = "OBSCTL_SPOOL_MAX_BYTES";
    /// Total time the shim may spend exporting after the step ended, in milliseconds.
    pub const OBSCTL_EXPORT_BUDGET_MS: &str = "OBSCTL_EXPORT_BUDGET_MS";
    /// Whether the shim exports the step's output lines as OTLP log records: `otlp` (default)
    /// or `none`. obsctl's own switch, because seed 000 sets `OTEL_LOGS_EXPORTER=none` for the
    /// step's OpenTelemetry SDK, which must not also silence the shim's log correlation.
    pub const OBSCTL_STEP_LOGS: &str = "OBSCTL_STEP_LOGS";
    /// The pod name, when the pod spec passes it down (Kubernetes downward API).
    pub const POD_NAME: &str = "POD_NAME";

    pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    pub const OTEL_EXPORTER_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
    pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
    pub const OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT";
    pub const OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT";
    pub const OTEL_EXPORTER_OTLP_HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
    pub const OTEL_EXPORTER_OTLP_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
    pub const OTEL_EXPORTER_OTLP_COMPRESSION: &str = "OTEL_EXPORTER_OTLP_COMPRESSION";
    /// PEM CA certificate(s) that verify the collector, replacing the system's roots.
    pub const OTEL_EXPORTER_OTLP_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_CERTIFICATE";
    pub const OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE";
    pub const OTEL_EXPORTER_OTLP_CLIENT_KEY: &str = "OTEL_EXPORTER_OTLP_CLIENT_KEY";
    /// gRPC only: `true` makes an endpoint without a scheme plain text instead of TLS.
    pub const OTEL_EXPORTER_OTLP_INSECURE: &str = "OTEL_EXPORTER_OTLP_INSECURE";
    /// Bearer token for the backends `verify`, `trace`, `demo` and `chaos` read.
    pub const OBSCTL_TOKEN: &str = "OBSCTL_TOKEN";
    pub const OBSCTL_TOKEN_FILE: &str = "OBSCTL_TOKEN_FILE";
    pub const OBSCTL_BASIC_AUTH_USER: &str = "OBSCTL_BASIC_AUTH_USER";
    pub const OBSCTL_BASIC_AUTH_PASSWORD: &str = "OBSCTL_BASIC_AUTH_PASSWORD";
    pub const OBSCTL_BASIC_AUTH_PASSWORD_FILE: &str = "OBSCTL_BASIC_AUTH_PASSWORD_FILE";
    /// `X-Scope-OrgID` for every backend.
    pub const OBSCTL_TENANT: &str = "OBSCTL_TENANT";
    /// PEM CA certificate(s) that verify the backends, replacing the system's roots.
    pub const OBSCTL_CA_FILE: &str = "OBSCTL_CA_FILE";
    /// YAML file with the backends' URLs and access settings (`--backends-file`).
    pub const OBSCTL_BACKENDS_FILE: &str = "OBSCTL_BACKENDS_FILE";
    pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
    pub const OTEL_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
    pub const OTEL_TRACES_SAMPLER: &str = "OTEL_TRACES_SAMPLER";
    pub const OTEL_TRACES_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
    pub const OTEL_TRACES_EXPORTER: &str = "OTEL_TRACES_EXPORTER";
    pub const OTEL_METRICS_EXPORTER: &str = "OTEL_METRICS_EXPORTER";
    /// The step's own OpenTelemetry SDK log exporter; the shim does not read it (see
    /// [`OBSCTL_STEP_LOGS`]).
    pub const OTEL_LOGS_EXPORTER: &str = "OTEL_LOGS_EXPORTER";
}
