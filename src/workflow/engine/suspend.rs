//! Suspend templates: a `Suspend` node that waits for its `duration`, then succeeds, as Argo
//! resumes it once the duration has passed. A resumed run waits only for what is left, counted
//! from the node's first start; a stopped run ends the node Failed.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::Executor;
use super::call::Call;
use super::nodes::{Begin, NodeResult};
use crate::workflow::record::{NodeType, Outputs, Phase};
use crate::workflow::runner::Runner;
use crate::workflow::spec::Template;
use crate::workflow::vars;

impl<R: Runner> Executor<R> {
    pub(super) async fn run_suspend(self: Arc<Self>, call: Call, tmpl: Template) -> NodeResult {
        let id = match self.nodes.begin(&call.place(), NodeType::Suspend, true) {
            Begin::Done(node) => return node,
            Begin::Run { id, .. } => id,
        };
        let duration = match self.suspend_duration(&tmpl, &call) {
            Ok(d) => d,
            Err(message) => return self.nodes.fail(&id, Phase::Error, message),
        };
        let started = self.nodes.started_at(&id).unwrap_or_else(SystemTime::now);
        let left = (started + duration)
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let mut stop = self.stop.clone();
        let sleep = tokio::time::sleep(left);
        tokio::pin!(sleep);
        loop {
            if let Some(reason) = self.stopping() {
                return self.nodes.fail(&id, Phase::Failed, reason);
            }
            tokio::select! {
                _ = &mut sleep => break,
                changed = stop.changed() => {
                    if changed.is_err() {
                        (&mut sleep).await;
                        break;
                    }
                }
            }
        }
        self.nodes.finish(
            &id,
            Phase::Succeeded,
            None,
            Outputs::default(),
            vec![id.clone()],
        )
    }

    /// The template's `duration`, its variables resolved; the loader made sure there is one.
    fn suspend_duration(&self, tmpl: &Template, call: &Call) -> Result<Duration, String> {
        let raw = tmpl
            .suspend
            .as_ref()
            .and_then(|s| s.duration.as_ref())
            .map(|d| d.as_str().to_string())
            .unwrap_or_default();
        let scope = self.scope_for(tmpl, &call.args)?;
        let text = vars::substitute(&raw, &scope).map_err(|e| format!("suspend.duration: {e}"))?;
        vars::parse_duration(&text).ok_or_else(|| {
            format!("suspend.duration: expected seconds or a duration such as 2m, got {text:?}")
        })
    }
}
