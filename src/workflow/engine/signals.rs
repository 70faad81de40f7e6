//! What stops a run before its steps end: the workflow's `activeDeadlineSeconds`, and SIGINT or
//! SIGTERM when obsctl owns the process's signals. Either sets a reason that running Pod nodes
//! watch (they get SIGTERM) and that keeps new nodes from starting.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The message of steps stopped because obsctl was asked to stop.
pub const STOPPED: &str = "Stopped: obsctl received SIGINT or SIGTERM";

/// The message of nodes stopped by `spec.activeDeadlineSeconds`, as Argo writes it.
const DEADLINE_EXCEEDED: &str = "Step exceeded its deadline";

/// Why the run is being stopped, `None` while it is not; Pod nodes watch it.
pub(super) type StopReason = watch::Receiver<Option<String>>;

pub(super) struct Stop {
    reason: Arc<watch::Sender<Option<String>>>,
    deadline: Option<JoinHandle<()>>,
    signals: Option<JoinHandle<()>>,
}

impl Stop {
    /// Arms the workflow deadline (`active_deadline` from `started`) and, with `on_signals`,
    /// SIGINT/SIGTERM.
    pub fn arm(
        started: SystemTime,
        active_deadline: Option<Duration>,
        on_signals: bool,
    ) -> (Self, StopReason) {
        let (tx, rx) = watch::channel(None::<String>);
        let reason = Arc::new(tx);
        let deadline = active_deadline.map(|secs| {
            let remaining = (started + secs)
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            let reason = reason.clone();
            tokio::spawn(async move {
                tokio::time::sleep(remaining).await;
                let _ = reason.send(Some(DEADLINE_EXCEEDED.into()));
            })
        });
        let signals = on_signals.then(|| watch_signals(reason.clone()));
        let stop = Self {
            reason,
            deadline,
            signals,
        };
        (stop, rx)
    }

    /// As on Argo, the exit handler runs even after the workflow's deadline stopped it.
    pub fn lift_for_exit_handler(&self) {
        if let Some(task) = &self.deadline {
            task.abort();
        }
        self.reason.send_replace(None);
    }

    /// The run is over: signals are the process's again.
    pub fn disarm(self) {
        if let Some(signals) = self.signals {
            signals.abort();
        }
    }
}

/// SIGINT or SIGTERM stops the run as `argo stop` does: running steps get SIGTERM (their shims
/// still export their spans), nothing new starts, the exit handler runs, the record is
/// finished. A second signal exits at once.
fn watch_signals(reason: Arc<watch::Sender<Option<String>>>) -> JoinHandle<()> {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        reason.send_replace(Some(STOPPED.into()));
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        std::process::exit(130);
    })
}
