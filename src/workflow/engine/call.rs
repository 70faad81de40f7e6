//! Calling a template: dispatch by kind (with a Retry node first when the template retries),
//! and what a step or task does before its call: loop expansion (`withItems`, `withParam`,
//! `withSequence`), `when`, and its arguments.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Executor;
use super::hooks::HookSite;
use super::nodes::{NodeResult, Place};
use super::scope::Scope;
use crate::otlp::TraceContext;
use crate::workflow::expr;
use crate::workflow::record::Phase;
use crate::workflow::runner::Runner;
use crate::workflow::spec::{Step, Template, TemplateKind};
use crate::workflow::vars;

pub(super) type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The message of a steps or DAG node, and of its last group, that `failFast` ended (Argo's).
pub(super) const FAILED_FAST: &str = "template has failed or errored children and failFast enabled";

/// What a steps or DAG template lets its children start: at most `parallelism` at once, and,
/// with `failFast: true`, nothing new once one of them failed or errored (Argo's
/// `checkParallelism`; the children already running finish).
#[derive(Clone, Default)]
pub(super) struct Gate {
    slots: Option<Arc<Semaphore>>,
    /// Set when a child failed; `None` without `failFast`.
    failed: Option<Arc<AtomicBool>>,
    /// A call admitted already (a DAG task launched before `failFast` tripped) is never
    /// refused; it still waits for a slot and reports its failure.
    admitted: bool,
}

impl Gate {
    pub fn of(tmpl: &Template) -> Self {
        Self {
            slots: tmpl
                .parallelism
                .map(|n| Arc::new(Semaphore::new(n.max(1) as usize))),
            failed: (tmpl.fail_fast == Some(true)).then(Arc::default),
            admitted: false,
        }
    }

    /// This gate for a call that must start once it has a slot.
    pub fn admitted(&self) -> Self {
        Self {
            admitted: true,
            ..self.clone()
        }
    }

    /// Whether `failFast` stopped new children.
    pub fn tripped(&self) -> bool {
        self.failed
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// Waits for a slot; `None` when, by then, `failFast` says not to start.
    async fn enter(&self) -> Option<Option<OwnedSemaphorePermit>> {
        let permit = match &self.slots {
            Some(slots) => Some(slots.clone().acquire_owned().await.expect("never closed")),
            None => None,
        };
        (self.admitted || !self.tripped()).then_some(permit)
    }

    fn note(&self, phase: Phase) {
        if let Some(failed) = &self.failed
            && matches!(phase, Phase::Failed | Phase::Error)
        {
            failed.store(true, Ordering::SeqCst);
        }
    }
}

/// One expanded invocation of a step or task: node name, display name, item variables.
pub(super) struct Invocation {
    pub name: String,
    pub display: String,
    pub item_vars: Scope,
}

/// One invocation of a template, as Argo names it.
#[derive(Debug, Clone)]
pub(super) struct Call {
    pub name: String,
    pub display: String,
    pub template: String,
    /// Argument values, already substituted.
    pub args: Vec<(String, String)>,
    pub boundary: Option<String>,
    /// Set for the children of a Retry node.
    pub retry_index: Option<u32>,
    /// The attempt this call replaces (the previous child of a Retry node): its span is linked.
    pub replaces: Option<TraceContext>,
}

impl Call {
    pub fn place(&self) -> Place<'_> {
        Place {
            name: &self.name,
            display: &self.display,
            template: &self.template,
            boundary: self.boundary.as_deref(),
        }
    }

    /// A call of the same template under another name (the exit handler, a retry's attempt).
    pub fn named(name: String, display: String, template: String) -> Self {
        Self {
            name,
            display,
            template,
            args: Vec::new(),
            boundary: None,
            retry_index: None,
            replaces: None,
        }
    }
}

impl<R: Runner> Executor<R> {
    /// The call of the entrypoint: the root node, named as the run, with the workflow's
    /// parameters as the arguments its inputs declare.
    pub(super) fn entry_call(&self, parameters: &[(String, String)]) -> Call {
        let name = self.nodes.run_name().to_string();
        let template = self.wf.spec.entrypoint.clone();
        let args = self.wf.template(&template).map_or_else(Vec::new, |t| {
            t.inputs
                .parameters
                .iter()
                .filter_map(|p| parameters.iter().find(|(k, _)| k == &p.name).cloned())
                .collect()
        });
        Call {
            args,
            ..Call::named(name.clone(), name, template)
        }
    }

    pub(super) fn execute(self: Arc<Self>, call: Call) -> BoxFut<NodeResult> {
        Box::pin(async move {
            let Some(tmpl) = self.wf.template(&call.template).cloned() else {
                let message = format!("unknown template {}", call.template);
                return self.nodes.leaf(&call.place(), Phase::Error, message);
            };
            if tmpl.retry_strategy.is_some() && call.retry_index.is_none() {
                return self.execute_retry(call, tmpl).await;
            }
            match tmpl.kind() {
                Some(TemplateKind::Container | TemplateKind::Script) => {
                    self.run_pod(call, tmpl).await
                }
                Some(TemplateKind::Steps) => self.run_steps(call, tmpl).await,
                Some(TemplateKind::Dag) => self.run_dag(call, tmpl).await,
                Some(TemplateKind::Suspend) => self.run_suspend(call, tmpl).await,
                None => unreachable!("the loader checks template kinds"),
            }
        })
    }

    /// Expands a step or task into its invocations; `None` when it does not loop.
    pub(super) fn expand(
        &self,
        step: &Step,
        base_name: &str,
        scope: &Scope,
    ) -> Result<Option<Vec<Invocation>>, String> {
        let Some(items) = loop_items(step, scope)? else {
            return Ok(None);
        };
        Ok(Some(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let (name, item_vars) = vars::expand_item(base_name, i, item);
                    let (display, _) = vars::expand_item(&step.name, i, item);
                    Invocation {
                        name,
                        display,
                        item_vars,
                    }
                })
                .collect(),
        ))
    }

    /// Starts every expanded invocation of `step` at once, each in `scope` plus its item
    /// variables; steps groups and DAG tasks both fan out this way. An invocation that
    /// `failFast` kept from starting ends with no node (`None`).
    pub(super) fn spawn_invocations(
        self: &Arc<Self>,
        step: &Step,
        invocations: Vec<Invocation>,
        scope: &Scope,
        boundary: &str,
        gate: &Gate,
        hooked: bool,
    ) -> Vec<tokio::task::JoinHandle<Option<NodeResult>>> {
        invocations
            .into_iter()
            .map(|mut inv| {
                let mut local = scope.clone();
                local.extend(std::mem::take(&mut inv.item_vars));
                tokio::spawn(self.clone().invoke(
                    step.clone(),
                    inv,
                    local,
                    boundary.to_string(),
                    gate.clone(),
                    hooked,
                ))
            })
            .collect()
    }

    /// Runs one expanded invocation of `step`: `when`, arguments, then the template; with
    /// `hooked` (a step of a steps template, each loop item apart), its hooks around it.
    /// `None` when the gate's `failFast` kept it from starting: Argo creates no node then.
    pub(super) fn invoke(
        self: Arc<Self>,
        step: Step,
        invocation: Invocation,
        scope: Scope,
        boundary: String,
        gate: Gate,
        hooked: bool,
    ) -> BoxFut<Option<NodeResult>> {
        Box::pin(async move {
            let Invocation { name, display, .. } = invocation;
            let place = Place {
                name: &name,
                display: &display,
                template: &step.template,
                boundary: Some(&boundary),
            };
            if let Some(when) = &step.when {
                match decide_when(when, &scope) {
                    Ok(None) => {}
                    Ok(Some(skipped)) => {
                        return Some(self.nodes.leaf(&place, Phase::Skipped, skipped));
                    }
                    Err(e) => return Some(self.nodes.leaf(&place, Phase::Error, e)),
                }
            }
            let args = match arguments(&step.arguments, &scope) {
                Ok(args) => args,
                Err(e) => return Some(self.nodes.leaf(&place, Phase::Error, e)),
            };
            let _permit = gate.enter().await?;
            let body = self.clone().execute(Call {
                args,
                boundary: Some(boundary.clone()),
                ..Call::named(name.clone(), display.clone(), step.template.clone())
            });
            let r = if hooked {
                let site = HookSite {
                    node_name: &name,
                    status_prefix: format!("steps.{display}"),
                    outputs_prefix: format!("steps.{}", step.name),
                    boundary: &boundary,
                };
                self.with_hooks(&step, site, &scope, body).await
            } else {
                body.await
            };
            gate.note(r.phase);
            Some(r)
        })
    }
}

/// `None` when `when` holds; else the message of the Skipped node.
fn decide_when(when: &str, scope: &Scope) -> Result<Option<String>, String> {
    let w = vars::substitute(when, scope).map_err(|e| e.to_string())?;
    let holds = expr::eval_when(&w).map_err(|e| e.to_string())?;
    Ok((!holds).then(|| format!("when '{w}' evaluated false")))
}

/// Arguments with their variables substituted.
pub(super) fn arguments(
    args: &crate::workflow::spec::Arguments,
    scope: &Scope,
) -> Result<Vec<(String, String)>, String> {
    args.parameters
        .iter()
        .map(|a| {
            let raw = a.value.as_ref().map(|v| v.0.clone()).unwrap_or_default();
            vars::substitute(&raw, scope)
                .map(|v| (a.name.clone(), v))
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// The items a step loops over; `None` when it does not loop.
fn loop_items(step: &Step, scope: &Scope) -> Result<Option<Vec<serde_json::Value>>, String> {
    if let Some(items) = &step.with_items {
        let items = items
            .iter()
            .map(|item| match item {
                serde_json::Value::String(s) => vars::substitute(s, scope)
                    .map(serde_json::Value::String)
                    .map_err(|e| e.to_string()),
                other => Ok(other.clone()),
            })
            .collect::<Result<_, _>>()?;
        return Ok(Some(items));
    }
    if let Some(param) = &step.with_param {
        let text = vars::substitute(param, scope).map_err(|e| e.to_string())?;
        return match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Array(items)) => Ok(Some(items)),
            _ => Err(format!(
                "withParam value could not be parsed as a JSON list: {text}"
            )),
        };
    }
    let Some(seq) = &step.with_sequence else {
        return Ok(None);
    };
    let field = |v: &Option<crate::workflow::spec::Scalar>| {
        v.as_ref()
            .map(|v| vars::substitute(v.as_str(), scope).map_err(|e| e.to_string()))
            .transpose()
    };
    let (count, start, end) = (field(&seq.count)?, field(&seq.start)?, field(&seq.end)?);
    let items = vars::sequence(
        count.as_deref(),
        start.as_deref(),
        end.as_deref(),
        seq.format.as_deref(),
    )
    .map_err(|e| e.to_string())?;
    Ok(Some(
        items.into_iter().map(serde_json::Value::String).collect(),
    ))
}
