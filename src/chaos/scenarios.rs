//! The four scenarios. Each has its own state directory and, on the embedded runtime, its own
//! backend (so its account holds only what it sent; on the Docker stack, verify's baseline keeps
//! it to what the scenario's runs added). Each drives `obsctl run` as a child process, injects its
//! fault from outside as Kubernetes or a network would, undoes it, and judges.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::account::{Row, in_doubt, log_lines, printed_lines};
use super::target::{RunningStep, Runtime, Target};
use super::{
    ChaosError, Measure, Options, OutageMode, Progress, Scenario, ScenarioReport, Timeline,
    TimelineStep,
};
use crate::backends::Backends;
use crate::checks::collect::{CollectOptions, WaitReport, collect};
use crate::checks::expect::Expectation;
use crate::checks::{CheckStatus, Thresholds, run_all};
use crate::conventions::{attr, env, resource::DEFAULT_SERVICE_NAME};
use crate::embedded::identity::Absorbed;
use crate::otlp::SpanId;
use crate::workflow::clock;
use crate::workflow::record::{NodeStatus, NodeType, Phase, RecordStore, RunRecord};

const POD_KILL: &str = include_str!("../../workflows/chaos-pod-kill.yaml");
const STEADY: &str = include_str!("../../workflows/chaos-steady.yaml");
const BURST: &str = include_str!("../../workflows/burst.yaml");

/// Kubernetes' default `terminationGracePeriodSeconds` is 30 s; chaos keeps the same shape
/// with a shorter grace so the scenario stays quick.
const GRACE: Duration = Duration::from_secs(2);
/// Longest a scenario's workflow may run.
const RUN_DEADLINE: Duration = Duration::from_secs(120);
/// How far a step may be slowed by an outage beyond the shim's export budget: process start
/// and scheduling on a loaded machine.
const DELAY_SLACK: Duration = Duration::from_millis(750);
const POLL: Duration = Duration::from_millis(50);
/// How often the live view hears how many steps finished.
const STEPS_EVERY: Duration = Duration::from_millis(500);

/// One scenario's scratch: what it breaks, its state directory and spool.
struct Stage<'a> {
    options: &'a Options,
    dir: PathBuf,
    target: Target,
    store: RecordStore,
    /// What the backends had absorbed before the scenario (`None`: they do not say).
    absorbed_before: Option<Absorbed>,
}

impl<'a> Stage<'a> {
    async fn new(options: &'a Options, scenario: Scenario) -> Result<Self, ChaosError> {
        let dir = options.work_dir.join(scenario.name().replace('/', "-"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| ChaosError::io(&dir, e))?;
        let store = RecordStore::new(dir.join("runs"));
        let target = Target::new(&options.runtime, &options.exe, &dir, store.clone()).await?;
        let absorbed_before = target.absorbed(&options.connector).await?;
        Ok(Self {
            options,
            store,
            dir,
            target,
            absorbed_before,
        })
    }

    fn workflow(&self, name: &str, text: &str) -> Result<PathBuf, ChaosError> {
        let path = self.dir.join(name);
        std::fs::write(&path, text).map_err(|e| ChaosError::io(&path, e))?;
        Ok(path)
    }

    /// `obsctl run` as the controller: steps through the shim (processes, or containers on the
    /// Docker stack's network), telemetry over OTLP/HTTP, spooling in the scenario's own spool.
    fn run(&self, args: &[String]) -> Result<RunProcess, ChaosError> {
        let out = self.dir.join(format!("run-{}.log", rand::random::<u32>()));
        let log = std::fs::File::create(&out).map_err(|e| ChaosError::io(&out, e))?;
        let mut command = Command::new(&self.options.exe);
        if let Runtime::Docker { project } = &self.options.runtime {
            command.env("OBSCTL_PROJECT", project);
        }
        command
            .arg("run")
            .args(args)
            .arg("--state-dir")
            .arg(self.store.dir())
            .args(["--otlp-endpoint", &self.target.otlp_endpoint()])
            .args([
                "--otlp-protocol",
                "http/protobuf",
                "--runner",
                self.target.runner(),
                "-o",
                "json",
            ])
            .env(env::OBSCTL_SPOOL_DIR, self.dir.join("spool"))
            .env_remove(env::OBSCTL_EXPORT_BUDGET_MS)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map(RunProcess)
            .map_err(|e| ChaosError::io(&self.options.exe, e))
    }

    /// Polls the run records until `found` picks something out of them.
    async fn wait_for<T>(
        &self,
        what: &str,
        mut found: impl FnMut(&[RunRecord]) -> Option<T>,
    ) -> Result<T, ChaosError> {
        let started = Instant::now();
        loop {
            let records = self.store.list().unwrap_or_default();
            if let Some(t) = found(&records) {
                return Ok(t);
            }
            if started.elapsed() > RUN_DEADLINE {
                return Err(ChaosError::Deadline(what.into(), RUN_DEADLINE));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The repeats the backends absorbed during the scenario (idempotent ingest), held to
    /// `allowed`, what `window` explains; `None` when a backend does not count them.
    async fn duplicates(&self, allowed: u64, window: &str) -> Result<Option<Row>, ChaosError> {
        let (Some(before), Some(now)) = (
            self.absorbed_before,
            self.target.absorbed(&self.options.connector).await?,
        ) else {
            return Ok(None);
        };
        let got = now.since(&before);
        Ok(Some(Row::within(
            "duplicates-absorbed",
            allowed,
            got.total(),
            format!(
                "{} duplicate(s) absorbed by the backend (spans {}, log records {}, metric \
                 points {}); allowed {allowed}: {window}",
                got.total(),
                got.spans,
                got.logs,
                got.metric_points
            ),
        )))
    }

    fn backends(&self) -> Result<Backends, ChaosError> {
        Ok(self.target.backends(&self.options.connector)?)
    }

    /// The trace of `run` as the backend holds it (empty when there is no run or no trace).
    async fn trace_of(
        &self,
        run: Option<&RunRecord>,
    ) -> Result<crate::backends::tempo::Trace, ChaosError> {
        Ok(match run {
            Some(r) => self
                .backends()?
                .tempo
                .trace(r.trace_id)
                .await?
                .unwrap_or_default(),
            None => Default::default(),
        })
    }

    /// Every run of the scenario against what the backend holds: verify's checks that apply
    /// (chaos workflows publish no links) and the line-by-line log account.
    ///
    /// Repeats are held to what the at-least-once window explains: the attempts whose shim got
    /// no answer before its export deadline, and `in_flight` of `records` (those exporting when
    /// a fault hit, `lines_per_attempt` lines each).
    async fn judge(
        &self,
        in_flight: impl FnOnce(&[RunRecord]) -> u64,
        lines_per_attempt: u64,
    ) -> Result<(Vec<Row>, WaitReport, Vec<RunRecord>), ChaosError> {
        let records = self.store.list()?;
        let expectation = Expectation::new(records.clone(), &records);
        let options = CollectOptions {
            timeout: self.options.timeout,
            service_name: DEFAULT_SERVICE_NAME.into(),
        };
        let backends = self.backends()?;
        let (observed, wait) = collect(&backends, &expectation, &options).await?;
        let mut rows: Vec<Row> = run_all(&expectation, &observed, &Thresholds::default())
            .iter()
            .filter(|r| r.status != CheckStatus::NotApplicable)
            .map(Row::from)
            .collect();
        let printed = printed_lines(self.store.dir(), &expectation);
        rows.push(log_lines(&printed, &observed.logs));
        let in_flight = in_flight(&records);
        let (doubted, doubted_lines) = in_doubt(self.store.dir(), &expectation);
        let attempts = in_flight + doubted;
        let allowed = attempts * 2 * SPANS_OR_SERIES_PER_ATTEMPT
            + in_flight * lines_per_attempt
            + doubted_lines;
        let window = format!(
            "{doubted} attempt(s) got no answer before their export deadline, {in_flight} were \
             exporting when the fault hit"
        );
        match self.duplicates(allowed, &window).await? {
            Some(row) => rows.push(row),
            None => allow_in_doubt(&mut rows, attempts, lines_per_attempt),
        }
        Ok((rows, wait, records))
    }
}

/// An `obsctl run` chaos started: killed if the scenario ends early (Ctrl-C, a failure), so no
/// controller outlives chaos (its steps die with it, by PDEATHSIG).
struct RunProcess(Child);

impl RunProcess {
    async fn wait(&mut self) -> Result<std::process::ExitStatus, ChaosError> {
        let started = Instant::now();
        loop {
            if let Some(status) = self
                .0
                .try_wait()
                .map_err(|e| ChaosError::Run(e.to_string()))?
            {
                return Ok(status);
            }
            if started.elapsed() > RUN_DEADLINE {
                return Err(ChaosError::Deadline(
                    "the workflow's end".into(),
                    RUN_DEADLINE,
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.0.id() as i32)
    }
}

impl Drop for RunProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn pods(record: &RunRecord) -> impl Iterator<Item = &NodeStatus> {
    record
        .status
        .nodes
        .values()
        .filter(|n| n.node_type == NodeType::Pod)
}

fn succeeded_pods(records: &[RunRecord]) -> usize {
    records
        .iter()
        .flat_map(pods)
        .filter(|n| n.phase == Phase::Succeeded)
        .count()
}

fn condition_phase(records: &[RunRecord]) -> Row {
    let ok = records
        .iter()
        .filter(|r| r.status.phase == Phase::Succeeded)
        .count();
    let detail = records
        .iter()
        .filter(|r| r.status.phase != Phase::Succeeded)
        .map(|r| {
            format!(
                "run {} ended {}: {}",
                r.name,
                r.status.phase,
                r.status.message.clone().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    Row::condition(
        "workflow-succeeded",
        ok == records.len() && !records.is_empty(),
        records.len() as u64,
        ok as u64,
        detail,
    )
}

fn ms_since(origin: SystemTime, t: SystemTime) -> u64 {
    t.duration_since(origin).unwrap_or_default().as_millis() as u64
}

fn timeline(records: &[RunRecord], fault: Option<(SystemTime, SystemTime)>) -> Timeline {
    let origin = records
        .iter()
        .filter_map(|r| r.status.started_at.as_deref().and_then(clock::parse))
        .min()
        .unwrap_or_else(SystemTime::now);
    let steps = records
        .iter()
        .flat_map(pods)
        .filter_map(|n| {
            let start = clock::parse(n.started_at.as_deref()?)?;
            let end = clock::parse(n.finished_at.as_deref()?)?;
            Some(TimelineStep {
                node: n.name.clone(),
                start_ms: ms_since(origin, start),
                end_ms: ms_since(origin, end),
                phase: n.phase.to_string(),
            })
        })
        .collect();
    Timeline {
        fault: fault.map(|(a, b)| (ms_since(origin, a), ms_since(origin, b))),
        steps,
    }
}

fn report(
    scenario: Scenario,
    rows: Vec<Row>,
    records: &[RunRecord],
    timings: Vec<Measure>,
    fault: Option<(SystemTime, SystemTime)>,
) -> ScenarioReport {
    ScenarioReport {
        scenario: scenario.name(),
        passed: rows.iter().all(|r| r.passed),
        elapsed_ms: 0,
        runs: records.iter().map(|r| r.name.clone()).collect(),
        timeline: timeline(records, fault),
        rows,
        timings,
    }
}

/// Runs one scenario.
pub async fn run(
    options: &Options,
    scenario: Scenario,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<ScenarioReport, ChaosError> {
    let phase = |p: &str| {
        progress(Progress::Phase {
            scenario: scenario.name(),
            phase: p.to_string(),
        })
    };
    phase(match options.runtime {
        Runtime::Embedded => "starting the embedded backend",
        Runtime::Docker { .. } => "attaching to the Docker stack's collector",
    });
    let started = Instant::now();
    let mut stage = Stage::new(options, scenario).await?;
    let store = stage.store.clone();
    let scenario_steps = async {
        loop {
            tokio::time::sleep(STEPS_EVERY).await;
            let records = store.list().unwrap_or_default();
            let count = |want: fn(Phase) -> bool| {
                records
                    .iter()
                    .flat_map(pods)
                    .filter(|n| want(n.phase))
                    .count()
            };
            progress(Progress::Steps {
                scenario: scenario.name(),
                finished: count(Phase::is_finished),
                running: count(|p| p == Phase::Running),
            });
        }
    };
    let work = async {
        match scenario {
            Scenario::PodKill => pod_kill(&stage, &phase).await,
            Scenario::Outage(mode) => outage(&mut stage, mode, &phase).await,
            Scenario::Burst => burst(&stage, &phase).await,
            Scenario::ControllerRestart => controller_restart(&stage, &phase).await,
        }
    };
    let mut report = tokio::select! {
        report = work => report?,
        never = scenario_steps => never,
    };
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// A running Pod node whose shim announced its span and that has printed at least `lines`
/// lines: where it runs, and its span.
fn running_step(
    record: &RunRecord,
    store: &Path,
    lines: usize,
    skip: &[String],
) -> Option<(RunningStep, SpanId)> {
    pods(record).find_map(|n| {
        let t = n.telemetry.as_ref()?;
        if n.phase != Phase::Running || skip.contains(&n.id) {
            return None;
        }
        let log = store
            .join(&record.name)
            .join(format!("{}.{}", n.id, t.attempt))
            .join("log");
        let printed = std::fs::read_to_string(log).map_or(0, |t| t.lines().count());
        (printed >= lines).then(|| {
            let step = RunningStep {
                run: record.name.clone(),
                node: n.id.clone(),
                process_group: n.process_group,
            };
            (step, t.span_id)
        })
    })
}

async fn pod_kill(stage: &Stage<'_>, phase: &dyn Fn(&str)) -> Result<ScenarioReport, ChaosError> {
    let file = stage.workflow("chaos-pod-kill.yaml", POD_KILL)?;
    let mut child = stage.run(&[file.display().to_string()])?;
    phase("waiting for steps to run");
    let store_dir = stage.store.dir().to_path_buf();
    let (deleted, deleted_span) = stage
        .wait_for("a running step", |r| {
            r.first().and_then(|r| running_step(r, &store_dir, 5, &[]))
        })
        .await?;
    let (oom, oom_span) = stage
        .wait_for("a second running step", |r| {
            r.first()
                .and_then(|r| running_step(r, &store_dir, 5, std::slice::from_ref(&deleted.node)))
        })
        .await?;
    phase("deleting one pod (SIGTERM, grace, SIGKILL), OOM-killing another (SIGKILL)");
    let fault_start = SystemTime::now();
    stage.target.kill_step(&oom).await?;
    stage.target.delete_step(&deleted, GRACE).await?;
    let fault_end = SystemTime::now();
    let (deleted, oom) = (deleted.node, oom.node);
    phase("waiting for the retries");
    child.wait().await?;
    phase("accounting");
    let (mut rows, wait, records) = stage.judge(|_| 0, 0).await?;
    rows.insert(0, condition_phase(&records));
    let trace = stage.trace_of(records.first()).await?;
    let span = |id: SpanId| trace.spans.iter().find(|s| s.span_id == id);
    let killed = |id: SpanId, signal: &str, outside: bool| {
        let s = span(id);
        let ok = s.is_some_and(|s| {
            s.status.code == crate::backends::tempo::StatusCode::Error
                && s.attribute(attr::PROCESS_SIGNAL) == Some(signal)
                && s.attribute(attr::RECORDED_BY_RUNNER).is_some() == outside
        });
        let seen = s.map_or_else(
            || "no span".to_string(),
            |s| {
                let value = |key| {
                    s.attribute(key)
                        .map_or_else(|| "unset".into(), crate::ui::quoted)
                };
                format!(
                    "status {}, {}={}, {}={}",
                    s.status.code,
                    attr::PROCESS_SIGNAL,
                    value(attr::PROCESS_SIGNAL),
                    attr::RECORDED_BY_RUNNER,
                    value(attr::RECORDED_BY_RUNNER)
                )
            },
        );
        (ok, seen)
    };
    let (ok, seen) = killed(deleted_span, "SIGTERM", false);
    rows.insert(
        1,
        Row::condition(
            "deleted-pod-span",
            ok,
            1,
            u64::from(ok),
            format!("node {deleted}: {seen}"),
        ),
    );
    let (ok, seen) = killed(oom_span, "SIGKILL", true);
    rows.insert(
        2,
        Row::condition(
            "killed-pod-recorded-outside",
            ok,
            1,
            u64::from(ok),
            format!("node {oom}: {seen}"),
        ),
    );
    let timings = vec![Measure::new("verify_wait_ms", wait.elapsed_ms as f64, "ms")];
    Ok(report(
        Scenario::PodKill,
        rows,
        &records,
        timings,
        Some((fault_start, fault_end)),
    ))
}

/// Lines each `chaos-steady.yaml` step prints.
const STEADY_LINES: u64 = 3;
/// Spans, and counter series, one step attempt exports.
const SPANS_OR_SERIES_PER_ATTEMPT: u64 = 3;

/// Attempts whose export may have been under way when the fault hit: they were running then and
/// their shim exited within one export budget after it (a request in doubt holds its shim until
/// its deadline). A backend killed, frozen or cut off between its commit of such a request and
/// its answer leaves the request in doubt: the shim spools it and the replay delivers it again.
/// OTLP is at least once by design; these are the only duplicates the outage may cause.
fn in_flight_attempts(records: &[RunRecord], fault_start: SystemTime) -> u64 {
    let budget = crate::shim::DEFAULT_EXPORT_BUDGET + DELAY_SLACK;
    records
        .iter()
        .flat_map(pods)
        .filter(|n| {
            let started = n.started_at.as_deref().and_then(clock::parse);
            let finished = n.finished_at.as_deref().and_then(clock::parse);
            matches!((started, finished), (Some(s), Some(f))
                if s <= fault_start && f >= fault_start && f <= fault_start + budget)
        })
        .count() as u64
}

/// For backends that do not absorb repeats (they answer no `/api/status`): duplicates within
/// the at-least-once window pass, named as such; anything beyond it (or any loss) still fails.
/// Each in-doubt attempt may repeat its span, its counts and its lines.
fn allow_in_doubt(rows: &mut [Row], in_flight: u64, lines_per_attempt: u64) {
    for row in rows
        .iter_mut()
        .filter(|r| !r.passed && r.lost == 0 && r.duplicated > 0)
    {
        let bound = match row.check.as_str() {
            "span-coverage" | "counter-parity" => in_flight * SPANS_OR_SERIES_PER_ATTEMPT,
            "log-lines" => in_flight * lines_per_attempt,
            _ => 0,
        };
        let only_dup = row.items.iter().all(|i| !i.starts_with("lost"));
        if only_dup && row.duplicated <= bound {
            row.passed = true;
            row.items.push(format!(
                "{} duplicate(s) within the at-least-once window: {in_flight} attempt(s) were \
                 exporting when the fault hit",
                row.duplicated
            ));
        }
    }
}

/// Mean step duration inside and outside the fault window, and the worst added delay.
fn step_delays(records: &[RunRecord], fault: (SystemTime, SystemTime)) -> (f64, f64, Duration) {
    let mut inside = Vec::new();
    let mut outside = Vec::new();
    for n in records.iter().flat_map(pods) {
        let (Some(start), Some(end)) = (
            n.started_at.as_deref().and_then(clock::parse),
            n.finished_at.as_deref().and_then(clock::parse),
        ) else {
            continue;
        };
        let took = end.duration_since(start).unwrap_or_default();
        if end >= fault.0 && start <= fault.1 {
            inside.push(took);
        } else {
            outside.push(took);
        }
    }
    let mean = |v: &[Duration]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len() as f64
        }
    };
    let baseline = mean(&outside);
    let worst = inside
        .iter()
        .map(|d| d.saturating_sub(Duration::from_secs_f64(baseline)))
        .max()
        .unwrap_or_default();
    (mean(&inside), baseline, worst)
}

async fn outage(
    stage: &mut Stage<'_>,
    mode: OutageMode,
    phase: &dyn Fn(&str),
) -> Result<ScenarioReport, ChaosError> {
    let file = stage.workflow("chaos-steady.yaml", STEADY)?;
    let step = 0.5;
    // The four steps before the fault, then two steps at a time for the outage and four
    // seconds more, so the run outlives the fault (no more: a longer run is only slower).
    let took = step + stage.target.step_start().as_secs_f64();
    let count = 4 + (((stage.options.outage.as_secs_f64() + 4.0) / took) * 2.0).ceil() as u32;
    let mut child = stage.run(&[
        file.display().to_string(),
        "-p".into(),
        format!("count={count}"),
        "-p".into(),
        format!("seconds={step}"),
        "-p".into(),
        format!("taskId=chaos-outage-{}", mode.as_str()),
    ])?;
    phase("waiting for steps to run");
    stage
        .wait_for("four finished steps", |r| {
            (succeeded_pods(r) >= 4).then_some(())
        })
        .await?;
    phase(&format!(
        "outage ({}) for {:.1} s",
        mode.as_str(),
        stage.options.outage.as_secs_f64()
    ));
    let fault_start = SystemTime::now();
    stage.target.inject(mode).await?;
    tokio::time::sleep(stage.options.outage).await;
    stage.target.recover(mode).await?;
    let fault_end = SystemTime::now();
    phase("recovered; waiting for the workflow");
    child.wait().await?;
    phase("accounting");
    let in_flight = |records: &[RunRecord]| match mode {
        // A graceful stop answers what it already received.
        OutageMode::Stop => 0,
        _ => in_flight_attempts(records, fault_start),
    };
    let (mut rows, wait, records) = stage.judge(in_flight, STEADY_LINES).await?;
    rows.insert(0, condition_phase(&records));
    let (inside, outside, worst) = step_delays(&records, (fault_start, fault_end));
    let budget = crate::shim::DEFAULT_EXPORT_BUDGET;
    // A step's start varies with it: a container's start varies by about its own length.
    let slack = DELAY_SLACK + stage.target.step_start();
    rows.insert(
        1,
        Row::within(
            "added-delay-ms",
            (budget + slack).as_millis() as u64,
            worst.as_millis() as u64,
            format!(
                "worst step delay added by the outage {} ms; limit: the {} ms export budget + {} ms slack",
                worst.as_millis(),
                budget.as_millis(),
                slack.as_millis()
            ),
        ),
    );
    let timings = vec![
        Measure::new("steps", f64::from(count), ""),
        Measure::new("step_ms_during_outage", inside * 1000.0, "ms"),
        Measure::new("step_ms_otherwise", outside * 1000.0, "ms"),
        Measure::new(
            "step_time_ratio",
            if outside > 0.0 { inside / outside } else { 0.0 },
            "×",
        ),
        Measure::new("worst_added_delay_ms", worst.as_secs_f64() * 1000.0, "ms"),
        Measure::new("verify_wait_ms", wait.elapsed_ms as f64, "ms"),
    ];
    Ok(report(
        Scenario::Outage(mode),
        rows,
        &records,
        timings,
        Some((fault_start, fault_end)),
    ))
}

async fn burst(stage: &Stage<'_>, phase: &dyn Fn(&str)) -> Result<ScenarioReport, ChaosError> {
    let file = stage.workflow("burst.yaml", BURST)?;
    let steps = stage.options.steps;
    phase(&format!("{steps} parallel steps"));
    let started = Instant::now();
    let mut child = stage.run(&[
        file.display().to_string(),
        "-p".into(),
        format!("count={steps}"),
    ])?;
    child.wait().await?;
    let run_took = started.elapsed();
    phase("accounting");
    let (mut rows, wait, records) = stage.judge(|_| 0, 0).await?;
    rows.insert(0, condition_phase(&records));
    let scrape_started = Instant::now();
    let scrape = reqwest::get(stage.target.metrics_url())
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| ChaosError::Backend(format!("scraping /metrics: {e}")))?
        .bytes()
        .await
        .map_err(|e| ChaosError::Backend(format!("scraping /metrics: {e}")))?;
    let scrape_took = scrape_started.elapsed();
    let timings = vec![
        Measure::new("steps", f64::from(steps), ""),
        Measure::new("run_ms", run_took.as_secs_f64() * 1000.0, "ms"),
        Measure::new(
            "run_ms_per_step",
            run_took.as_secs_f64() * 1000.0 / f64::from(steps.max(1)),
            "ms",
        ),
        // collect() starts polling when the run has ended: this is run end → all visible.
        Measure::new("ingest_lag_ms", wait.elapsed_ms as f64, "ms"),
        Measure::new("scrape_bytes", scrape.len() as f64, "bytes"),
        Measure::new("scrape_ms", scrape_took.as_secs_f64() * 1000.0, "ms"),
    ];
    Ok(report(Scenario::Burst, rows, &records, timings, None))
}

async fn controller_restart(
    stage: &Stage<'_>,
    phase: &dyn Fn(&str),
) -> Result<ScenarioReport, ChaosError> {
    let file = stage.workflow("chaos-steady.yaml", STEADY)?;
    let mut child = stage.run(&[
        file.display().to_string(),
        "-p".into(),
        "count=12".into(),
        "-p".into(),
        "seconds=1".into(),
        "-p".into(),
        "taskId=chaos-controller-restart".into(),
    ])?;
    phase("waiting for steps to run");
    let store_dir = stage.store.dir().to_path_buf();
    let name = stage
        .wait_for("two finished steps and one running", |records| {
            let r = records.first()?;
            (succeeded_pods(records) >= 2 && running_step(r, &store_dir, 1, &[]).is_some())
                .then(|| r.name.clone())
        })
        .await?;
    phase("kill -9 of obsctl run");
    let fault_start = SystemTime::now();
    // A container that ended before the freeze is recorded by its controller once it sees the
    // exit: the kill waits for that, so every step the record calls running really was.
    let freezing = Instant::now();
    let mut frozen = stage.target.before_controller_death(&name).await?;
    while let Some(nodes) = &frozen {
        if freezing.elapsed() > RUN_DEADLINE {
            return Err(ChaosError::Deadline(
                "the run record to show only frozen steps running".into(),
                RUN_DEADLINE,
            ));
        }
        let caught_up = stage
            .store
            .list()
            .unwrap_or_default()
            .first()
            .is_some_and(|r| {
                pods(r)
                    .filter(|n| n.phase == Phase::Running)
                    .all(|n| nodes.contains(&n.id))
            });
        if caught_up {
            break;
        }
        tokio::time::sleep(POLL).await;
        frozen = stage.target.before_controller_death(&name).await?;
    }
    let _ = kill(child.pid(), Signal::SIGKILL);
    child.wait().await?;
    stage.target.steps_die_with_controller(&name).await?;
    let fault_end = SystemTime::now();
    phase("obsctl run --resume");
    let mut resumed = stage.run(&["--resume".into(), name.clone()])?;
    resumed.wait().await?;
    phase("accounting");
    let (mut rows, wait, records) = stage.judge(|_| 0, 0).await?;
    rows.insert(0, condition_phase(&records));
    let interrupted: Vec<_> = records
        .iter()
        .flat_map(pods)
        .flat_map(|n| n.interrupted.iter())
        .collect();
    let trace = stage.trace_of(records.first()).await?;
    let recorded = interrupted
        .iter()
        .filter(|t| {
            trace.spans.iter().any(|s| {
                s.span_id == t.span_id
                    && s.attribute(attr::RECORDED_BY_RUNNER)
                        == Some(crate::workflow::engine::INTERRUPTED_BY_RESTART)
            })
        })
        .count();
    rows.insert(
        1,
        Row::condition(
            "interrupted-attempts-recorded",
            !interrupted.is_empty() && recorded == interrupted.len(),
            interrupted.len() as u64,
            recorded as u64,
            if interrupted.is_empty() {
                "the kill interrupted no attempt that had started".into()
            } else {
                String::new()
            },
        ),
    );
    let roots = trace
        .spans
        .iter()
        .filter(|s| s.parent_span_id.is_none())
        .count();
    rows.insert(
        2,
        Row::condition("one-root", roots == 1, 1, roots as u64, String::new()),
    );
    let timings = vec![Measure::new("verify_wait_ms", wait.elapsed_ms as f64, "ms")];
    Ok(report(
        Scenario::ControllerRestart,
        rows,
        &records,
        timings,
        Some((fault_start, fault_end)),
    ))
}
