//! Variables: the `workflow.*` globals of a run, a template's parameter scope, the
//! `steps.X.*`/`tasks.X.*` variables a finished step or task binds, and the outputs a steps or
//! DAG template declares (with their global names).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::Executor;
use super::nodes::NodeResult;
use crate::workflow::load::LoadedWorkflow;
use crate::workflow::record::{Outputs, Parameter, Phase, RunRecord};
use crate::workflow::runner::Runner;
use crate::workflow::spec::{self, Template};
use crate::workflow::{expression, vars};

/// Variable name to value, as `{{...}}` substitution reads them.
pub(super) type Scope = HashMap<String, String>;

/// The `workflow.*` variables, growing as global outputs appear.
pub(super) struct Globals(Mutex<Scope>);

impl Globals {
    /// The variables a run starts with: its identity, metadata and parameters.
    pub fn new(record: &RunRecord, loaded: &LoadedWorkflow) -> Self {
        let wf = &loaded.workflow;
        let mut g = Scope::new();
        g.insert("workflow.name".into(), record.name.clone());
        g.insert("workflow.namespace".into(), record.namespace.clone());
        g.insert("workflow.uid".into(), record.trace_id.to_hex());
        g.insert("workflow.mainEntrypoint".into(), wf.spec.entrypoint.clone());
        g.insert(
            "workflow.creationTimestamp".into(),
            record.status.started_at.clone().unwrap_or_default(),
        );
        g.insert(
            "workflow.serviceAccountName".into(),
            wf.spec.service_account_name.clone().unwrap_or_default(),
        );
        for (k, v) in &wf.metadata.labels {
            g.insert(format!("workflow.labels.{k}"), v.clone());
        }
        for (k, v) in &wf.metadata.annotations {
            g.insert(format!("workflow.annotations.{k}"), v.clone());
        }
        let params_json: Vec<serde_json::Value> = loaded
            .parameters
            .iter()
            .map(|(k, v)| serde_json::json!({"name": k, "value": v}))
            .collect();
        g.insert(
            "workflow.parameters".into(),
            serde_json::Value::Array(params_json).to_string(),
        );
        for (k, v) in &loaded.parameters {
            g.insert(format!("workflow.parameters.{k}"), v.clone());
        }
        Self(Mutex::new(g))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Scope> {
        self.0.lock().expect("globals lock")
    }

    pub fn set(&self, name: String, value: String) {
        self.lock().insert(name, value);
    }

    pub fn snapshot(&self) -> Scope {
        self.lock().clone()
    }

    /// Copies every global into `scope` (outputs of earlier steps may have added some).
    pub fn refresh(&self, scope: &mut Scope) {
        for (k, v) in self.lock().iter() {
            scope.insert(k.clone(), v.clone());
        }
    }
}

impl<R: Runner> Executor<R> {
    /// The globals plus `inputs.parameters.*` of `tmpl` called with `args`; an input neither
    /// given nor defaulted is an error naming it.
    pub(super) fn scope_for(
        &self,
        tmpl: &Template,
        args: &[(String, String)],
    ) -> Result<Scope, String> {
        let mut scope = self.globals.snapshot();
        for p in &tmpl.inputs.parameters {
            let value = match args.iter().find(|(k, _)| k == &p.name) {
                Some((_, v)) => v.clone(),
                None => {
                    let raw = p
                        .value
                        .as_ref()
                        .or(p.default.as_ref())
                        .map(|v| v.0.clone())
                        .ok_or_else(|| format!("inputs.parameters.{} was not supplied", p.name))?;
                    vars::substitute(&raw, &scope).map_err(|e| e.to_string())?
                }
            };
            scope.insert(format!("inputs.parameters.{}", p.name), value);
        }
        Ok(scope)
    }

    /// Sets `workflow.outputs.parameters.<name>` and the workflow's output `name`.
    pub(super) fn set_global(&self, name: &str, value: &str) {
        self.globals.set(
            format!("workflow.outputs.parameters.{name}"),
            value.to_string(),
        );
        self.nodes.set_output(name, value);
    }

    /// The template's own outputs (steps and dag templates), and their global names.
    pub(super) fn template_outputs(
        &self,
        tmpl: &Template,
        scope: &Scope,
    ) -> Result<Outputs, String> {
        let mut outputs = Outputs::default();
        for p in &tmpl.outputs.parameters {
            let value = match output_value(p, scope) {
                Ok(v) => v,
                Err(e) => match p.value_from.as_ref().and_then(|vf| vf.default.as_ref()) {
                    Some(d) => d.0.clone(),
                    None => return Err(e.to_string()),
                },
            };
            if let Some(global) = &p.global_name {
                self.set_global(global, &value);
            }
            outputs.parameters.push(Parameter {
                name: p.name.clone(),
                value,
            });
        }
        Ok(outputs)
    }

    /// The outputs of a finished steps or DAG node: its template's when it succeeded, and an
    /// Error when they cannot be formed.
    pub(super) fn group_outputs(
        &self,
        tmpl: &Template,
        scope: &Scope,
        phase: &mut Phase,
        message: &mut Option<String>,
    ) -> Outputs {
        if *phase != Phase::Succeeded {
            return Outputs::default();
        }
        match self.template_outputs(tmpl, scope) {
            Ok(o) => o,
            Err(e) => {
                *phase = Phase::Error;
                *message = Some(e);
                Outputs::default()
            }
        }
    }
}

/// An output parameter of a steps or DAG template: its `valueFrom.expression` (its `{{...}}`
/// tags substituted first), its `valueFrom.parameter`, or its `value`.
fn output_value(p: &spec::Parameter, scope: &Scope) -> Result<String, vars::Unresolved> {
    let vf = p.value_from.as_ref();
    if let Some(text) = vf.and_then(|vf| vf.expression.as_deref()) {
        let text = vars::substitute(text, scope)?;
        return Ok(expression::eval_text(&text, scope)?);
    }
    let raw = match vf {
        Some(vf) => vf.parameter.clone().unwrap_or_default(),
        None => p.value.as_ref().map(|v| v.0.clone()).unwrap_or_default(),
    };
    vars::substitute(&raw, scope)
}

/// The `steps.<name>.*` / `tasks.<name>.*` variables after a step or task finished; loops
/// aggregate their Succeeded children as Argo does.
pub(super) fn bind_results(scope: &mut Scope, prefix: &str, results: &[NodeResult], is_loop: bool) {
    if is_loop {
        bind_loop_results(scope, prefix, results);
        return;
    }
    let Some(r) = results.first() else { return };
    scope.insert(format!("{prefix}.id"), r.id.clone());
    scope.insert(format!("{prefix}.status"), r.phase.as_str().into());
    if let Some(code) = &r.outputs.exit_code {
        scope.insert(format!("{prefix}.exitCode"), code.clone());
    }
    if let Some(result) = &r.outputs.result {
        scope.insert(format!("{prefix}.outputs.result"), result.clone());
    }
    for p in &r.outputs.parameters {
        scope.insert(
            format!("{prefix}.outputs.parameters.{}", p.name),
            p.value.clone(),
        );
    }
    if let Some(t) = &r.started_at {
        scope.insert(format!("{prefix}.startedAt"), t.clone());
    }
    if let Some(t) = &r.finished_at {
        scope.insert(format!("{prefix}.finishedAt"), t.clone());
    }
}

/// A loop's variables: JSON lists over its Succeeded children.
fn bind_loop_results(scope: &mut Scope, prefix: &str, results: &[NodeResult]) {
    let succeeded: Vec<&NodeResult> = results
        .iter()
        .filter(|r| r.phase == Phase::Succeeded)
        .collect();
    let params: Vec<serde_json::Value> = succeeded
        .iter()
        .filter(|r| !r.outputs.parameters.is_empty())
        .map(|r| {
            serde_json::Value::Object(
                r.outputs
                    .parameters
                    .iter()
                    .map(|p| (p.name.clone(), serde_json::Value::String(p.value.clone())))
                    .collect(),
            )
        })
        .collect();
    scope.insert(
        format!("{prefix}.outputs.parameters"),
        serde_json::Value::Array(params).to_string(),
    );
    let mut per_name: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for r in &succeeded {
        for p in &r.outputs.parameters {
            per_name
                .entry(p.name.clone())
                .or_default()
                .push(serde_json::Value::String(p.value.clone()));
        }
    }
    for (name, values) in per_name {
        scope.insert(
            format!("{prefix}.outputs.parameters.{name}"),
            serde_json::Value::Array(values).to_string(),
        );
    }
    let results_list: Vec<serde_json::Value> = succeeded
        .iter()
        .filter_map(|r| r.outputs.result.as_ref())
        .map(|text| {
            serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.clone()))
        })
        .collect();
    scope.insert(
        format!("{prefix}.outputs.result"),
        serde_json::Value::Array(results_list).to_string(),
    );
}
