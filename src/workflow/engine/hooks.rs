//! Exit handlers and lifecycle hooks, named and linked as Argo does.
//!
//! - The workflow's exit handler (`spec.onExit`, or `spec.hooks.exit`) runs after the
//!   entrypoint whatever its phase, as `<wf>.onExit`, with `{{workflow.status}}`,
//!   `{{workflow.duration}}` and `{{workflow.failures}}` bound; a failing handler fails a workflow
//!   that succeeded.
//! - Any other hook fires once its `expression` holds, as `<node>.hooks.<name>`, a child of the
//!   node it belongs to. A workflow hook sees the globals, checked when the run starts
//!   (`workflow.status` Running) and when the entrypoint ended (its phase); a step's or task's
//!   hook sees its scope with `steps.<name>.status` (or `tasks.`), checked as the step starts
//!   (Running) and when it ends.
//! - A step's or task's exit hook (`onExit`, or `hooks.exit`) runs as `<node>.onExit` after the
//!   node completed (not when it was skipped), its arguments seeing the node's outputs.
//! - An exit hook that names no arguments gets the workflow's, as in Argo.
//!
//! The node waits for its hooks; as in Argo, a hook's phase does not change its node's.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::task::JoinHandle;

use super::Executor;
use super::call::{BoxFut, Call, arguments};
use super::nodes::{NodeResult, Place};
use super::scope::{Scope, bind_results};
use crate::workflow::expression;
use crate::workflow::record::Phase;
use crate::workflow::runner::Runner;
use crate::workflow::spec::{Arguments, EXIT_HOOK, Hooks, LifecycleHook, Parameter, Scalar, Step};

/// The hooks of one node still waiting for their expression, and those fired.
struct HookRun {
    node_name: String,
    boundary: Option<String>,
    pending: Vec<(String, LifecycleHook)>,
    fired: Vec<JoinHandle<NodeResult>>,
}

impl HookRun {
    fn new(node_name: &str, boundary: Option<&str>, hooks: &Hooks) -> Self {
        Self {
            node_name: node_name.to_string(),
            boundary: boundary.map(str::to_string),
            pending: hooks
                .iter()
                .filter(|(name, _)| name.as_str() != EXIT_HOOK)
                .map(|(name, hook)| (name.clone(), hook.clone()))
                .collect(),
            fired: Vec::new(),
        }
    }

    /// Starts every pending hook whose expression holds over `scope`. An expression that fails
    /// to evaluate waits while the node runs (it may read outputs that do not exist yet) and,
    /// at the `last` check, makes the hook an Error node saying why.
    fn fire<R: Runner>(&mut self, exec: &Arc<Executor<R>>, scope: &Scope, last: bool) {
        let pending = std::mem::take(&mut self.pending);
        for (name, hook) in pending {
            let node_name = format!("{}.hooks.{name}", self.node_name);
            let text = hook.expression.as_deref().unwrap_or("true");
            let holds = crate::workflow::vars::substitute(text, scope)
                .map_err(|e| e.to_string())
                .and_then(|t| expression::eval_bool(&t, scope).map_err(|e| e.to_string()));
            match holds {
                Ok(false) => self.pending.push((name, hook)),
                Err(_) if !last => self.pending.push((name, hook)),
                Ok(true) => {
                    let run = exec
                        .clone()
                        .run_hook(node_name, &hook, scope, self.boundary.clone());
                    self.fired.push(tokio::spawn(run));
                }
                Err(message) => {
                    let place = Place {
                        name: &node_name,
                        display: &node_name,
                        template: &hook.template,
                        boundary: self.boundary.as_deref(),
                    };
                    let r = exec.nodes.leaf(&place, Phase::Error, message);
                    self.fired.push(tokio::spawn(async move { r }));
                }
            }
        }
    }

    /// Waits for the fired hooks and hangs them under `parent`.
    async fn finish<R: Runner>(self, exec: &Executor<R>, parent: &str) {
        for h in self.fired {
            let hook = h.await.expect("hooks do not panic");
            exec.nodes.add_child(parent, &hook.id);
        }
    }
}

/// Where a step's or task's hooks are evaluated.
pub(super) struct HookSite<'a> {
    pub node_name: &'a str,
    /// `steps.<display name>` or `tasks.<name>`: where the node's own status is bound.
    pub status_prefix: String,
    /// `steps.<step name>` or `tasks.<name>`: where an exit hook's arguments find its outputs.
    pub outputs_prefix: String,
    pub boundary: &'a str,
}

/// A node's exit hook: `onExit`, else `hooks.exit`; with the workflow's arguments when it
/// names none, as Argo passes them.
fn exit_hook(
    on_exit: Option<&String>,
    hooks: &Hooks,
    workflow: &Arguments,
) -> Option<LifecycleHook> {
    let mut hook = match on_exit {
        Some(template) => LifecycleHook {
            template: template.clone(),
            arguments: Arguments::default(),
            expression: None,
        },
        None => hooks.get(EXIT_HOOK)?.clone(),
    };
    if hook.arguments.parameters.is_empty() {
        hook.arguments = workflow_arguments(workflow);
    }
    Some(hook)
}

/// The workflow's arguments, each valued as the run has it (`-p` included): the value is
/// `{{workflow.parameters.NAME}}`, substituted when the hook is called.
fn workflow_arguments(args: &Arguments) -> Arguments {
    Arguments {
        parameters: args
            .parameters
            .iter()
            .map(|p| Parameter {
                value: Some(Scalar(format!("{{{{workflow.parameters.{}}}}}", p.name))),
                ..p.clone()
            })
            .collect(),
    }
}

impl<R: Runner> Executor<R> {
    /// Runs `body` (the step's node) with the step's hooks around it.
    pub(super) async fn with_hooks(
        self: Arc<Self>,
        step: &Step,
        site: HookSite<'_>,
        scope: &Scope,
        body: BoxFut<NodeResult>,
    ) -> NodeResult {
        let exit = exit_hook(step.on_exit.as_ref(), &step.hooks, &self.wf.spec.arguments);
        if step.hooks.is_empty() && exit.is_none() {
            return body.await;
        }
        let mut hooks = HookRun::new(site.node_name, Some(site.boundary), &step.hooks);
        let mut running = scope.clone();
        running.insert(format!("{}.status", site.status_prefix), "Running".into());
        hooks.fire(&self, &running, false);
        let r = body.await;
        let mut ended = scope.clone();
        bind_results(
            &mut ended,
            &site.status_prefix,
            std::slice::from_ref(&r),
            false,
        );
        hooks.fire(&self, &ended, true);
        hooks.finish(&self, &r.id).await;
        let completed = matches!(r.phase, Phase::Succeeded | Phase::Failed | Phase::Error);
        if let Some(exit) = exit.filter(|_| completed) {
            let mut outputs = scope.clone();
            bind_results(
                &mut outputs,
                &site.outputs_prefix,
                std::slice::from_ref(&r),
                false,
            );
            let name = format!("{}.onExit", site.node_name);
            let boundary = Some(site.boundary.to_string());
            if let Some(handler) = self
                .clone()
                .run_exit_hook(name, &exit, &outputs, boundary)
                .await
            {
                self.nodes.add_child(&r.id, &handler.id);
            }
        }
        r
    }

    /// Runs an exit hook unless its `expression` is false; one that fails to evaluate is an
    /// Error node saying why.
    async fn run_exit_hook(
        self: Arc<Self>,
        name: String,
        hook: &LifecycleHook,
        scope: &Scope,
        boundary: Option<String>,
    ) -> Option<NodeResult> {
        match hook
            .expression
            .as_deref()
            .map(|e| expression::eval_bool(e, scope))
        {
            Some(Ok(false)) => None,
            Some(Err(e)) => {
                let place = Place {
                    name: &name,
                    display: &name,
                    template: &hook.template,
                    boundary: boundary.as_deref(),
                };
                Some(self.nodes.leaf(&place, Phase::Error, e.to_string()))
            }
            None | Some(Ok(true)) => Some(self.run_hook(name, hook, scope, boundary).await),
        }
    }

    /// Runs `hook`'s template as the node `name`, its arguments substituted over `scope`.
    fn run_hook(
        self: Arc<Self>,
        name: String,
        hook: &LifecycleHook,
        scope: &Scope,
        boundary: Option<String>,
    ) -> BoxFut<NodeResult> {
        let args = arguments(&hook.arguments, scope);
        let template = hook.template.clone();
        Box::pin(async move {
            let args = match args {
                Ok(args) => args,
                Err(message) => {
                    let place = Place {
                        name: &name,
                        display: &name,
                        template: &template,
                        boundary: boundary.as_deref(),
                    };
                    return self.nodes.leaf(&place, Phase::Error, message);
                }
            };
            self.execute(Call {
                args,
                boundary,
                ..Call::named(name.clone(), name, template)
            })
            .await
        })
    }

    /// The workflow's own hooks with an expression: checked as the run starts, before the
    /// entrypoint (`workflow.status` Running), and again by [`Self::finish_workflow_hooks`].
    pub(super) fn start_workflow_hooks(self: &Arc<Self>) -> WorkflowHooks {
        let mut hooks = HookRun::new(self.nodes.run_name(), None, &self.wf.spec.hooks);
        let mut scope = self.globals.snapshot();
        scope.insert("workflow.status".into(), Phase::Running.as_str().into());
        hooks.fire(self, &scope, false);
        WorkflowHooks(hooks)
    }

    /// Checks the workflow's hooks again once the entrypoint ended, `workflow.status` being
    /// its phase as Argo maps it, and waits for those that fired.
    pub(super) async fn finish_workflow_hooks(
        self: &Arc<Self>,
        mut hooks: WorkflowHooks,
        entry: &NodeResult,
    ) {
        self.bind_workflow_end(entry.phase);
        hooks.0.fire(self, &self.globals.snapshot(), true);
        let root = self.nodes.node_id(self.nodes.run_name());
        hooks.0.finish(self, &root).await;
    }

    /// `{{workflow.status}}` (a skipped or omitted entrypoint counts as Succeeded, as in Argo)
    /// and `{{workflow.failures}}`.
    fn bind_workflow_end(&self, phase: Phase) {
        let status = match phase {
            Phase::Skipped | Phase::Omitted => Phase::Succeeded,
            other => other,
        };
        self.globals
            .set("workflow.status".into(), status.as_str().into());
        self.globals
            .set("workflow.failures".into(), self.nodes.failures_json());
    }

    /// Runs the exit handler, if any, after `entry`; returns the workflow's phase and message.
    pub(super) async fn exit_handler(
        self: Arc<Self>,
        entry: &NodeResult,
        started: SystemTime,
    ) -> (Phase, Option<String>) {
        let (phase, message) = (entry.phase, entry.message.clone());
        let spec = &self.wf.spec;
        let Some(exit) = exit_hook(spec.on_exit.as_ref(), &spec.hooks, &spec.arguments) else {
            return (phase, message);
        };
        let duration = SystemTime::now()
            .duration_since(started)
            .unwrap_or_default()
            .as_secs_f64();
        self.bind_workflow_end(phase);
        self.globals
            .set("workflow.duration".into(), format!("{duration}"));
        let name = format!("{}.onExit", self.nodes.run_name());
        let scope = self.globals.snapshot();
        let Some(handler) = self.clone().run_exit_hook(name, &exit, &scope, None).await else {
            return (phase, message);
        };
        if phase == Phase::Succeeded && matches!(handler.phase, Phase::Failed | Phase::Error) {
            return (handler.phase, handler.message);
        }
        (phase, message)
    }
}

/// The workflow's hooks between the start of the run and the end of its entrypoint.
pub(super) struct WorkflowHooks(HookRun);
