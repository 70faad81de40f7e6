//! `obsctl instrument`: a Workflow (or WorkflowTemplate) made observable for a real cluster,
//! without editing it by hand. Every Pod template (container or script) gets:
//!
//! - an `emptyDir` volume and an init container, `obsctl-install`, that copies obsctl from the
//!   obsctl image into it (the way Argo copies its own executor into every pod), because the
//!   step's image has no obsctl;
//! - an init container, `obsctl-check`, running `obsctl shim --check` against the collector,
//!   whose failure either only warns or fails the pod ([`CheckPolicy`]);
//! - its main container started through `/var/run/obsctl/obsctl shim --agent … --step … --`;
//! - the OTEL and correlation environment, the labels `agent`, `stepName` (plus `pr`, `taskId`
//!   when the workflow declares them) and the annotations `trace.context` and `commitSha`.
//!
//! Nothing else changes: the document is edited as a YAML tree in its own key order, and each
//! addition replaces the same-named one, so instrumenting the output again changes nothing.

use std::path::{Path, PathBuf};

use serde_norway::{Mapping, Value};

use crate::conventions::{annotation, env, resource};
use crate::workflow::telemetry::STEP_OTLP_TIMEOUT_MS;

/// Where the init container puts obsctl, in every instrumented pod.
pub const SHIM_DIR: &str = "/var/run/obsctl";
/// The obsctl the main container starts through.
pub const SHIM_BIN: &str = "/var/run/obsctl/obsctl";
/// Where obsctl sits in the obsctl image (`scripts/build-images.sh` puts it there too).
pub const IMAGE_BIN: &str = "/bin/obsctl";
pub const VOLUME: &str = "obsctl-shim";
pub const INSTALL_CONTAINER: &str = "obsctl-install";
pub const CHECK_CONTAINER: &str = "obsctl-check";
/// The image that carries obsctl, pinned to this release.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/5dlabs/obsctl:", env!("CARGO_PKG_VERSION"));
/// Where a cluster's workflow pods reach the collector (`deploy/`'s Service).
pub const DEFAULT_ENDPOINT: &str = "http://otel-collector.observability.svc:4317";

/// What the collector check does when the collector does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckPolicy {
    /// Print a warning in the init container's log and start the step anyway: the shim spools
    /// what it cannot deliver, and a step never fails for its telemetry.
    Warn,
    /// Fail the pod before the step starts (Argo marks the node Error).
    Fail,
}

/// How to instrument.
#[derive(Debug, Clone)]
pub struct Options {
    /// The image whose `/bin/obsctl` is copied into each pod and runs the check.
    pub image: String,
    pub otlp_endpoint: String,
    pub otlp_protocol: String,
    pub sampler_ratio: String,
    pub check: CheckPolicy,
    /// The steps' parent context. `None`: one trace per workflow, its id derived from the
    /// workflow's uid by an Argo expression; `obsctl run --argo-server` gives its root span's.
    pub traceparent: Option<String>,
    /// `deployment.environment` when the workflow declares no `env` parameter.
    pub environment: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            image: DEFAULT_IMAGE.into(),
            otlp_endpoint: DEFAULT_ENDPOINT.into(),
            otlp_protocol: crate::otlp::export::DEFAULT_PROTOCOL.as_str().into(),
            sampler_ratio: "1.0".into(),
            check: CheckPolicy::Warn,
            traceparent: None,
            environment: "cluster".into(),
        }
    }
}

/// The `traceparent` of a workflow submitted without obsctl: trace id = the workflow's uid
/// without dashes, parent span id = its first 16 hex digits (no span carries that id: the steps'
/// spans are the trace's roots, grouped by the workflow).
const UID_TRACEPARENT: &str = "00-{{=sprig.replace('-', '', workflow.uid)}}-{{=sprig.substr(0, 16, sprig.replace('-', '', workflow.uid))}}-01";

#[derive(Debug, thiserror::Error)]
pub enum InstrumentError {
    #[error("cannot read {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {location}not valid YAML: {message}")]
    Parse {
        file: PathBuf,
        location: String,
        message: String,
    },
    #[error(
        "{file}: kind is {found:?}; expected Workflow, WorkflowTemplate or ClusterWorkflowTemplate"
    )]
    Kind { file: PathBuf, found: String },
    #[error("{file}: {path}: expected {expected}")]
    Shape {
        file: PathBuf,
        path: String,
        expected: &'static str,
    },
}

/// What instrumenting did, for the command's summary on stderr.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Pod templates whose main container now starts through the shim.
    pub wrapped: Vec<String>,
    /// Pod templates left unwrapped, with why (they still get the environment and labels).
    pub unwrapped: Vec<(String, &'static str)>,
    /// Each wrapped template's agent and step, as its span is named (`agent/step`).
    pub steps: std::collections::BTreeMap<String, (String, String)>,
}

/// Copies the running obsctl into `dir` as `obsctl`, executable: what the `obsctl-install` init
/// container does in each pod (`obsctl shim --install DIR`).
pub fn install_self(dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let target = dir.join("obsctl");
    std::fs::create_dir_all(dir)?;
    std::fs::copy(std::env::current_exe()?, &target)?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
    Ok(target)
}

/// Reads and instruments `file`.
pub fn instrument_file(file: &Path, opts: &Options) -> Result<(Value, Report), InstrumentError> {
    let text = std::fs::read_to_string(file).map_err(|source| InstrumentError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    instrument_text(&text, file, opts)
}

/// Parses and instruments a workflow document; `file` names it in errors.
pub fn instrument_text(
    text: &str,
    file: &Path,
    opts: &Options,
) -> Result<(Value, Report), InstrumentError> {
    let mut doc: Value = serde_norway::from_str(text).map_err(|e| InstrumentError::Parse {
        file: file.to_path_buf(),
        location: e
            .location()
            .map(|l| format!("line {}, column {}: ", l.line(), l.column()))
            .unwrap_or_default(),
        message: e.to_string(),
    })?;
    let report = instrument(&mut doc, file, opts)?;
    Ok((doc, report))
}

/// Instruments a parsed workflow in place.
pub fn instrument(doc: &mut Value, file: &Path, opts: &Options) -> Result<Report, InstrumentError> {
    let shape = |path: &str, expected| InstrumentError::Shape {
        file: file.to_path_buf(),
        path: path.to_string(),
        expected,
    };
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    if !matches!(
        kind,
        "Workflow" | "WorkflowTemplate" | "ClusterWorkflowTemplate"
    ) {
        return Err(InstrumentError::Kind {
            file: file.to_path_buf(),
            found: kind.to_string(),
        });
    }
    let workflow_agent = doc
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(|l| l.get("agent"))
        .and_then(Value::as_str)
        .map(String::from);
    let spec = doc
        .get_mut("spec")
        .and_then(Value::as_mapping_mut)
        .ok_or_else(|| shape("spec", "a mapping"))?;
    let declared = declared_parameters(spec);
    let env = Env::new(opts, &declared);
    let templates = spec
        .get_mut("templates")
        .and_then(Value::as_sequence_mut)
        .ok_or_else(|| shape("spec.templates", "a list of templates"))?;
    let mut report = Report::default();
    for (i, template) in templates.iter_mut().enumerate() {
        let template = template
            .as_mapping_mut()
            .ok_or_else(|| shape(&format!("spec.templates[{i}]"), "a mapping"))?;
        let name = template
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| shape(&format!("spec.templates[{i}].name"), "a string"))?
            .to_string();
        let Some(main_key) = ["container", "script"]
            .into_iter()
            .find(|k| template.contains_key(*k))
        else {
            continue;
        };
        let identity = Identity::of(template, &name, workflow_agent.as_deref());
        let main = template
            .get_mut(main_key)
            .and_then(Value::as_mapping_mut)
            .ok_or_else(|| shape(&format!("spec.templates[{i}].{main_key}"), "a mapping"))?;
        match wrap_command(main, &identity) {
            Ok(()) => {
                report.wrapped.push(name.clone());
                report.steps.insert(
                    name.clone(),
                    (identity.agent.clone(), identity.step.clone()),
                );
            }
            Err(why) => report.unwrapped.push((name.clone(), why)),
        }
        upsert_named(main, "volumeMounts", mount());
        for var in &env.main {
            upsert_named(main, "env", var.clone());
        }
        add_pod_parts(template, opts, &env);
        label(template, &identity, &env, &declared);
    }
    Ok(report)
}

/// The names of `spec.arguments.parameters`.
fn declared_parameters(spec: &Mapping) -> Vec<String> {
    spec.get("arguments")
        .and_then(|a| a.get("parameters"))
        .and_then(Value::as_sequence)
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p.get("name").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A step's agent and step name, as the local executor names them: the template's `agent` and
/// `step` labels, else the workflow's `agent` label, else the template's name.
struct Identity {
    agent: String,
    step: String,
}

impl Identity {
    fn of(template: &Mapping, name: &str, workflow_agent: Option<&str>) -> Self {
        let label = |key: &str| {
            template
                .get("metadata")
                .and_then(|m| m.get("labels"))
                .and_then(|l| l.get(key))
                .and_then(Value::as_str)
                .map(String::from)
        };
        Self {
            agent: label("agent")
                .or_else(|| workflow_agent.map(String::from))
                .unwrap_or_else(|| name.to_string()),
            step: label("step").unwrap_or_else(|| name.to_string()),
        }
    }
}

/// Prefixes the main container's command with the shim. Argo appends a script template's file
/// to `command`, so a script runs as `obsctl shim … -- python /argo/staging/script` too.
fn wrap_command(main: &mut Mapping, id: &Identity) -> Result<(), &'static str> {
    let Some(command) = main.get_mut("command").and_then(Value::as_sequence_mut) else {
        return Err("no command: the image's entrypoint is not known here");
    };
    if command.first().and_then(Value::as_str) == Some(SHIM_BIN) {
        return Ok(());
    }
    let prefix = [
        SHIM_BIN, "shim", "--agent", &id.agent, "--step", &id.step, "--",
    ];
    let mut wrapped: Vec<Value> = prefix.iter().map(|s| Value::from(*s)).collect();
    wrapped.append(command);
    *command = wrapped;
    Ok(())
}

/// The environment of the main container and of the check.
struct Env {
    main: Vec<Value>,
    check: Vec<Value>,
    traceparent: String,
}

impl Env {
    fn new(opts: &Options, declared: &[String]) -> Self {
        let param = |name: &str| {
            declared
                .iter()
                .any(|d| d == name)
                .then(|| format!("{{{{workflow.parameters.{name}}}}}"))
        };
        let environment = param("env").unwrap_or_else(|| opts.environment.clone());
        let traceparent = opts
            .traceparent
            .clone()
            .unwrap_or_else(|| UID_TRACEPARENT.to_string());
        let exporter = [
            (env::OTEL_EXPORTER_OTLP_ENDPOINT, opts.otlp_endpoint.clone()),
            (env::OTEL_EXPORTER_OTLP_PROTOCOL, opts.otlp_protocol.clone()),
            (env::OTEL_EXPORTER_OTLP_TIMEOUT, STEP_OTLP_TIMEOUT_MS.into()),
        ];
        let mut main: Vec<(&str, String)> = exporter.to_vec();
        main.extend([
            (
                env::OTEL_SERVICE_NAME,
                resource::DEFAULT_SERVICE_NAME.into(),
            ),
            (
                env::OTEL_RESOURCE_ATTRIBUTES,
                format!(
                    "{}={},{}={environment},{}={{{{workflow.namespace}}}},{}={{{{pod.name}}}}",
                    resource::SERVICE_NAME,
                    resource::DEFAULT_SERVICE_NAME,
                    resource::DEPLOYMENT_ENVIRONMENT,
                    resource::K8S_NAMESPACE,
                    resource::K8S_POD_NAME,
                ),
            ),
            (env::OTEL_TRACES_SAMPLER, "parentbased_traceidratio".into()),
            (env::OTEL_TRACES_SAMPLER_ARG, opts.sampler_ratio.clone()),
            (env::OTEL_METRICS_EXPORTER, "otlp".into()),
            (env::OTEL_LOGS_EXPORTER, "none".into()),
            (env::NAMESPACE, "{{workflow.namespace}}".into()),
            (env::TRACEPARENT, traceparent.clone()),
            (env::OBSCTL_SPAN_ID_FROM, "node".into()),
        ]);
        for (var, names) in [
            (env::REPO, &["repo"][..]),
            (env::PR_NUMBER, &["prNumber", "pr"][..]),
            (env::TASK_ID, &["taskId"][..]),
            (env::COMMIT_SHA, &["commitSha"][..]),
            (env::REF, &["ref"][..]),
        ] {
            if let Some(value) = names.iter().find_map(|n| param(n)) {
                main.push((var, value));
            }
        }
        let as_values = |vars: &[(&str, String)]| -> Vec<Value> {
            vars.iter()
                .map(|(k, v)| named(k, [("value", Value::from(v.as_str()))]))
                .collect()
        };
        Self {
            main: as_values(&main),
            check: as_values(&exporter),
            traceparent,
        }
    }
}

/// The pod's volume and its two init containers, replacing same-named ones.
fn add_pod_parts(template: &mut Mapping, opts: &Options, env: &Env) {
    upsert_named(
        template,
        "volumes",
        named(VOLUME, [("emptyDir", Value::Mapping(Mapping::new()))]),
    );
    let install = named(
        INSTALL_CONTAINER,
        [
            ("image", Value::from(opts.image.as_str())),
            (
                "command",
                strings(&[IMAGE_BIN, "shim", "--install", SHIM_DIR]),
            ),
            ("volumeMounts", Value::Sequence(vec![mount()])),
        ],
    );
    let mut check_command = vec![IMAGE_BIN, "shim", "--check"];
    if opts.check == CheckPolicy::Warn {
        check_command.push("--warn-only");
    }
    let check = named(
        CHECK_CONTAINER,
        [
            ("image", Value::from(opts.image.as_str())),
            ("command", strings(&check_command)),
            ("env", Value::Sequence(env.check.clone())),
        ],
    );
    upsert_named(template, "initContainers", install);
    upsert_named(template, "initContainers", check);
}

/// Labels and annotations of the step's pod (seed 000, subtask 4). `repo` holds a `/`, which a
/// label value cannot: it is an annotation.
fn label(template: &mut Mapping, id: &Identity, env: &Env, declared: &[String]) {
    let metadata = child_mapping(template, "metadata");
    let labels = child_mapping(metadata, "labels");
    for (key, value) in [("agent", &id.agent), ("stepName", &id.step)] {
        if !labels.contains_key(key) && is_label_value(value) {
            labels.insert(key.into(), value.as_str().into());
        }
    }
    for name in ["pr", "taskId"] {
        if declared.iter().any(|d| d == name) {
            labels.insert(
                name.into(),
                format!("{{{{workflow.parameters.{name}}}}}").into(),
            );
        }
    }
    let annotations = child_mapping(metadata, "annotations");
    annotations.insert(
        annotation::TRACE_CONTEXT.into(),
        env.traceparent.as_str().into(),
    );
    for name in [annotation::COMMIT_SHA, "repo"] {
        if declared.iter().any(|d| d == name) {
            annotations.insert(
                name.into(),
                format!("{{{{workflow.parameters.{name}}}}}").into(),
            );
        }
    }
}

/// A Kubernetes label value: at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends.
fn is_label_value(value: &str) -> bool {
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    value.len() <= 63
        && ends_ok(value.chars().next())
        && ends_ok(value.chars().last())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn mount() -> Value {
    named(VOLUME, [("mountPath", Value::from(SHIM_DIR))])
}

fn strings(items: &[&str]) -> Value {
    Value::Sequence(items.iter().map(|s| Value::from(*s)).collect())
}

/// `{name: NAME, k: v, …}`.
fn named<const N: usize>(name: &str, fields: [(&str, Value); N]) -> Value {
    let mut m = Mapping::new();
    m.insert("name".into(), name.into());
    for (k, v) in fields {
        m.insert(k.into(), v);
    }
    Value::Mapping(m)
}

/// The mapping under `key`, created (empty) when absent or not a mapping.
fn child_mapping<'a>(parent: &'a mut Mapping, key: &str) -> &'a mut Mapping {
    let slot = parent
        .entry(key.into())
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if !slot.is_mapping() {
        *slot = Value::Mapping(Mapping::new());
    }
    slot.as_mapping_mut().expect("just made a mapping")
}

/// Puts `item` into the list under `key` (created when absent), replacing the entry with the
/// same `name` in place, else appending it.
fn upsert_named(parent: &mut Mapping, key: &str, item: Value) {
    let slot = parent
        .entry(key.into())
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if !slot.is_sequence() {
        *slot = Value::Sequence(Vec::new());
    }
    let list = slot.as_sequence_mut().expect("just made a list");
    let name = item.get("name").cloned();
    match list.iter_mut().find(|e| e.get("name") == name.as_ref()) {
        Some(existing) => *existing = item,
        None => list.push(item),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WF: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: t-
spec:
  entrypoint: main
  arguments:
    parameters:
    - name: repo
      value: a/b
    - name: commitSha
      value: abc
  templates:
  - name: main
    steps:
    - - name: s
        template: hello
  - name: hello
    metadata:
      labels:
        agent: rex
    container:
      image: busybox
      command: [echo]
      args: [hi]
      env:
      - name: KEEP
        value: "1"
  - name: bare
    container:
      image: busybox
      args: [hi]
"#;

    fn run(text: &str) -> (Value, Report) {
        instrument_text(text, Path::new("t.yaml"), &Options::default()).unwrap()
    }

    #[test]
    fn wraps_the_main_container_and_keeps_its_own_settings() {
        let (doc, report) = run(WF);
        assert_eq!(report.wrapped, ["hello"]);
        assert_eq!(report.unwrapped[0].0, "bare");
        let hello = &doc["spec"]["templates"][1];
        let command: Vec<&str> = hello["container"]["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            command,
            [
                SHIM_BIN, "shim", "--agent", "rex", "--step", "hello", "--", "echo"
            ]
        );
        assert_eq!(hello["container"]["args"][0], "hi");
        assert_eq!(hello["container"]["env"][0]["name"], "KEEP");
        assert_eq!(hello["metadata"]["labels"]["stepName"], "hello");
        assert_eq!(
            hello["metadata"]["annotations"]["commitSha"],
            "{{workflow.parameters.commitSha}}"
        );
        assert_eq!(hello["initContainers"][0]["name"], INSTALL_CONTAINER);
        assert_eq!(
            hello["initContainers"][1]["command"][3].as_str(),
            Some("--warn-only")
        );
        // The steps template is no pod: untouched.
        assert!(doc["spec"]["templates"][0].get("initContainers").is_none());
    }

    #[test]
    fn instrumenting_twice_changes_nothing() {
        let (once, _) = run(WF);
        let text = serde_norway::to_string(&once).unwrap();
        let (twice, _) = run(&text);
        assert_eq!(once, twice);
    }

    #[test]
    fn bad_input_names_file_line_and_what_was_expected() {
        let err = instrument_text("kind: [", Path::new("x.yaml"), &Options::default())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("x.yaml: line "), "{err}");
        let err = instrument_text("kind: Pod\n", Path::new("x.yaml"), &Options::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("kind is \"Pod\""), "{err}");
        let err = instrument_text(
            "kind: Workflow\nspec:\n  templates: 3\n",
            Path::new("x.yaml"),
            &Options::default(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, "x.yaml: spec.templates: expected a list of templates");
    }

    #[test]
    fn label_values_follow_kubernetes_rules() {
        assert!(is_label_value("deploy-preview"));
        assert!(!is_label_value("a/b"));
        assert!(!is_label_value("-a"));
        assert!(!is_label_value(&"x".repeat(64)));
    }
}
