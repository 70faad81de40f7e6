//! DAG templates: a task starts once the tasks its `depends` (or `dependencies`) names are done;
//! when the condition does not hold it is Omitted. Tasks hang under their dependencies'
//! outbound nodes, and the DAG's phase comes from its target (leaf) tasks, an omitted leaf
//! standing for the most severe branch that led to it. With `target`, only the targets and the
//! tasks they depend on run.
//!
//! `dag.failFast` is applied as Argo's controller applies it, not as its field's description
//! reads: Argo starts every task that is ready before it assesses the DAG, and assesses it only
//! once nothing in it runs, so failing fast never keeps a ready task from starting (upstream
//! issues #5223, closed as won't fix, and #10312). What the flag decides is which failed target
//! the DAG's phase comes from: the first in target order (the default, `true`) or the last
//! (`false`, every target's branch is looked at). docs/workflows.md says more.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::task::JoinSet;

use super::Executor;
use super::call::{BoxFut, Call, FAILED_FAST, Gate, Invocation};
use super::hooks::HookSite;
use super::nodes::{NodeResult, Place};
use super::scope::{Scope, bind_results};
use super::steps::{continues_on, fails_parent};
use crate::workflow::expr::{Depends, TaskResult};
use crate::workflow::record::{NodeType, Outputs, Phase};
use crate::workflow::runner::Runner;
use crate::workflow::spec::{ContinueOn, Dag, DagTask, Step, Template};
use crate::workflow::vars;

/// A task that ended: its node and the phases of its children (its loop items).
type Done = HashMap<String, (NodeResult, Vec<Phase>)>;

/// A task's outcome as the DAG sees it: its node, the nodes its variables aggregate over, and
/// whether it looped.
type TaskOutcome = (NodeResult, Vec<NodeResult>, bool);

/// One DAG node being run.
struct DagRun<'a> {
    id: String,
    call_name: &'a str,
    dag: &'a Dag,
    tasks: HashMap<&'a str, &'a DagTask>,
    deps: HashMap<&'a str, Option<Depends>>,
    done: Done,
    started: HashSet<String>,
    scope: Scope,
    /// The tasks that decide the DAG's phase, in Argo's order: `target` as written, else the
    /// tasks nothing depends on, sorted by name.
    targets: Vec<String>,
    /// The targets and every task they depend on, transitively: the only tasks that run.
    needed: HashSet<String>,
}

impl DagRun<'_> {
    fn dep_names(&self, task: &str) -> Vec<String> {
        self.deps[task]
            .as_ref()
            .map_or_else(Vec::new, Depends::tasks)
    }

    fn ready(&self, task: &DagTask) -> bool {
        self.needed.contains(&task.name)
            && !self.started.contains(&task.name)
            && self
                .dep_names(&task.name)
                .iter()
                .all(|d| self.done.contains_key(d))
    }

    /// Whether the task's `depends` holds over the tasks done.
    fn satisfied(&self, task: &str) -> bool {
        self.deps[task].as_ref().is_none_or(|d| {
            d.eval(&|name, result| {
                let (node, children) = &self.done[name];
                let cont = self.tasks[name].continue_on.as_ref();
                dep_satisfied(node.phase, children, result, cont)
            })
        })
    }

    /// Sets the targets: `target` (its variables resolved now, as Argo does), else the tasks
    /// nothing depends on, sorted as Argo sorts them; and the tasks they need. A target that
    /// names no task is an error.
    fn aim(&mut self) -> Result<(), String> {
        self.targets = match &self.dag.target {
            Some(t) => vars::substitute(t, &self.scope)
                .map_err(|e| format!("dag.target: {e}"))?
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            None => {
                let mut leaves: Vec<String> = self
                    .dag
                    .tasks
                    .iter()
                    .filter(|t| {
                        !self
                            .dag
                            .tasks
                            .iter()
                            .any(|o| self.dep_names(&o.name).contains(&t.name))
                    })
                    .map(|t| t.name.clone())
                    .collect();
                leaves.sort();
                leaves
            }
        };
        let mut pending = self.targets.clone();
        while let Some(task) = pending.pop() {
            if !self.tasks.contains_key(task.as_str()) {
                return Err(format!("dag.target: unknown task `{task}`"));
            }
            if self.needed.insert(task.clone()) {
                pending.extend(self.dep_names(&task));
            }
        }
        Ok(())
    }

    fn record(&mut self, name: String, outcome: TaskOutcome) {
        let (result, children, is_loop) = outcome;
        bind_results(
            &mut self.scope,
            &format!("tasks.{name}"),
            &children,
            is_loop,
        );
        if is_loop {
            self.scope
                .insert(format!("tasks.{name}.status"), result.phase.as_str().into());
            self.scope
                .insert(format!("tasks.{name}.id"), result.id.clone());
        }
        let phases = children.iter().map(|c| c.phase).collect();
        self.done.insert(name, (result, phases));
    }
}

impl<R: Runner> Executor<R> {
    pub(super) async fn run_dag(self: Arc<Self>, call: Call, tmpl: Template) -> NodeResult {
        let (id, scope) = match self.open_group(&call, &tmpl, NodeType::DAG) {
            Ok(opened) => opened,
            Err(failed) => return *failed,
        };
        let dag = tmpl.dag.as_ref().expect("dag template");
        let gate = Gate::of(&tmpl);
        let mut run = DagRun {
            id,
            call_name: &call.name,
            dag,
            tasks: dag.tasks.iter().map(|t| (t.name.as_str(), t)).collect(),
            deps: dag
                .tasks
                .iter()
                .map(|t| (t.name.as_str(), depends_of(t)))
                .collect(),
            done: Done::new(),
            started: HashSet::new(),
            scope,
            targets: Vec::new(),
            needed: HashSet::new(),
        };
        if let Err(message) = run.aim() {
            return self.nodes.fail(&run.id, Phase::Error, message);
        }
        let mut running = JoinSet::new();
        let mut stopped = None;
        loop {
            if stopped.is_none() {
                stopped = self.launch_ready(&mut run, &mut running, &gate);
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let (name, outcome) = joined.expect("dag tasks do not panic");
            run.record(name, outcome);
        }
        let (mut phase, mut message, mut outbound) = assess(&run, stopped);
        if gate.tripped() {
            phase = Phase::Failed;
            message = Some(FAILED_FAST.into());
        }
        let outputs = self.group_outputs(&tmpl, &run.scope, &mut phase, &mut message);
        if outbound.is_empty() {
            outbound.push(run.id.clone());
        }
        self.nodes
            .finish(&run.id, phase, message, outputs, outbound)
    }

    /// Starts every task whose dependencies are done (an unsatisfied one ends Omitted at once,
    /// which may make others ready), unless `failFast` stopped new tasks. Returns the stop
    /// reason when the run is being stopped.
    fn launch_ready(
        self: &Arc<Self>,
        run: &mut DagRun,
        running: &mut JoinSet<(String, TaskOutcome)>,
        gate: &Gate,
    ) -> Option<String> {
        let mut progressed = true;
        while progressed {
            progressed = false;
            if let Some(reason) = self.stopping() {
                return Some(reason);
            }
            if gate.tripped() {
                return None;
            }
            let dag = run.dag;
            for task in &dag.tasks {
                if !run.ready(task) {
                    continue;
                }
                run.started.insert(task.name.clone());
                progressed = true;
                let node_name = format!("{}.{}", run.call_name, task.name);
                self.link_task(run, &task.name, &node_name);
                if !run.satisfied(&task.name) {
                    let r = self.nodes.leaf(
                        &Place {
                            name: &node_name,
                            display: &task.name,
                            template: &task.template,
                            boundary: Some(&run.id),
                        },
                        Phase::Omitted,
                        "omitted: depends condition not met".into(),
                    );
                    run.record(task.name.clone(), (r.clone(), vec![r], false));
                    continue;
                }
                self.globals.refresh(&mut run.scope);
                let this = self.clone();
                let step = Step::from(task);
                let local = run.scope.clone();
                let dag_id = run.id.clone();
                let gate = gate.clone();
                let name = task.name.clone();
                running.spawn(async move {
                    let out = this.run_task(step, node_name, local, dag_id, gate).await;
                    (name, out)
                });
            }
        }
        None
    }

    /// Hangs the task's node under its dependencies' outbound nodes, or under the DAG node.
    fn link_task(&self, run: &DagRun, task: &str, node_name: &str) {
        let node_id = self.nodes.node_id(node_name);
        let parents = run.dep_names(task);
        if parents.is_empty() {
            self.nodes.add_child(&run.id, &node_id);
        }
        for p in &parents {
            for o in &run.done[p].0.outbound {
                self.nodes.add_child(o, &node_id);
            }
        }
    }

    /// One DAG task with its hooks around it (on its TaskGroup when it loops, as in Argo).
    fn run_task(
        self: Arc<Self>,
        step: Step,
        node_name: String,
        scope: Scope,
        dag_id: String,
        gate: Gate,
    ) -> BoxFut<TaskOutcome> {
        Box::pin(async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let body = self.clone().run_task_nodes(
                step.clone(),
                node_name.clone(),
                scope.clone(),
                dag_id.clone(),
                gate,
            );
            let body: BoxFut<NodeResult> = Box::pin(async move {
                let (r, children, is_loop) = body.await;
                let _ = tx.send((children, is_loop));
                r
            });
            let site = HookSite {
                node_name: &node_name,
                status_prefix: format!("tasks.{}", step.name),
                outputs_prefix: format!("tasks.{}", step.name),
                boundary: &dag_id,
            };
            let r = self.clone().with_hooks(&step, site, &scope, body).await;
            let (children, is_loop) = rx.await.expect("the task's body ran");
            (r, children, is_loop)
        })
    }

    /// One DAG task's nodes: a single node, or a TaskGroup over its loop items.
    fn run_task_nodes(
        self: Arc<Self>,
        step: Step,
        node_name: String,
        scope: Scope,
        dag_id: String,
        gate: Gate,
    ) -> BoxFut<TaskOutcome> {
        Box::pin(async move {
            let place = Place {
                name: &node_name,
                display: &step.name,
                template: &step.template,
                boundary: Some(&dag_id),
            };
            let invocations = match self.expand(&step, &node_name, &scope) {
                Ok(Some(invocations)) => invocations,
                Ok(None) => {
                    let single = Invocation {
                        name: node_name.clone(),
                        display: step.name.clone(),
                        item_vars: Scope::new(),
                    };
                    let r = self
                        .clone()
                        .invoke(
                            step.clone(),
                            single,
                            scope,
                            dag_id.clone(),
                            gate.admitted(),
                            false,
                        )
                        .await
                        .expect("an admitted call always starts");
                    return (r.clone(), vec![r], false);
                }
                Err(e) => {
                    let r = self.nodes.leaf(&place, Phase::Error, e);
                    return (r.clone(), vec![r], false);
                }
            };
            let group_id = self.nodes.begin_composite(&place, NodeType::TaskGroup);
            let handles = self.spawn_invocations(&step, invocations, &scope, &dag_id, &gate, false);
            let mut children = Vec::new();
            for h in handles {
                children.extend(h.await.expect("task items do not panic"));
            }
            let r = self.finish_task_group(&group_id, &step, &children);
            (r, children, true)
        })
    }

    fn finish_task_group(
        &self,
        group_id: &str,
        step: &Step,
        children: &[NodeResult],
    ) -> NodeResult {
        let mut phase = Phase::Succeeded;
        let mut message = None;
        let mut outbound = Vec::new();
        for c in children {
            self.nodes.add_child(group_id, &c.id);
            outbound.extend(c.outbound.iter().cloned());
            if fails_parent(c.phase, step.continue_on.as_ref()) && phase == Phase::Succeeded {
                phase = Phase::Failed;
                message = Some(format!("child '{}' failed", c.id));
            }
        }
        if outbound.is_empty() {
            outbound.push(group_id.to_string());
        }
        self.nodes
            .finish(group_id, phase, message, Outputs::default(), outbound)
    }
}

/// A task's dependency condition: `depends`, else `dependencies` as a conjunction.
fn depends_of(task: &DagTask) -> Option<Depends> {
    match &task.depends {
        Some(d) => Some(d.parsed().clone()),
        None => task
            .dependencies
            .iter()
            .map(|n| Depends::Task(n.clone(), None))
            .reduce(|a, b| Depends::And(Box::new(a), Box::new(b))),
    }
}

/// The DAG's phase, message and outbound nodes from its targets. A failed or errored target
/// branch fails the DAG; with `failFast` (Argo's default) the first one in target order names
/// the phase, without it the last one does, as Argo's `assessDAGPhase` stops at the first
/// only when failing fast.
fn assess(run: &DagRun, stopped: Option<String>) -> (Phase, Option<String>, Vec<String>) {
    let fail_fast = run.dag.fail_fast.unwrap_or(true);
    let mut phase = Phase::Succeeded;
    let mut failure = None;
    let mut outbound = Vec::new();
    for target in &run.targets {
        let Some((node, _)) = run.done.get(target) else {
            phase = Phase::Failed;
            continue;
        };
        outbound.extend(node.outbound.iter().cloned());
        let branch = branch_phase(target, &run.done, &|t| run.dep_names(t));
        if matches!(branch, Phase::Failed | Phase::Error)
            && !continues_on(run.tasks[target.as_str()].continue_on.as_ref(), branch)
            && (failure.is_none() || !fail_fast)
        {
            failure = Some((branch, node.id.as_str()));
        }
    }
    let mut message = stopped.clone();
    if let Some((branch, id)) = failure
        && phase == Phase::Succeeded
    {
        phase = branch;
        message.get_or_insert_with(|| format!("task '{id}' {}", branch.as_str().to_lowercase()));
    }
    if stopped.is_some() {
        phase = Phase::Failed;
    }
    (phase, message, outbound)
}

/// `depends` semantics of one term: `task.Result`, or a bare name (Succeeded, Skipped or
/// Daemoned, plus Failed/Errored when the task continues on them).
fn dep_satisfied(
    phase: Phase,
    children: &[Phase],
    result: Option<TaskResult>,
    cont: Option<&ContinueOn>,
) -> bool {
    match result {
        None => matches!(phase, Phase::Succeeded | Phase::Skipped) || continues_on(cont, phase),
        Some(TaskResult::Succeeded) => phase == Phase::Succeeded,
        Some(TaskResult::Failed) => phase == Phase::Failed,
        Some(TaskResult::Errored) => phase == Phase::Error,
        Some(TaskResult::Skipped) => phase == Phase::Skipped,
        Some(TaskResult::Omitted) => phase == Phase::Omitted,
        Some(TaskResult::Daemoned) => false,
        Some(TaskResult::AnySucceeded) => children.contains(&Phase::Succeeded),
        Some(TaskResult::AllFailed) => {
            !children.is_empty() && children.iter().all(|p| *p == Phase::Failed)
        }
    }
}

/// The phase a target task stands for when assessing its DAG: its own when it ran, else
/// (Skipped, Omitted) the most severe phase among the branches leading to it.
fn branch_phase(task: &str, done: &Done, deps: &dyn Fn(&str) -> Vec<String>) -> Phase {
    let phase = done.get(task).map_or(Phase::Succeeded, |(n, _)| n.phase);
    if matches!(phase, Phase::Succeeded | Phase::Failed | Phase::Error) {
        return phase;
    }
    let mut worst = Phase::Succeeded;
    for d in deps(task) {
        match branch_phase(&d, done, deps) {
            Phase::Error => return Phase::Error,
            Phase::Failed => worst = Phase::Failed,
            _ => {}
        }
    }
    worst
}
