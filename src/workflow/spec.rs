//! The Workflow YAML, typed: the subset of Argo's `Workflow` that `obsctl run` executes. Every
//! struct refuses fields it does not know, so anything outside the subset (artifacts, resource
//! templates, ...) is rejected at parse time with its path, line and column. Fields only a
//! Kubernetes scheduler acts on ([`KubernetesOnly`]) are accepted and ignored.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::expr::Depends;

/// A field a Kubernetes scheduler or kubelet acts on and Argo therefore accepts; a local run
/// has no use for it, so it is kept as written (it is part of the template's JSON a step gets)
/// and otherwise ignored.
pub type KubernetesOnly = Option<serde_json::Value>;

/// The names of the [`KubernetesOnly`] fields that are set, as the YAML spells them.
macro_rules! kubernetes_only_set {
    ($self:ident: $($field:ident => $name:literal),+ $(,)?) => {{
        let mut set = Vec::new();
        $(if $self.$field.is_some() { set.push($name); })+
        set
    }};
}

/// A scalar Argo accepts where it means a string (`AnyString`, `IntOrString`): YAML numbers and
/// booleans are kept as their text, so `count: 5` and `count: "5"` mean the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

impl Scalar {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workflow {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: WorkflowSpec,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub generate_name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkflowSpec {
    pub entrypoint: String,
    #[serde(default)]
    pub arguments: Arguments,
    pub templates: Vec<Template>,
    #[serde(default)]
    pub on_exit: Option<String>,
    #[serde(default, skip_serializing_if = "Hooks::is_empty")]
    pub hooks: Hooks,
    #[serde(default)]
    pub parallelism: Option<u32>,
    #[serde(default)]
    pub active_deadline_seconds: Option<Scalar>,
    /// Accepted for compatibility; a local run has no service account.
    #[serde(default)]
    pub service_account_name: Option<String>,
    /// Fields merged into every template (see `load`), kept as written until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_defaults: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_name: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automount_service_account_token: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_aliases: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_priority_class_name: KubernetesOnly,
    #[serde(default, rename = "podGC", skip_serializing_if = "Option::is_none")]
    pub pod_gc: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_metadata: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_disruption_budget: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_strategy: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_policy: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_config: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_logs: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_metadata: KubernetesOnly,
}

impl WorkflowSpec {
    /// The Kubernetes-only fields set on this workflow spec, ignored by a local run.
    pub fn kubernetes_only(&self) -> Vec<&'static str> {
        kubernetes_only_set!(self:
            node_selector => "nodeSelector",
            tolerations => "tolerations",
            affinity => "affinity",
            priority => "priority",
            priority_class_name => "priorityClassName",
            security_context => "securityContext",
            scheduler_name => "schedulerName",
            automount_service_account_token => "automountServiceAccountToken",
            host_aliases => "hostAliases",
            volumes => "volumes",
            pod_priority_class_name => "podPriorityClassName",
            pod_gc => "podGC",
            pod_metadata => "podMetadata",
            pod_disruption_budget => "podDisruptionBudget",
            ttl_strategy => "ttlStrategy",
            host_network => "hostNetwork",
            dns_policy => "dnsPolicy",
            dns_config => "dnsConfig",
            image_pull_secrets => "imagePullSecrets",
            executor => "executor",
            archive_logs => "archiveLogs",
            workflow_metadata => "workflowMetadata",
        )
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Arguments {
    #[serde(default)]
    pub parameters: Vec<Parameter>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Parameter {
    pub name: String,
    #[serde(default)]
    pub value: Option<Scalar>,
    #[serde(default)]
    pub default: Option<Scalar>,
    #[serde(default)]
    pub value_from: Option<ValueFrom>,
    #[serde(default)]
    pub global_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default, rename = "enum")]
    pub enum_values: Option<Vec<Scalar>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValueFrom {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub parameter: Option<String>,
    /// An expression over the steps or tasks of a steps or dag template.
    #[serde(default)]
    pub expression: Option<String>,
    #[serde(default)]
    pub default: Option<Scalar>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inputs {
    #[serde(default)]
    pub parameters: Vec<Parameter>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Outputs {
    #[serde(default)]
    pub parameters: Vec<Parameter>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateMeta {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Template {
    pub name: String,
    #[serde(default)]
    pub inputs: Inputs,
    #[serde(default)]
    pub outputs: Outputs,
    #[serde(default)]
    pub metadata: TemplateMeta,
    #[serde(default)]
    pub container: Option<Container>,
    #[serde(default)]
    pub script: Option<Script>,
    #[serde(default)]
    pub steps: Option<Vec<Vec<Step>>>,
    #[serde(default)]
    pub dag: Option<Dag>,
    #[serde(default)]
    pub suspend: Option<Suspend>,
    /// Accepted; nothing is cached locally, so a memoized step always runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memoize: Option<serde_json::Value>,
    #[serde(default)]
    pub retry_strategy: Option<RetryStrategy>,
    /// A duration (`"10s"`, `"2m"`) or seconds; only for container and script templates.
    #[serde(default)]
    pub timeout: Option<Scalar>,
    #[serde(default)]
    pub active_deadline_seconds: Option<Scalar>,
    #[serde(default)]
    pub parallelism: Option<u32>,
    /// Steps and dag templates: once a child failed, start no more; the template fails when
    /// the running ones end.
    #[serde(default)]
    pub fail_fast: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_name: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automount_service_account_token: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_aliases: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_priority_class_name: KubernetesOnly,
    /// `obsctl instrument` adds these (the shim's copy and the collector check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_containers: KubernetesOnly,
}

/// What kind of node a template makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateKind {
    Container,
    Script,
    Steps,
    Dag,
    Suspend,
}

impl Template {
    /// `None` when the template has none or several of container/script/steps/dag/suspend.
    pub fn kind(&self) -> Option<TemplateKind> {
        let kinds = [
            (self.container.is_some(), TemplateKind::Container),
            (self.script.is_some(), TemplateKind::Script),
            (self.steps.is_some(), TemplateKind::Steps),
            (self.dag.is_some(), TemplateKind::Dag),
            (self.suspend.is_some(), TemplateKind::Suspend),
        ];
        let mut set = kinds.iter().filter(|(present, _)| *present);
        match (set.next(), set.next()) {
            (Some((_, kind)), None) => Some(*kind),
            _ => None,
        }
    }

    /// The Kubernetes-only fields set on this template or its container, ignored by a local run.
    pub fn kubernetes_only(&self) -> Vec<&'static str> {
        let mut set = kubernetes_only_set!(self:
            node_selector => "nodeSelector",
            tolerations => "tolerations",
            affinity => "affinity",
            priority => "priority",
            priority_class_name => "priorityClassName",
            security_context => "securityContext",
            scheduler_name => "schedulerName",
            automount_service_account_token => "automountServiceAccountToken",
            host_aliases => "hostAliases",
            volumes => "volumes",
            service_account_name => "serviceAccountName",
            pod_priority_class_name => "podPriorityClassName",
            init_containers => "initContainers",
        );
        if let Some(c) = &self.container {
            set.extend(c.kubernetes_only());
        }
        if let Some(s) = &self.script {
            set.extend(s.kubernetes_only());
        }
        set
    }

    pub fn is_pod(&self) -> bool {
        matches!(
            self.kind(),
            Some(TemplateKind::Container | TemplateKind::Script)
        )
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    #[serde(default)]
    pub name: Option<String>,
    pub image: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    #[serde(default)]
    pub working_dir: Option<String>,
    /// Accepted for compatibility; a local process has no image to pull.
    #[serde(default)]
    pub image_pull_policy: Option<String>,
    /// Accepted for compatibility; requests and limits are not enforced locally.
    #[serde(default)]
    pub resources: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_message_path: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_message_policy: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: KubernetesOnly,
}

impl Container {
    /// The Kubernetes-only fields set on this container, ignored by a local run.
    pub fn kubernetes_only(&self) -> Vec<&'static str> {
        kubernetes_only_set!(self:
            security_context => "securityContext",
            volume_mounts => "volumeMounts",
            ports => "ports",
            liveness_probe => "livenessProbe",
            readiness_probe => "readinessProbe",
            startup_probe => "startupProbe",
            lifecycle => "lifecycle",
            termination_message_path => "terminationMessagePath",
            termination_message_policy => "terminationMessagePolicy",
            stdin => "stdin",
            tty => "tty",
        )
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Script {
    #[serde(default)]
    pub name: Option<String>,
    pub image: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub image_pull_policy: Option<String>,
    #[serde(default)]
    pub resources: Option<serde_json::Value>,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_message_path: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_message_policy: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: KubernetesOnly,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: KubernetesOnly,
}

impl Script {
    /// The Kubernetes-only fields set on this script, ignored by a local run.
    pub fn kubernetes_only(&self) -> Vec<&'static str> {
        kubernetes_only_set!(self:
            security_context => "securityContext",
            volume_mounts => "volumeMounts",
            ports => "ports",
            liveness_probe => "livenessProbe",
            readiness_probe => "readinessProbe",
            startup_probe => "startupProbe",
            lifecycle => "lifecycle",
            termination_message_path => "terminationMessagePath",
            termination_message_policy => "terminationMessagePolicy",
            stdin => "stdin",
            tty => "tty",
        )
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContinueOn {
    #[serde(default)]
    pub error: bool,
    #[serde(default)]
    pub failed: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sequence {
    #[serde(default)]
    pub count: Option<Scalar>,
    #[serde(default)]
    pub start: Option<Scalar>,
    #[serde(default)]
    pub end: Option<Scalar>,
    #[serde(default)]
    pub format: Option<String>,
}

/// One entry of `steps` (inner lists run in parallel) or of `dag.tasks`: the fields both share.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    pub name: String,
    pub template: String,
    #[serde(default)]
    pub arguments: Arguments,
    #[serde(default)]
    pub when: Option<String>,
    #[serde(default)]
    pub with_items: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub with_param: Option<String>,
    #[serde(default)]
    pub with_sequence: Option<Sequence>,
    #[serde(default)]
    pub continue_on: Option<ContinueOn>,
    /// The template run when this step's node ends (`hooks.exit` says the same).
    #[serde(default)]
    pub on_exit: Option<String>,
    #[serde(default, skip_serializing_if = "Hooks::is_empty")]
    pub hooks: Hooks,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DagTask {
    pub name: String,
    pub template: String,
    #[serde(default)]
    pub arguments: Arguments,
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default)]
    pub depends: Option<DependsExpr>,
    #[serde(default)]
    pub when: Option<String>,
    #[serde(default)]
    pub with_items: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub with_param: Option<String>,
    #[serde(default)]
    pub with_sequence: Option<Sequence>,
    #[serde(default)]
    pub continue_on: Option<ContinueOn>,
    /// The template run when this step's node ends (`hooks.exit` says the same).
    #[serde(default)]
    pub on_exit: Option<String>,
    #[serde(default, skip_serializing_if = "Hooks::is_empty")]
    pub hooks: Hooks,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dag {
    pub tasks: Vec<DagTask>,
    #[serde(default)]
    pub target: Option<String>,
    /// Argo's default is `true`: the first failed target names the DAG's phase; with `false`
    /// the last one does. Either way every ready task starts, as on Argo (`engine::dag`).
    #[serde(default)]
    pub fail_fast: Option<bool>,
}

/// Lifecycle hooks by name: `exit` runs when its node (or the workflow) ends; any other runs
/// once its `expression` holds.
pub type Hooks = BTreeMap<String, LifecycleHook>;

/// The name of the exit hook.
pub const EXIT_HOOK: &str = "exit";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LifecycleHook {
    pub template: String,
    #[serde(default)]
    pub arguments: Arguments,
    #[serde(default)]
    pub expression: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backoff {
    #[serde(default)]
    pub duration: Option<Scalar>,
    #[serde(default)]
    pub factor: Option<Scalar>,
    #[serde(default)]
    pub cap: Option<Scalar>,
    #[serde(default)]
    pub max_duration: Option<Scalar>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryStrategy {
    #[serde(default)]
    pub limit: Option<Scalar>,
    #[serde(default)]
    pub retry_policy: Option<RetryPolicy>,
    #[serde(default)]
    pub backoff: Option<Backoff>,
    /// Retry only while this holds, over `lastRetry.exitCode/status/duration/message`.
    #[serde(default)]
    pub expression: Option<String>,
}

/// A `suspend` template: a node that waits. obsctl runs only those with a `duration` (`"20"`
/// seconds, or `"2m"`); one without waits for `argo resume`, which has no local counterpart.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Suspend {
    #[serde(default)]
    pub duration: Option<Scalar>,
}

/// `retryStrategy.retryPolicy`; Argo's default is `OnFailure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum RetryPolicy {
    Always,
    OnFailure,
    OnError,
    /// A transient error is a Kubernetes condition; a local run never has one.
    OnTransientError,
}

/// A DAG task's `depends`, parsed when the file is read (a syntax error is refused with its
/// position); it serializes back to the text it was written as.
#[derive(Debug, Clone, PartialEq)]
pub struct DependsExpr {
    text: String,
    parsed: Depends,
}

impl DependsExpr {
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn parsed(&self) -> &Depends {
        &self.parsed
    }
}

impl<'de> Deserialize<'de> for DependsExpr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Parsed inside the visitor, so that the parser marks the error at the string itself.
        struct DependsVisitor;
        impl Visitor<'_> for DependsVisitor {
            type Value = DependsExpr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a depends expression such as `A && (B.Failed || C)`")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<DependsExpr, E> {
                let parsed = Depends::parse(text).map_err(E::custom)?;
                Ok(DependsExpr {
                    text: text.to_string(),
                    parsed,
                })
            }
        }
        deserializer.deserialize_str(DependsVisitor)
    }
}

impl Serialize for DependsExpr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl Workflow {
    pub fn template(&self, name: &str) -> Option<&Template> {
        self.spec.templates.iter().find(|t| t.name == name)
    }
}
