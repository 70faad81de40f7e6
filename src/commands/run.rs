//! `obsctl run`: argument handling and output only; the executor is `workflow::engine`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::CommandError;
use crate::conventions::attr;
use crate::stack::endpoints::Endpoints;
use crate::workflow::clock;
use crate::workflow::engine::{self, Event, RunConfig};
use crate::workflow::load;
use crate::workflow::record::{Phase, RecordError, RecordStore, RunRecord};
use crate::workflow::runner::{ProcessRunner, TmpIsolation};
use crate::workflow::telemetry::{self, OtelConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit code: 0 when the workflow Succeeded, 1 when it Failed or Errored, 2 for \
invalid input (nothing is started; also an OTLP TLS file for container steps that is not \
there), 3 when --runner docker cannot reach Docker. With \
--argo-server: the workflow's phase on the server, 2 also when the server refuses the workflow \
(400, unknown namespace), 3 when it cannot be reached or refuses the token (docs/argo.md). Supported subset, \
runner and resume: docs/workflows.md; steps as containers: docs/observability.md."
)]
pub struct Args {
    /// The Argo Workflow YAML to run (optional with --resume: the recorded file is used).
    pub file: Option<PathBuf>,
    /// Set a workflow parameter declared in spec.arguments (repeatable).
    #[arg(short = 'p', long = "parameter", value_name = "NAME=VALUE")]
    pub parameters: Vec<String>,
    /// How to print the result: a table of nodes and outputs, or Argo-shaped JSON.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Where run records are kept [default: $XDG_STATE_HOME/obsctl/runs].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Continue the interrupted run NAME: finished nodes are kept, interrupted ones run again.
    #[arg(long, value_name = "NAME")]
    pub resume: Option<String>,
    /// OTLP endpoint given to steps and used for the root span [default: the running stack's
    /// (`obsctl serve`/`up`), else $OTEL_EXPORTER_OTLP_ENDPOINT, else http://127.0.0.1:4317].
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// OTLP protocol: grpc, http/protobuf or http/json [default: $OTEL_EXPORTER_OTLP_PROTOCOL, else grpc].
    #[arg(long, value_name = "PROTOCOL")]
    pub otlp_protocol: Option<String>,
    /// OTEL_TRACES_SAMPLER_ARG for the steps' parentbased_traceidratio sampler.
    #[arg(long, default_value = "1.0", value_name = "RATIO")]
    pub sampler_ratio: String,
    /// deployment.environment of the steps [default: the workflow's `env` parameter, else local].
    #[arg(long, value_name = "NAME")]
    pub environment: Option<String>,
    /// Kubernetes namespace recorded for the run (metadata.namespace wins) [default: default;
    /// with --argo-server the namespace submitted to: $ARGO_NAMESPACE, else argo].
    #[arg(long)]
    pub namespace: Option<String>,
    /// Submit to this Argo Server instead of running locally (`https://host:2746` or
    /// `host:port`; alone: $ARGO_SERVER), instrumented as `obsctl instrument` does, and follow
    /// it. $ARGO_TOKEN, $ARGO_SECURE, $ARGO_INSECURE_SKIP_VERIFY, $ARGO_HTTP1 and $ARGO_BASE_HREF
    /// work as for the argo CLI. Ctrl-C stops the workflow, a second Ctrl-C detaches.
    #[arg(
        long,
        value_name = "URL",
        num_args = 0..=1,
        conflicts_with_all = ["resume", "no_shim", "runner"]
    )]
    pub argo_server: Option<Option<String>>,
    /// With --argo-server: a file holding the token (`Bearer …` or the bare token) instead of
    /// $ARGO_TOKEN. The token is never printed, logged or recorded.
    #[arg(long, value_name = "FILE", requires = "argo_server")]
    pub token_file: Option<PathBuf>,
    /// With --argo-server: the image carrying obsctl that each pod copies the shim from.
    #[arg(long, default_value = crate::argo::instrument::DEFAULT_IMAGE, requires = "argo_server")]
    pub obsctl_image: String,
    /// Run step commands bare, without `obsctl shim` around them (no step spans or metrics).
    #[arg(long)]
    pub no_shim: bool,
    /// How each process step gets a /tmp of its own (output files such as /tmp/preview_url).
    #[arg(long, value_enum, default_value_t = TmpIsolation::Auto)]
    pub tmp_isolation: TmpIsolation,
    /// Where steps run: local processes, or Docker containers with the template's image (on the
    /// Docker stack's network when `obsctl up` started it). `auto`: docker when the Docker stack
    /// is up, else process.
    #[arg(long, value_enum, default_value = "auto")]
    pub runner: RunnerChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RunnerChoice {
    Auto,
    Process,
    Docker,
}

fn invalid(err: impl Into<anyhow::Error>) -> anyhow::Error {
    CommandError::new(2, err).into()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = RecordStore::new(
        args.state_dir
            .clone()
            .unwrap_or_else(crate::paths::default_state_dir),
    );
    let mut overrides = Vec::new();
    for p in &args.parameters {
        let (name, value) = p
            .split_once('=')
            .ok_or_else(|| invalid(anyhow::anyhow!("-p {p:?}: expected NAME=VALUE")))?;
        overrides.push((name.to_string(), value.to_string()));
    }
    if let Some(server) = &args.argo_server {
        return run_on_argo(&args, server.as_deref(), &store, &overrides);
    }
    let (loaded, record) = match &args.resume {
        Some(name) => {
            if !overrides.is_empty() {
                return Err(invalid(anyhow::anyhow!(
                    "--resume keeps the parameters of the run; -p cannot change them"
                )));
            }
            let record = store.load(name).map_err(|e| match e {
                RecordError::NotFound { .. } => invalid(e),
                other => other.into(),
            })?;
            if record.status.phase.is_finished() {
                eprintln!("obsctl: run {name} already finished; nothing to resume");
                return Ok(report(&record, args.output));
            }
            let file = args
                .file
                .clone()
                .unwrap_or_else(|| record.workflow_file.clone());
            let params: Vec<(String, String)> = record
                .parameters
                .iter()
                .map(|p| (p.name.clone(), p.value.clone()))
                .collect();
            let loaded = load::load(&file, &params).map_err(invalid)?;
            engine::check_resume(&record, &loaded).map_err(invalid)?;
            (loaded, record)
        }
        None => {
            let file = args.file.clone().ok_or_else(|| {
                invalid(anyhow::anyhow!(
                    "a workflow FILE is required (or --resume NAME)"
                ))
            })?;
            let mut loaded = load::load(&file, &overrides).map_err(invalid)?;
            if let Some(task_id) = fresh_task_id(&loaded, &overrides) {
                overrides.push((attr::TASK_ID.to_string(), task_id));
                loaded = load::load(&file, &overrides).map_err(invalid)?;
            }
            let record = engine::new_record(&loaded, local_namespace(&args));
            (loaded, record)
        }
    };
    if !loaded.kubernetes_only.is_empty() {
        crate::ui::debug(
            1,
            format!(
                "ignored, as only a Kubernetes scheduler acts on them: {}",
                loaded.kubernetes_only.join(", ")
            ),
        );
    }
    if !loaded.memoized.is_empty() {
        crate::ui::debug(
            1,
            format!(
                "memoize is accepted but nothing is cached locally; these templates always run: {}",
                loaded.memoized.join(", ")
            ),
        );
    }
    let shim = if args.no_shim {
        None
    } else {
        Some(std::env::current_exe().context("cannot find the obsctl executable for the shim")?)
    };
    let use_docker = match args.runner {
        RunnerChoice::Process => false,
        RunnerChoice::Docker => true,
        RunnerChoice::Auto => Endpoints::load(&Endpoints::default_path())
            .is_some_and(|e| e.runtime == crate::stack::endpoints::Runtime::Docker),
    };
    let otel = otel_config(&args, &loaded.parameters);
    // One sampling decision per run, kept in the record so that `verify` knows which runs have
    // no spans by design; a resumed run keeps the decision it started with.
    let mut record = record;
    if record.sampled.is_none() {
        record.sampled = Some(otel.run_sampled(record.trace_id));
    }
    let config = RunConfig {
        store: store.clone(),
        otel,
        namespace: local_namespace(&args).to_string(),
    };
    let view = LiveView::new();
    let events = view.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let on_event: Box<dyn Fn(Event) + Send + Sync> = Box::new(move |e| events.event(e));
    let outcome = if use_docker {
        let docker = rt
            .block_on(crate::workflow::runner::docker::docker_runner(
                shim.is_some(),
                &record.name,
            ))
            .map_err(|e| match e {
                // A TLS file the steps cannot get is the user's input, like a bad flag.
                e @ crate::workflow::runner::docker::StepsError::ExporterFile { .. } => invalid(e),
                e => CommandError::new(3, e).into(),
            })?;
        rt.block_on(engine::run_stoppable(
            loaded, record, docker, config, on_event, true,
        ))?
    } else {
        let runner = ProcessRunner::with_isolation(shim, args.tmp_isolation).map_err(invalid)?;
        rt.block_on(engine::run_stoppable(
            loaded, record, runner, config, on_event, true,
        ))?
    };
    view.finish();
    if let Some(e) = &outcome.export_error {
        eprintln!("obsctl: warning: root span not delivered: {e}");
    }
    if let Some(drained) = &outcome.drained {
        if drained.delivered > 0 {
            crate::ui::debug(
                1,
                format!(
                    "delivered {} spooled request(s) ({} items) at the end of the run",
                    drained.delivered, drained.delivered_items
                ),
            );
        }
        if drained.remaining > 0 {
            eprintln!(
                "obsctl: warning: {} telemetry request(s) still spooled in {} ({}); \
                 `obsctl flush` delivers them once the collector answers",
                drained.remaining,
                crate::otlp::spool::Spool::env_dir().display(),
                drained
                    .stopped_by
                    .as_ref()
                    .map_or_else(|| "deadline reached".to_string(), ToString::to_string)
            );
        }
    }
    Ok(report(&outcome.record, args.output))
}

fn local_namespace(args: &Args) -> &str {
    args.namespace.as_deref().unwrap_or("default")
}

/// `--argo-server`: the run happens on the server; this process instruments, submits, follows
/// and records it, and prints the same result as a local run.
fn run_on_argo(
    args: &Args,
    server: Option<&str>,
    store: &RecordStore,
    overrides: &[(String, String)],
) -> anyhow::Result<ExitCode> {
    use crate::argo::client::{ArgoClient, ServerConfig};
    use crate::argo::instrument::{CheckPolicy, DEFAULT_ENDPOINT, Options};
    use crate::argo::remote::{RemoteError, RemoteRun};
    let file = args
        .file
        .clone()
        .ok_or_else(|| invalid(anyhow::anyhow!("a workflow FILE is required")))?;
    let config = ServerConfig::resolve(
        server,
        args.namespace.as_deref(),
        args.token_file.as_deref(),
        |k| std::env::var(k).ok(),
    )
    .map_err(invalid)?;
    let client = ArgoClient::new(config)?;
    let otel = otel_config(args, &[]);
    let instrument = Options {
        image: args.obsctl_image.clone(),
        otlp_endpoint: args
            .otlp_endpoint
            .clone()
            .unwrap_or_else(|| DEFAULT_ENDPOINT.into()),
        otlp_protocol: otel.protocol.clone(),
        sampler_ratio: args.sampler_ratio.clone(),
        check: CheckPolicy::Warn,
        traceparent: None,
        environment: otel.environment.clone(),
    };
    let view = LiveView::new();
    let events = view.clone();
    let on_event = move |e| events.event(e);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = rt.block_on(
        RemoteRun {
            client: &client,
            file: &file,
            overrides,
            instrument,
            otel,
            store: store.clone(),
        }
        .run(&on_event, || async {
            // Without a signal handler Ctrl-C kills the process as before: nothing is lost.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }),
    );
    view.finish();
    let outcome = outcome.map_err(|e| match &e {
        RemoteError::Instrument(_) | RemoteError::UnknownParameter { .. } => invalid(e),
        RemoteError::Submit(c) if c.is_invalid_input() => invalid(e),
        RemoteError::Submit(_) | RemoteError::Client(_) => CommandError::new(3, e).into(),
        RemoteError::Record(_) | RemoteError::NotInstrumented { .. } => e.into(),
    })?;
    if let Some(e) = &outcome.root_span_error {
        eprintln!("obsctl: warning: root span not delivered: {e}");
    }
    if outcome.detached {
        eprintln!(
            "obsctl: detached; workflow {} goes on on the Argo Server",
            outcome.record.name
        );
    }
    Ok(report(&outcome.record, args.output))
}

/// A fresh `taskId` when the workflow declares the parameter empty and `-p` gives none: each run
/// is then a task of its own, so its spans, histogram series and logs can be told from every
/// other run's (earlier CI jobs, re-runs) without a fixed id colliding across them.
fn fresh_task_id(loaded: &load::LoadedWorkflow, overrides: &[(String, String)]) -> Option<String> {
    let given = overrides.iter().any(|(name, _)| name == attr::TASK_ID);
    let declared_empty = loaded
        .parameters
        .iter()
        .any(|(name, value)| name == attr::TASK_ID && value.is_empty());
    (!given && declared_empty).then(telemetry::new_task_id)
}

/// Prints the run and answers the documented exit code.
fn report(record: &RunRecord, format: Format) -> ExitCode {
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&argo_json(record)).expect("records always serialize")
        ),
        Format::Table => print_table(record),
    }
    match record.status.phase {
        Phase::Succeeded => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

fn otel_config(args: &Args, params: &[(String, String)]) -> OtelConfig {
    let from_env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    use crate::otlp::export::{DEFAULT_PROTOCOL, Protocol};
    let protocol = args
        .otlp_protocol
        .clone()
        .or_else(|| from_env(crate::conventions::env::OTEL_EXPORTER_OTLP_PROTOCOL))
        .unwrap_or_else(|| DEFAULT_PROTOCOL.as_str().into());
    // An unknown protocol is reported by every step's shim; its endpoint is the default one's.
    let wire: Protocol = protocol.parse().unwrap_or(DEFAULT_PROTOCOL);
    let stack = Endpoints::load(&Endpoints::default_path());
    let endpoint = args
        .otlp_endpoint
        .clone()
        .or_else(|| stack.map(|s| s.otlp(wire).to_string()))
        .or_else(|| from_env(crate::conventions::env::OTEL_EXPORTER_OTLP_ENDPOINT))
        .unwrap_or_else(|| wire.default_endpoint().into());
    let environment = args
        .environment
        .clone()
        .or_else(|| {
            params
                .iter()
                .find(|(k, _)| k == "env")
                .map(|(_, v)| v.clone())
        })
        .unwrap_or_else(|| "local".into());
    OtelConfig {
        endpoint,
        protocol,
        sampler: "parentbased_traceidratio".into(),
        sampler_arg: args.sampler_ratio.clone(),
        environment,
    }
}

/// The live view: one spinner per running Pod node under a line of counts; nothing at all
/// when stderr is not a terminal or in CI.
#[derive(Clone)]
struct LiveView {
    inner: Option<Arc<Mutex<LiveInner>>>,
}

struct LiveInner {
    multi: MultiProgress,
    summary: ProgressBar,
    running: HashMap<String, ProgressBar>,
    done: usize,
    failed: usize,
}

impl LiveView {
    fn new() -> Self {
        if !crate::ui::progress_enabled() {
            return Self { inner: None };
        }
        let multi = MultiProgress::new();
        let summary = multi.add(ProgressBar::new_spinner());
        summary.enable_steady_tick(std::time::Duration::from_millis(120));
        Self {
            inner: Some(Arc::new(Mutex::new(LiveInner {
                multi,
                summary,
                running: HashMap::new(),
                done: 0,
                failed: 0,
            }))),
        }
    }

    fn event(&self, event: Event) {
        let Some(inner) = &self.inner else { return };
        let mut v = inner.lock().expect("live view lock");
        match event {
            Event::PodStarted { id, display } => {
                let bar = v.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("  {spinner} {msg} {elapsed}")
                        .expect("valid template"),
                );
                bar.set_message(display);
                bar.enable_steady_tick(std::time::Duration::from_millis(120));
                v.running.insert(id, bar);
            }
            Event::PodFinished { id, phase, .. } => {
                if let Some(bar) = v.running.remove(&id) {
                    bar.finish_and_clear();
                    v.multi.remove(&bar);
                }
                v.done += 1;
                if matches!(phase, Phase::Failed | Phase::Error) {
                    v.failed += 1;
                }
            }
        }
        let msg = format!(
            "running {}, done {}, failed {}",
            v.running.len(),
            v.done,
            v.failed
        );
        v.summary.set_message(msg);
    }

    fn finish(&self) {
        if let Some(inner) = &self.inner {
            let v = inner.lock().expect("live view lock");
            v.summary.finish_and_clear();
            let _ = v.multi.clear();
        }
    }
}

/// `{"metadata": ..., "status": ...}` as `argo get -o json` shapes it.
pub fn argo_json(record: &RunRecord) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": record.name,
            "namespace": record.namespace,
            "uid": record.trace_id.to_hex(),
            "creationTimestamp": record.status.started_at,
            "labels": {
                "workflows.argoproj.io/phase": record.status.phase.to_string(),
                "workflows.argoproj.io/completed": record.status.phase.is_finished().to_string(),
            },
        },
        "status": record.status,
    })
}

fn print_table(record: &RunRecord) {
    let mut nodes: Vec<_> = record.status.nodes.values().collect();
    nodes.sort_by(|a, b| (&a.started_at, &a.name).cmp(&(&b.started_at, &b.name)));
    let mut table = crate::report::table(
        [
            "NODE", "TYPE", "PHASE", "DURATION", "EXIT", "TRACE ID", "MESSAGE",
        ],
        crate::ui::color_enabled(),
    );
    for n in nodes {
        let duration = clock::between(n.started_at.as_deref(), n.finished_at.as_deref())
            .map(|d| format!("{:.2}s", d.as_secs_f64()))
            .unwrap_or_default();
        let exit = n
            .outputs
            .as_ref()
            .and_then(|o| o.exit_code.clone())
            .unwrap_or_default();
        let trace = n
            .telemetry
            .as_ref()
            .map(|t| t.trace_id.to_hex())
            .unwrap_or_default();
        table.add_row([
            n.display_name.clone(),
            n.node_type.to_string(),
            n.phase.to_string(),
            duration,
            exit,
            trace,
            n.message.clone().unwrap_or_default(),
        ]);
    }
    println!("{table}");
    println!(
        "{} {} (trace {})",
        record.name,
        record.status.phase,
        record.trace_id.to_hex()
    );
    if let Some(msg) = &record.status.message {
        println!("message: {msg}");
    }
    if let Some(outputs) = &record.status.outputs
        && !outputs.parameters.is_empty()
    {
        let mut out = crate::report::table(["OUTPUT", "VALUE"], crate::ui::color_enabled());
        for p in &outputs.parameters {
            out.add_row([p.name.clone(), p.value.clone()]);
        }
        println!("{out}");
    }
}
