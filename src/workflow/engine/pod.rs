//! Pod nodes: resolving a container or script template into a [`StepSpec`], starting it on the
//! runner, watching it against its timeout and the run's stop reason (SIGTERM, a grace period,
//! SIGKILL), recording from outside an attempt whose shim was killed or whose controller died,
//! and reading its outputs.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::Event;
use super::Executor;
use super::call::Call;
use super::nodes::{Begin, NodeResult};
use super::scope::Scope;
use crate::shim::outside::KilledAttempt;
use crate::workflow::clock;
use crate::workflow::record::{NodeStatus, NodeType, Outputs, Parameter, Phase, StepTelemetry};
use crate::workflow::runner::{Runner, ShimStart, StepExit, StepHandle, StepSpec};
use crate::workflow::spec::Template;
use crate::workflow::telemetry::{self, StepIdentity};
use crate::workflow::vars;

/// `obsctl.recorded_by_runner` of an attempt that died with an interrupted `obsctl run`.
pub const INTERRUPTED_BY_RESTART: &str = "controller-restart";

/// How long a stopped step gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// A pod template with its variables substituted.
struct Resolved {
    image: String,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    working_dir: Option<String>,
    source: Option<String>,
    timeout: Option<Duration>,
}

/// A value that cannot be resolved (an unknown variable, a timeout that is no duration) is an
/// error: the node ends in Error rather than run with a default.
fn resolve(tmpl: &Template, scope: &Scope) -> Result<Resolved, String> {
    let (image, command, args, env, working_dir, source) = match (&tmpl.container, &tmpl.script) {
        (Some(c), _) => (&c.image, &c.command, &c.args, &c.env, &c.working_dir, None),
        (None, Some(s)) => (
            &s.image,
            &s.command,
            &s.args,
            &s.env,
            &s.working_dir,
            Some(&s.source),
        ),
        (None, None) => unreachable!("pod templates have a container or a script"),
    };
    let sub = |text: &str| vars::substitute(text, scope).map_err(|e| e.to_string());
    let argv = command
        .iter()
        .chain(args.iter())
        .map(|part| sub(part))
        .collect::<Result<_, _>>()?;
    let env = env
        .iter()
        .map(|e| Ok::<_, String>((e.name.clone(), sub(e.value.as_deref().unwrap_or(""))?)))
        .collect::<Result<_, _>>()?;
    let timeout = match (&tmpl.timeout, &tmpl.active_deadline_seconds) {
        (Some(t), _) => {
            let text = sub(t.as_str())?;
            Some(vars::parse_duration(&text).ok_or_else(|| {
                format!("timeout: expected a duration such as 30s or 2m, got {text:?}")
            })?)
        }
        (None, Some(s)) => {
            let text = sub(s.as_str())?;
            Some(vars::parse_seconds(&text).ok_or_else(|| {
                format!("activeDeadlineSeconds: expected whole seconds, got {text:?}")
            })?)
        }
        (None, None) => None,
    };
    Ok(Resolved {
        image: image.clone(),
        argv,
        env,
        working_dir: working_dir.as_deref().map(sub).transpose()?,
        source: source.map(|s| sub(s)).transpose()?,
        timeout,
    })
}

/// A step about to start: what the runner gets and what the executor keeps for afterwards.
struct Launch {
    spec: StepSpec,
    timeout: Option<Duration>,
    attempt: u32,
    /// The step's environment and argv, to record the attempt from outside if its shim dies.
    env: Vec<(String, String)>,
    argv: Vec<String>,
}

/// How a step's process ended, and whether obsctl stopped it (and why).
struct Ended {
    waited: Result<StepExit, crate::workflow::runner::RunnerError>,
    stop_reason: Option<String>,
}

impl<R: Runner> Executor<R> {
    pub(super) async fn run_pod(self: Arc<Self>, call: Call, tmpl: Template) -> NodeResult {
        let (id, interrupted) = match self.nodes.begin(&call.place(), NodeType::Pod, true) {
            Begin::Done(node) => return node,
            Begin::Run { id, interrupted } => (id, interrupted),
        };
        if let Some(reason) = self.stopping() {
            return self.nodes.fail(&id, Phase::Failed, reason);
        }
        let mut scope = match self.scope_for(&tmpl, &call.args) {
            Ok(scope) => scope,
            Err(message) => return self.nodes.fail(&id, Phase::Error, message),
        };
        scope.insert("pod.name".into(), id.clone());
        scope.insert("node.name".into(), call.name.clone());
        scope.insert("retries".into(), call.retry_index.unwrap_or(0).to_string());
        let resolved = match resolve(&tmpl, &scope) {
            Ok(r) => r,
            Err(e) => return self.nodes.fail(&id, Phase::Error, e),
        };
        let _permit = match &self.pod_permits {
            Some(permits) => Some(permits.clone().acquire_owned().await.expect("never closed")),
            None => None,
        };
        if let Some(reason) = self.stopping() {
            return self.nodes.fail(&id, Phase::Failed, reason);
        }
        let launch = self
            .launch(&call, &tmpl, &id, resolved, interrupted.as_deref())
            .await;
        let result = self
            .start_and_watch(&call, &tmpl, &id, launch, &scope)
            .await;
        self.pod_finished(&result, &call.display);
        result
    }

    fn agent_and_step(&self, tmpl: &Template) -> (String, String) {
        let labels = &tmpl.metadata.labels;
        let agent = labels
            .get("agent")
            .or_else(|| self.wf.metadata.labels.get("agent"))
            .cloned()
            .unwrap_or_else(|| tmpl.name.clone());
        let step = labels
            .get("step")
            .cloned()
            .unwrap_or_else(|| tmpl.name.clone());
        (agent, step)
    }

    /// The step's spec: obsctl's environment then the template's, the link to the attempt it
    /// replaces, its own directory. An interrupted attempt is recorded here, before the new one.
    async fn launch(
        &self,
        call: &Call,
        tmpl: &Template,
        id: &str,
        resolved: Resolved,
        interrupted: Option<&NodeStatus>,
    ) -> Launch {
        let (agent, step) = self.agent_and_step(tmpl);
        let attempt = match interrupted {
            Some(n) => n.telemetry.as_ref().map_or(0, |t| t.attempt) + 1,
            None => call.retry_index.unwrap_or(0),
        };
        let run = self.nodes.identity();
        let template_json = serde_json::to_string(tmpl).expect("templates always serialize");
        let mut env = telemetry::step_env(
            &self.config.otel,
            &self.corr,
            &StepIdentity {
                workflow_name: &run.name,
                namespace: &run.namespace,
                node_id: id,
                agent: &agent,
                step: &step,
                template_json: &template_json,
            },
            run.trace_id,
            run.root_span,
        );
        env.extend(resolved.env);
        if let Some(prev) = interrupted {
            self.record_interrupted(prev, &env, &resolved.argv).await;
        }
        let replaces = call
            .replaces
            .or_else(|| interrupted.and_then(|n| self.nodes.span_of(&n.id)));
        if let Some(replaces) = replaces {
            env.push((
                crate::conventions::env::OBSCTL_REPLACES.into(),
                replaces.to_traceparent(),
            ));
        }
        let output_paths = tmpl
            .outputs
            .parameters
            .iter()
            .filter_map(|p| p.value_from.as_ref()?.path.clone())
            .collect();
        let spec = StepSpec {
            node_id: id.to_string(),
            node_name: call.name.clone(),
            template_name: tmpl.name.clone(),
            agent,
            step,
            image: resolved.image,
            argv: resolved.argv.clone(),
            env: env.clone(),
            working_dir: resolved.working_dir,
            script: resolved.source,
            output_paths,
            // Flat: few directories to create per step, which matters in a burst.
            work_dir: self.work_root.join(format!("{id}.{attempt}")),
        };
        Launch {
            spec,
            timeout: resolved.timeout,
            attempt,
            env,
            argv: resolved.argv,
        }
    }

    /// Starts the step, watches it to its end and finishes its node.
    async fn start_and_watch(
        &self,
        call: &Call,
        tmpl: &Template,
        id: &str,
        launch: Launch,
        scope: &Scope,
    ) -> NodeResult {
        let Launch {
            spec,
            timeout,
            attempt,
            env,
            argv,
        } = launch;
        let (agent, step) = (spec.agent.clone(), spec.step.clone());
        let work_dir = spec.work_dir.clone();
        let pod_started = SystemTime::now();
        self.nodes.update(id, |n| {
            n.phase = Phase::Running;
            n.started_at = Some(clock::now());
        });
        (self.on_event)(Event::PodStarted {
            id: id.to_string(),
            display: call.display.clone(),
        });
        self.nodes.count_pod_run();
        let mut handle = match self.runner.start(spec) {
            Ok(handle) => handle,
            Err(e) => return self.nodes.fail(id, Phase::Error, e.to_string()),
        };
        let pgid = handle.process_group();
        self.nodes.update(id, |n| n.process_group = pgid);
        let record_telemetry = |start: ShimStart| {
            self.nodes.update(id, |n| {
                n.telemetry = Some(StepTelemetry {
                    agent: agent.clone(),
                    step: step.clone(),
                    trace_id: start.trace_id,
                    span_id: start.span_id,
                    attempt,
                });
            });
        };
        let ended = self.watch(&mut handle, timeout, &record_telemetry).await;
        if let Ok(StepExit {
            shim_killed_by: Some(signal),
            ..
        }) = &ended.waited
            && let Some(t) = self.nodes.telemetry_of(id)
            && !crate::defect::Defect::NoOutsideRecord.active()
        {
            KilledAttempt {
                env: &env,
                agent: &t.agent,
                step: &t.step,
                trace_id: t.trace_id,
                span_id: t.span_id,
                start: pod_started,
                end: SystemTime::now(),
                command: &argv,
                signal: *signal,
                why: signal.as_str(),
                log_file: Some(&work_dir.join("log")),
            }
            .record()
            .await;
        }
        match ended.waited {
            Err(e) => self.nodes.fail(id, Phase::Error, e.to_string()),
            Ok(exit) => {
                let (phase, message, outputs) =
                    self.pod_outputs(tmpl, &exit, ended.stop_reason, scope);
                self.nodes
                    .finish(id, phase, message, outputs, vec![id.to_string()])
            }
        }
    }

    /// Waits for the step, stopping it when its timeout passes or the run is being stopped
    /// (Kubernetes' way: SIGTERM, a grace period, then SIGKILL). The shim's first line, when
    /// it comes, is recorded as the node's telemetry.
    async fn watch<H: StepHandle>(
        &self,
        handle: &mut H,
        timeout: Option<Duration>,
        record_telemetry: &(dyn Fn(ShimStart) + Sync),
    ) -> Ended {
        let mut stop = self.stop.clone();
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut stop_reason: Option<String> = None;
        let mut telemetry = handle.take_telemetry();
        let waited = loop {
            let sleep_until =
                deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
            tokio::select! {
                exit = handle.wait() => break exit,
                start = async { telemetry.as_mut().expect("guarded").await }, if telemetry.is_some() => {
                    telemetry = None;
                    if let Ok(Some(start)) = start {
                        record_telemetry(start);
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(sleep_until.into()), if stop_reason.is_none() && deadline.is_some() => {
                    stop_reason = Some(DEADLINE_MESSAGE.into());
                }
                changed = stop.changed(), if stop_reason.is_none() => {
                    if changed.is_err() { continue; }
                    match stop.borrow().clone() {
                        Some(reason) => stop_reason = Some(reason),
                        None => continue,
                    }
                }
            }
            handle.terminate();
            match tokio::time::timeout(STOP_GRACE, handle.wait()).await {
                Ok(exit) => break exit,
                Err(_) => {
                    handle.kill();
                    break handle.wait().await;
                }
            }
        };
        // The step may have exited before its first line was taken in the loop above.
        if let Some(Ok(Some(start))) = telemetry.as_mut().map(|rx| rx.try_recv()) {
            record_telemetry(start);
        }
        Ended {
            waited,
            stop_reason,
        }
    }

    /// The node's phase, message and outputs after the step exited: `outputs.result`, the exit
    /// code, and each output parameter (a missing file without a default is an Error).
    fn pod_outputs(
        &self,
        tmpl: &Template,
        exit: &StepExit,
        stop_reason: Option<String>,
        scope: &Scope,
    ) -> (Phase, Option<String>, Outputs) {
        let mut outputs = Outputs {
            exit_code: Some(exit.exit_code.to_string()),
            result: Some(trim_newline(&exit.stdout).to_string()),
            parameters: Vec::new(),
        };
        let (mut phase, mut message) = match (stop_reason, exit.exit_code) {
            (Some(reason), _) => (Phase::Failed, Some(reason)),
            (None, 0) => (Phase::Succeeded, None),
            (None, code) => (Phase::Failed, Some(format!("Error (exit code {code})"))),
        };
        for p in &tmpl.outputs.parameters {
            let value = match &p.value_from {
                Some(vf) => {
                    let path = vf.path.clone().unwrap_or_default();
                    match exit.files.get(&path).cloned().flatten() {
                        Some(text) => Some(trim_newline(&text).to_string()),
                        None => vf.default.as_ref().map(|d| d.0.clone()),
                    }
                }
                None => p
                    .value
                    .as_ref()
                    .and_then(|v| vars::substitute(v.as_str(), scope).ok()),
            };
            match value {
                Some(value) => {
                    if phase == Phase::Succeeded
                        && let Some(global) = &p.global_name
                    {
                        self.set_global(global, &value);
                    }
                    outputs.parameters.push(Parameter {
                        name: p.name.clone(),
                        value,
                    });
                }
                None if phase == Phase::Succeeded => {
                    phase = Phase::Error;
                    message = Some(format!(
                        "failed to read output parameter {}: {} does not exist",
                        p.name,
                        p.value_from
                            .as_ref()
                            .and_then(|v| v.path.clone())
                            .unwrap_or_default()
                    ));
                }
                None => {}
            }
        }
        (phase, message, outputs)
    }

    /// Records from outside the attempt that a dead controller left running: its shim died with
    /// that `obsctl run` (PDEATHSIG) before it could export. It ended when its log was last
    /// written, the closest trace of its death on disk.
    async fn record_interrupted(
        &self,
        prev: &NodeStatus,
        env: &[(String, String)],
        argv: &[String],
    ) {
        let Some(t) = &prev.telemetry else {
            return;
        };
        let log = self
            .work_root
            .join(format!("{}.{}", prev.id, t.attempt))
            .join("log");
        let start = prev
            .started_at
            .as_deref()
            .and_then(clock::parse)
            .unwrap_or_else(SystemTime::now);
        let end = std::fs::metadata(&log)
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| SystemTime::now());
        KilledAttempt {
            env,
            agent: &t.agent,
            step: &t.step,
            trace_id: t.trace_id,
            span_id: t.span_id,
            start,
            end,
            command: argv,
            signal: nix::sys::signal::Signal::SIGKILL,
            why: INTERRUPTED_BY_RESTART,
            log_file: Some(&log),
        }
        .record()
        .await;
    }

    fn pod_finished(&self, result: &NodeResult, display: &str) {
        (self.on_event)(Event::PodFinished {
            id: result.id.clone(),
            display: display.to_string(),
            phase: result.phase,
        });
    }
}

fn trim_newline(text: &str) -> &str {
    text.strip_suffix('\n').unwrap_or(text)
}
