//! Steps templates: groups run one after another, the steps of a group in parallel, each group
//! hanging under the previous group's outbound nodes as Argo links them. A failed step fails
//! its group (unless it continues on failure), and a failed group ends the template.

use std::sync::Arc;

use tokio::task::JoinHandle;

use super::Executor;
use super::call::{Call, FAILED_FAST, Gate, Invocation};
use super::nodes::{NodeResult, Place};
use super::scope::{Scope, bind_results};
use crate::workflow::record::{NodeType, Outputs, Phase};
use crate::workflow::runner::Runner;
use crate::workflow::spec::{ContinueOn, Step, Template};

/// A step of a group, started: its invocations (several when it loops).
struct Launched {
    step: Step,
    is_loop: bool,
    /// `None` for an invocation that `failFast` kept from starting.
    handles: Vec<JoinHandle<Option<NodeResult>>>,
}

/// How a group ended.
struct GroupEnd {
    phase: Phase,
    message: Option<String>,
    outbound: Vec<String>,
}

impl<R: Runner> Executor<R> {
    pub(super) async fn run_steps(self: Arc<Self>, call: Call, tmpl: Template) -> NodeResult {
        let (id, mut scope) = match self.open_group(&call, &tmpl, NodeType::Steps) {
            Ok(opened) => opened,
            Err(failed) => return *failed,
        };
        let gate = Gate::of(&tmpl);
        let mut outbound: Vec<String> = Vec::new();
        let mut phase = Phase::Succeeded;
        let mut message = None;
        for (i, group) in tmpl.steps.clone().unwrap_or_default().iter().enumerate() {
            if let Some(reason) = self.stopping() {
                phase = Phase::Failed;
                message = Some(reason);
                break;
            }
            let group_name = format!("{}[{i}]", call.name);
            let group_id = self.nodes.begin_composite(
                &Place {
                    name: &group_name,
                    display: &format!("[{i}]"),
                    template: &tmpl.name,
                    boundary: Some(&id),
                },
                NodeType::StepGroup,
            );
            let parents = if i == 0 {
                std::slice::from_ref(&id)
            } else {
                &outbound[..]
            };
            for parent in parents {
                self.nodes.add_child(parent, &group_id);
            }
            let end = self
                .clone()
                .run_group(group, &group_name, &group_id, &id, &mut scope, &gate)
                .await;
            outbound = end.outbound;
            if end.phase != Phase::Succeeded {
                phase = Phase::Failed;
                message = Some(if gate.tripped() {
                    FAILED_FAST.to_string()
                } else {
                    format!(
                        "step group {group_id} was unsuccessful: {}",
                        end.message.unwrap_or_default()
                    )
                });
                break;
            }
        }
        let outputs = self.group_outputs(&tmpl, &scope, &mut phase, &mut message);
        if outbound.is_empty() {
            outbound.push(id.clone());
        }
        self.nodes.finish(&id, phase, message, outputs, outbound)
    }

    /// Starts every step of a group (each loop item apart). A step whose loop cannot be
    /// expanded stops the launch; the steps already started still run.
    fn launch_group(
        self: &Arc<Self>,
        group: &[Step],
        group_name: &str,
        steps_id: &str,
        scope: &Scope,
        gate: &Gate,
    ) -> (Vec<Launched>, Option<String>) {
        let mut launched = Vec::new();
        for step in group {
            let base = format!("{group_name}.{}", step.name);
            let expansion = match self.expand(step, &base, scope) {
                Ok(e) => e,
                Err(e) => return (launched, Some(format!("step {}: {e}", step.name))),
            };
            let is_loop = expansion.is_some();
            let invocations = expansion.unwrap_or_else(|| {
                vec![Invocation {
                    name: base.clone(),
                    display: step.name.clone(),
                    item_vars: Scope::new(),
                }]
            });
            let handles = self.spawn_invocations(step, invocations, scope, steps_id, gate, true);
            launched.push(Launched {
                step: step.clone(),
                is_loop,
                handles,
            });
        }
        (launched, None)
    }

    /// The start of a steps or DAG node: its node, then its parameter scope. A scope that cannot
    /// be formed (an input not supplied) ends the node in Error, which the caller returns.
    pub(super) fn open_group(
        &self,
        call: &Call,
        tmpl: &Template,
        node_type: NodeType,
    ) -> Result<(String, Scope), Box<NodeResult>> {
        let id = self.nodes.begin_composite(&call.place(), node_type);
        match self.scope_for(tmpl, &call.args) {
            Ok(scope) => Ok((id, scope)),
            Err(message) => Err(Box::new(self.nodes.fail(&id, Phase::Error, message))),
        }
    }

    /// Runs one group: every step (and loop item) in parallel, then binds their results.
    async fn run_group(
        self: Arc<Self>,
        group: &[Step],
        group_name: &str,
        group_id: &str,
        steps_id: &str,
        scope: &mut Scope,
        gate: &Gate,
    ) -> GroupEnd {
        // Outputs of earlier groups may have set globals.
        self.globals.refresh(scope);
        let (launched, group_error) = self.launch_group(group, group_name, steps_id, scope, gate);
        let mut end = GroupEnd {
            phase: if group_error.is_some() {
                Phase::Error
            } else {
                Phase::Succeeded
            },
            message: group_error,
            outbound: Vec::new(),
        };
        for l in launched {
            let mut results = Vec::new();
            for h in l.handles {
                results.extend(h.await.expect("step tasks do not panic"));
            }
            for r in &results {
                self.nodes.add_child(group_id, &r.id);
                end.outbound.extend(r.outbound.iter().cloned());
                if fails_parent(r.phase, l.step.continue_on.as_ref())
                    && end.phase == Phase::Succeeded
                {
                    end.phase = Phase::Failed;
                    end.message = Some(format!("child '{}' failed", r.id));
                }
            }
            bind_results(
                scope,
                &format!("steps.{}", l.step.name),
                &results,
                l.is_loop,
            );
        }
        if gate.tripped() {
            end.phase = Phase::Failed;
            end.message = Some(FAILED_FAST.into());
        }
        if end.outbound.is_empty() {
            end.outbound.push(group_id.to_string());
        }
        self.nodes.finish(
            group_id,
            end.phase,
            end.message.clone(),
            Outputs::default(),
            end.outbound.clone(),
        );
        end
    }
}

/// Whether a child that ended in `phase` fails its group: Failed or Error, unless `continueOn`
/// tolerates it.
pub(super) fn fails_parent(phase: Phase, continue_on: Option<&ContinueOn>) -> bool {
    matches!(phase, Phase::Failed | Phase::Error) && !continues_on(continue_on, phase)
}

pub(super) fn continues_on(c: Option<&ContinueOn>, phase: Phase) -> bool {
    c.is_some_and(|c| match phase {
        Phase::Failed => c.failed,
        Phase::Error => c.error,
        _ => false,
    })
}
