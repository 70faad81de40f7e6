//! The workflow's exit handler (`spec.onExit`): it runs after the entrypoint whatever its
//! phase, as the `<wf>.onExit` node, with `{{workflow.status}}`, `{{workflow.duration}}` and
//! `{{workflow.failures}}` bound; a failing handler fails a workflow that succeeded.

use std::sync::Arc;
use std::time::SystemTime;

use super::Executor;
use super::call::Call;
use super::nodes::NodeResult;
use super::scope::status_text;
use crate::workflow::record::Phase;
use crate::workflow::runner::Runner;

impl<R: Runner> Executor<R> {
    /// Runs the exit handler, if any, after `entry`; returns the workflow's phase and message.
    pub(super) async fn exit_handler(
        self: Arc<Self>,
        entry: &NodeResult,
        started: SystemTime,
    ) -> (Phase, Option<String>) {
        let (phase, message) = (entry.phase, entry.message.clone());
        let Some(exit) = self.wf.spec.on_exit.clone() else {
            return (phase, message);
        };
        let duration = SystemTime::now()
            .duration_since(started)
            .unwrap_or_default()
            .as_secs_f64();
        self.globals
            .set("workflow.status".into(), status_text(phase).into());
        self.globals
            .set("workflow.duration".into(), format!("{duration}"));
        self.globals
            .set("workflow.failures".into(), self.nodes.failures_json());
        let name = format!("{}.onExit", self.nodes.run_name());
        let handler = self
            .clone()
            .execute(Call::named(name.clone(), name, exit))
            .await;
        if phase == Phase::Succeeded && matches!(handler.phase, Phase::Failed | Phase::Error) {
            return (handler.phase, handler.message);
        }
        (phase, message)
    }
}
