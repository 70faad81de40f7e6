//! The demo: the whole product in one go. Uses the running stack when there is one, else starts
//! the embedded backend in-process; runs the bundled agent pipeline through the workflow engine
//! with every step wrapped by the shim; verifies it; loads the task's trace; stops what it started.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::backends::{BackendUrls, Connector, redact};
use crate::checks::collect::CollectOptions;
use crate::checks::expect::Expectation;
use crate::checks::{Thresholds, verify};
use crate::conventions::resource::DEFAULT_SERVICE_NAME;
use crate::embedded::{Config, Server};
use crate::report::task::{TaskQuery, TaskView, load as load_task};
use crate::report::verify::{BackendsUsed, VerifyReport};
use crate::stack::endpoints::Endpoints;
use crate::workflow::engine::{self, RunConfig};
use crate::workflow::load;
use crate::workflow::record::RecordStore;
use crate::workflow::runner::ProcessRunner;
use crate::workflow::telemetry::OtelConfig;

/// The sample pipeline, bundled so that `obsctl demo` works from any directory.
const PIPELINE: &str = include_str!("../workflows/agent-pipeline.yaml");
pub const PIPELINE_PATH: &str = "workflows/agent-pipeline.yaml";

/// What the user chose on the command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// Start a private in-process backend even when a stack is running.
    pub embedded: bool,
    /// How long verification waits for the telemetry to arrive.
    pub timeout: Duration,
    /// Where to record the demo run; `None`: a scratch directory with the in-process backend,
    /// the usual state directory with a running stack.
    pub state_dir: Option<PathBuf>,
    /// How to read a running stack (TLS, credentials, URLs in front of it); the demo's own
    /// in-process backend needs none.
    pub connector: Connector,
}

/// Everything the demo found, for the command to print.
pub struct Outcome {
    /// Which backend answered, for one line of output.
    pub backend: String,
    /// The demo started the backend in-process and stopped it again: nothing can link into it.
    pub own_backend: bool,
    pub run_name: String,
    pub phase: crate::workflow::record::Phase,
    pub trace_id: crate::otlp::TraceId,
    pub report: VerifyReport,
    /// The task's runs, traces and links; `None` when the pipeline ran without a task id.
    pub task: Option<TaskView>,
}

/// A stack recorded in the endpoints file that accepts connections on its query API.
fn running_stack() -> Option<Endpoints> {
    let endpoints = Endpoints::load(&Endpoints::default_path())?;
    let url = reqwest::Url::parse(&endpoints.tempo).ok()?;
    let addr: SocketAddr = (url.host_str()?, url.port_or_known_default()?)
        .to_socket_addrs()
        .ok()?
        .next()?;
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    Some(endpoints)
}

/// Sample parameters that make this run's series its own: a fresh task id and PR number, so
/// counter parity holds even against a stack that has seen earlier demos.
fn sample_parameters(declared: &[(String, String)]) -> Vec<(String, String)> {
    let n: u32 = rand::random_range(1000..100_000);
    let mut out = vec![];
    for (name, _) in declared {
        match name.as_str() {
            "taskId" => out.push((name.clone(), format!("demo-{n}"))),
            "pr" | "prNumber" => out.push((name.clone(), n.to_string())),
            "ref" => out.push((name.clone(), format!("refs/pull/{n}/head"))),
            _ => {}
        }
    }
    out
}

/// Runs the demo; the in-process backend (if one was started) is stopped before returning.
pub async fn run(args: Options) -> anyhow::Result<Outcome> {
    let stack = if args.embedded { None } else { running_stack() };
    let scratch = scratch_dir()?;
    let (server, endpoints, backend) = match stack {
        Some(endpoints) => {
            let backend = format!(
                "using the running {} stack ({})",
                endpoints.runtime, endpoints.tempo
            );
            (None, endpoints, backend)
        }
        None => {
            let server = Server::start(Config::ephemeral(scratch.join("data")))
                .await
                .context("starting the embedded backend")?;
            let endpoints = Endpoints::embedded(
                &server.otlp_grpc.to_string(),
                &server.otlp_http.to_string(),
                &server.api.to_string(),
            );
            let backend = format!(
                "embedded backend on {} (OTLP gRPC {})",
                endpoints.tempo, endpoints.otlp_grpc
            );
            (Some(server), endpoints, backend)
        }
    };
    let state_dir = args.state_dir.clone().unwrap_or_else(|| match server {
        Some(_) => scratch.join("runs"),
        None => crate::paths::default_state_dir(),
    });
    let connector = match server {
        Some(_) => {
            if !args.connector.is_default() {
                crate::ui::note(
                    "demo: the backend access options apply to a running stack; the demo's \
                     own backend is read directly",
                );
            }
            Connector::default()
        }
        None => args.connector.clone(),
    };
    let backend = match &connector.urls.tempo {
        Some(url) => format!("{backend}, read through {}", redact(url)),
        None => backend,
    };
    let mut outcome =
        pipeline_and_report(&endpoints, &connector, &state_dir, args.timeout, backend).await;
    // The in-process backend stops with the demo: links into it would be dead on arrival.
    if server.is_some()
        && let Ok(Outcome {
            task: Some(task), ..
        }) = &mut outcome
    {
        task.links.retain(|l| !l.url.starts_with(&endpoints.tempo));
    }
    if let Ok(o) = &mut outcome {
        o.own_backend = server.is_some();
    }
    if let Some(server) = server {
        server
            .shutdown()
            .await
            .context("stopping the embedded backend")?;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    outcome
}

/// A private scratch directory under the state home (the in-process backend's data, run
/// records); removed when the demo ends.
fn scratch_dir() -> anyhow::Result<PathBuf> {
    let dir = crate::paths::state_home().join(format!(
        "demo-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

async fn pipeline_and_report(
    endpoints: &Endpoints,
    connector: &Connector,
    state_dir: &Path,
    timeout: Duration,
    backend: String,
) -> anyhow::Result<Outcome> {
    let path = Path::new(PIPELINE_PATH);
    let declared = load::parse(path, PIPELINE, &[]).context("the bundled pipeline")?;
    let overrides = sample_parameters(&declared.parameters);
    let loaded = load::parse(path, PIPELINE, &overrides).context("the bundled pipeline")?;
    let shim = std::env::current_exe().context("cannot find the obsctl executable for the shim")?;
    // As `obsctl run` does: a private /tmp per step where the kernel allows it, else the
    // steps' /tmp/ paths rewritten (said once on stderr).
    let runner = ProcessRunner::new(Some(shim));
    let store = RecordStore::new(state_dir);
    let config = RunConfig {
        store: store.clone(),
        otel: OtelConfig {
            endpoint: endpoints.otlp_grpc.clone(),
            protocol: "grpc".into(),
            sampler: "parentbased_traceidratio".into(),
            sampler_arg: "1.0".into(),
            environment: "demo".into(),
        },
        namespace: "default".into(),
    };
    let record = engine::new_record(&loaded, "default");
    let outcome = engine::run(loaded, record, runner, config, Box::new(|_| {}))
        .await
        .context("running the demo pipeline")?;
    let record = outcome.record;

    let urls = BackendUrls {
        tempo: endpoints.tempo.clone(),
        prometheus: endpoints.prometheus.clone(),
        loki: endpoints.loki.clone(),
        grafana: endpoints.grafana.clone(),
    };
    let backends = connector.backends(urls)?;
    let all = store.list().context("reading run records")?;
    let expectation = Expectation::new(vec![record.clone()], &all);
    let thresholds = Thresholds::default();
    let options = CollectOptions {
        timeout,
        service_name: DEFAULT_SERVICE_NAME.into(),
    };
    let (wait, results, _) = verify(&backends, &expectation, &options, &thresholds)
        .await
        .context("querying the backends")?;
    let report = VerifyReport::new(
        &expectation,
        BackendsUsed {
            tempo: redact(&backends.urls.tempo),
            prometheus: redact(&backends.urls.prometheus),
            loki: redact(&backends.urls.loki),
        },
        &thresholds,
        wait,
        results,
    );
    let task = match crate::checks::expect::task_of(&record) {
        Some(task_id) => {
            let query = TaskQuery {
                task_id,
                with_logs: true,
                service_name: DEFAULT_SERVICE_NAME,
                state_dir: state_dir.to_path_buf(),
            };
            Some(load_task(&backends, &all, &query).await?)
        }
        None => None,
    };
    Ok(Outcome {
        backend,
        own_backend: false,
        run_name: record.name.clone(),
        phase: record.status.phase,
        trace_id: record.trace_id,
        report,
        task,
    })
}
