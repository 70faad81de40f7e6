//! Steps as containers: a workflow [`Runner`] that starts each Pod step as a Docker container,
//! the way Argo runs a pod: the template's image, the seed's pod labels, the same environment as
//! the process runner, `obsctl shim` as entrypoint, a private `/tmp` whose output files are read
//! after the container exits, and its logs captured.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptions, KillContainerOptions, LogsOptions};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use super::{
    Runner, RunnerError, ShimStart, StdoutLines, StepExit, StepHandle, StepSpec, host_tmp,
    open_log, prepare, stage_script,
};
use crate::conventions::{annotation, env};
use crate::stack::{definition, docker, endpoints};

/// Label naming the run a step container belongs to (`docker container prune --filter
/// label=io.obsctl.run=<name>` removes a run's finished steps, as deleting a Workflow removes its
/// pods).
pub const LABEL_RUN: &str = "io.obsctl.run";
/// Settings of the shim itself that a step container gets from `obsctl run`'s environment, as
/// a process step inherits them (the spool directory is bind-mounted, see [`spool_dir`]).
const SHIM_SETTINGS: [&str; 3] = [
    env::OBSCTL_SPOOL_MAX_BYTES,
    env::OBSCTL_EXPORT_BUDGET_MS,
    env::OBSCTL_DEFECT,
];
/// The spool a step's shim uses, bind-mounted at the same path in its container: shared with
/// the run and every other step, as on the host, so what one step could not deliver a later
/// step or the run's end replays (a spool inside the container would vanish with it).
fn spool_dir(spec: &StepSpec) -> PathBuf {
    spec.env
        .iter()
        .rev()
        .find(|(k, _)| k == env::OBSCTL_SPOOL_DIR)
        .map_or_else(crate::otlp::spool::Spool::env_dir, |(_, v)| {
            PathBuf::from(v)
        })
}

/// Where the shim bundle is mounted in every step container.
const BUNDLE_MOUNT: &str = "/.obsctl";
/// Where the OTLP exporter's files are mounted, each under its variable's name.
const OTLP_FILES_MOUNT: &str = "/.obsctl-otlp";

/// The OTLP exporter settings a step container gets from `obsctl run`'s environment, as a
/// process step inherits them. The CA, client certificate and key (and their per-signal forms)
/// are host paths: each file is bind-mounted read-only at a fixed path and its variable
/// rewritten to it. Headers, compression and the gRPC insecure switch pass as they are.
#[derive(Debug, Clone)]
pub struct ExporterSettings {
    /// Variable, host file.
    files: Vec<(String, PathBuf)>,
    passed: Vec<(String, String)>,
}

impl ExporterSettings {
    const FILES: [&str; 3] = [
        env::OTEL_EXPORTER_OTLP_CERTIFICATE,
        env::OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE,
        env::OTEL_EXPORTER_OTLP_CLIENT_KEY,
    ];
    const PASSED: [&str; 3] = [
        env::OTEL_EXPORTER_OTLP_HEADERS,
        env::OTEL_EXPORTER_OTLP_COMPRESSION,
        env::OTEL_EXPORTER_OTLP_INSECURE,
    ];

    /// The settings `lookup` (the process environment) holds; a file that is not there is an
    /// error naming its variable, before any step starts (Docker would otherwise mount an empty
    /// directory in its place).
    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, StepsError> {
        use crate::otlp::export::{Signal, signal_var};
        let with_signals = |general: &'static str| {
            std::iter::once(general.to_string())
                .chain(Signal::ALL.into_iter().map(move |s| signal_var(general, s)))
        };
        let get = |var: &str| lookup(var).filter(|v| !v.trim().is_empty());
        let mut files = Vec::new();
        for var in Self::FILES.into_iter().flat_map(with_signals) {
            if let Some(value) = get(&var) {
                let path = PathBuf::from(value.trim());
                if !path.is_file() {
                    return Err(StepsError::ExporterFile { var, path });
                }
                files.push((var, path));
            }
        }
        let passed = Self::PASSED
            .into_iter()
            .flat_map(with_signals)
            .filter_map(|var| get(&var).map(|v| (var, v)))
            .collect();
        Ok(Self { files, passed })
    }

    /// The variables as the container sees them, and the binds that put the files there;
    /// those `spec` sets itself (the template's own `env`) are left to it. None on the stack's
    /// network: there the endpoint is the local collector over plain HTTP, and the run's files
    /// and headers are for its own collector (a hosted gateway's token must not travel there
    /// in clear).
    fn for_step(
        &self,
        spec: &StepSpec,
        network: &StepNetwork,
    ) -> Result<(Vec<String>, Vec<String>), RunnerError> {
        if let StepNetwork::Stack { .. } = network {
            return Ok(Default::default());
        }
        let own = |var: &str| spec.env.iter().any(|(k, _)| k == var);
        let mut env = Vec::new();
        let mut binds = Vec::new();
        for (var, host) in self.files.iter().filter(|(var, _)| !own(var)) {
            if !host.is_file() {
                return Err(RunnerError::Prepare {
                    path: host.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("{var} names it, and it is no longer there"),
                    ),
                });
            }
            let mounted = format!("{OTLP_FILES_MOUNT}/{var}");
            binds.push(format!("{}:{mounted}:ro", host.display()));
            env.push(format!("{var}={mounted}"));
        }
        env.extend(
            self.passed
                .iter()
                .filter(|(var, _)| !own(var))
                .map(|(var, value)| format!("{var}={value}")),
        );
        Ok((env, binds))
    }
}

/// The obsctl binary with its dynamic loader and shared libraries, so that the shim runs in
/// images that have neither glibc nor obsctl (busybox, alpine): it is started through the
/// bundled loader, never through the image's.
#[derive(Debug, Clone)]
pub struct ShimBundle {
    pub dir: PathBuf,
}

impl ShimBundle {
    /// Copies the running executable and every shared object it has mapped (read from
    /// `/proc/self/maps`) into `dir`.
    pub fn build(dir: &Path) -> std::io::Result<Self> {
        let exe = std::env::current_exe()?;
        let maps = std::fs::read_to_string("/proc/self/maps")?;
        let lib_dir = dir.join("lib");
        std::fs::create_dir_all(&lib_dir)?;
        let copy = |from: &Path, to: &Path| -> std::io::Result<()> {
            let same = std::fs::metadata(to)
                .ok()
                .zip(std::fs::metadata(from).ok())
                .is_some_and(|(a, b)| a.len() == b.len() && a.modified().ok() >= b.modified().ok());
            if !same {
                let tmp = to.with_extension("tmp");
                std::fs::copy(from, &tmp)?;
                std::fs::rename(tmp, to)?;
            }
            Ok(())
        };
        copy(&exe, &dir.join("obsctl"))?;
        let mut loader = None;
        for path in maps.lines().filter_map(|l| l.split_whitespace().nth(5)) {
            let p = Path::new(path);
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !name.contains(".so") || !p.is_absolute() {
                continue;
            }
            if name.starts_with("ld-linux") || name.starts_with("ld-musl") {
                copy(p, &dir.join("ld.so"))?;
                loader = Some(());
            } else {
                copy(p, &lib_dir.join(name))?;
            }
        }
        if loader.is_none() {
            return Err(std::io::Error::other(
                "no dynamic loader mapped: obsctl is static, mount it directly",
            ));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The entrypoint prefix that runs `obsctl` from the bundle.
    fn argv(&self) -> Vec<String> {
        vec![
            format!("{BUNDLE_MOUNT}/ld.so"),
            "--library-path".into(),
            format!("{BUNDLE_MOUNT}/lib"),
            format!("{BUNDLE_MOUNT}/obsctl"),
        ]
    }
}

/// Where step containers connect.
#[derive(Debug, Clone)]
pub enum StepNetwork {
    /// The Docker stack's network: the collector is `otel-collector`, so the OTLP endpoint is
    /// rewritten to it.
    Stack {
        network: String,
        grpc_endpoint: String,
        http_endpoint: String,
    },
    /// The host's network, where the embedded backend's 127.0.0.1 endpoints are reachable.
    Host,
}

/// Starts each step as a container. Needs a Tokio runtime (the executor's).
#[derive(Clone)]
pub struct DockerRunner {
    docker: Docker,
    shim: Option<ShimBundle>,
    network: StepNetwork,
    run_name: String,
    exporter: ExporterSettings,
}

impl DockerRunner {
    pub fn new(
        docker: Docker,
        shim: Option<ShimBundle>,
        network: StepNetwork,
        run_name: &str,
        exporter: ExporterSettings,
    ) -> Self {
        Self {
            docker,
            shim,
            network,
            run_name: run_name.to_string(),
            exporter,
        }
    }

    fn labels(&self, spec: &StepSpec) -> HashMap<String, String> {
        let get = |k: &str| {
            spec.env
                .iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        // Label values are limited to 63 characters of [A-Za-z0-9._-] on Kubernetes; Docker
        // takes anything, so values are kept as they are. Seed 000's pod annotations
        // (`trace.context`, `commitSha`) are labels of the same name too: Docker Engine before
        // API 1.43 has no annotations. `trace.context` is the traceparent the step starts with
        // (the run's trace, parent of the step's span); the step's own span id is only chosen
        // when its shim starts, and is in its first output line and the run record.
        HashMap::from([
            (annotation::TRACE_CONTEXT.to_string(), get(env::TRACEPARENT)),
            (annotation::COMMIT_SHA.to_string(), get(env::COMMIT_SHA)),
            (
                "workflows.argoproj.io/workflow".to_string(),
                get(env::WORKFLOW_NAME),
            ),
            ("repo".to_string(), get(env::REPO)),
            ("pr".to_string(), get(env::PR_NUMBER)),
            ("taskId".to_string(), get(env::TASK_ID)),
            ("agent".to_string(), spec.agent.clone()),
            ("stepName".to_string(), spec.step.clone()),
            (LABEL_RUN.to_string(), self.run_name.clone()),
            ("io.obsctl.node".to_string(), spec.node_id.clone()),
            // `obsctl down` removes what carries its project's label, steps included.
            (
                definition::LABEL_PROJECT.to_string(),
                docker::default_project(),
            ),
        ])
    }

    fn environment(&self, spec: &StepSpec) -> Vec<String> {
        let http = spec
            .env
            .iter()
            .any(|(k, v)| k == env::OTEL_EXPORTER_OTLP_PROTOCOL && v.starts_with("http/"));
        // Only the exit code comes back from a container: the shim's end line tells a killed
        // shim from a shim that reported its killed step.
        let end_line = self
            .shim
            .as_ref()
            .map(|_| format!("{}=1", env::OBSCTL_SHIM_END_LINE));
        // The shim's own settings, as a process step inherits them from `obsctl run`.
        let settings = SHIM_SETTINGS.iter().filter_map(|k| {
            let v = std::env::var(k).ok().filter(|v| !v.is_empty())?;
            let set_by_spec = spec.env.iter().any(|(n, _)| n == k);
            (self.shim.is_some() && !set_by_spec).then(|| format!("{k}={v}"))
        });
        let spool = self
            .shim
            .as_ref()
            .map(|_| format!("{}={}", env::OBSCTL_SPOOL_DIR, spool_dir(spec).display()));
        spec.env
            .iter()
            .map(|(k, v)| {
                let v = match &self.network {
                    StepNetwork::Stack {
                        grpc_endpoint,
                        http_endpoint,
                        ..
                    } if k == env::OTEL_EXPORTER_OTLP_ENDPOINT => {
                        if http || v.contains("/v1/") {
                            http_endpoint.clone()
                        } else {
                            grpc_endpoint.clone()
                        }
                    }
                    _ => v.clone(),
                };
                format!("{k}={v}")
            })
            .chain(end_line)
            .chain(settings)
            .chain(spool)
            .collect()
    }
}

/// The container id once created, and a signal asked for before that; one lock, so a signal is
/// never lost between the two.
#[derive(Default)]
struct Shared {
    state: Mutex<(Option<String>, Option<&'static str>)>,
}

pub struct DockerHandle {
    docker: Docker,
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<Result<Ended, RunnerError>>>,
    telemetry: Option<oneshot::Receiver<Option<ShimStart>>>,
    tmp: PathBuf,
    output_paths: Vec<String>,
    done: Option<StepExit>,
    shimmed: bool,
}

/// What the container task saw: the exit code, the captured stdout, and whether the shim printed
/// its end line.
type Ended = (i32, String, bool);

/// Sends `signal` to a step's container. A container that is gone already is what the signal
/// was for, so a failure is not an error.
async fn kill(docker: &Docker, id: &str, signal: &str) {
    let options = KillContainerOptions {
        signal: signal.to_string(),
    };
    let _ = docker.kill_container(id, Some(options)).await;
}

fn docker_err(what: &str, e: bollard::errors::Error) -> RunnerError {
    RunnerError::Spawn {
        program: what.to_string(),
        source: std::io::Error::other(e.to_string()),
    }
}

impl Runner for DockerRunner {
    type Handle = DockerHandle;

    fn start(&self, spec: StepSpec) -> Result<DockerHandle, RunnerError> {
        let tmp = host_tmp(&spec)?;
        let mut argv = spec.argv.clone();
        if let Some(source) = &spec.script {
            stage_script(&tmp, source)?;
            argv.push("/tmp/.argo-script".into());
        }
        if argv.is_empty() {
            return Err(RunnerError::EmptyCommand);
        }
        let mut entrypoint = Vec::new();
        let mut binds = vec![format!("{}:/tmp", tmp.display())];
        if let Some(shim) = &self.shim {
            entrypoint.extend(shim.argv());
            entrypoint.extend([
                "shim".to_string(),
                "--agent".into(),
                spec.agent.clone(),
                "--step".into(),
                spec.step.clone(),
                "--".into(),
            ]);
            binds.push(format!("{}:{BUNDLE_MOUNT}:ro", shim.dir.display()));
            let spool = spool_dir(&spec);
            std::fs::create_dir_all(&spool).map_err(prepare(&spool))?;
            binds.push(format!("{0}:{0}", spool.display()));
        }
        entrypoint.extend(argv);
        let (exporter_env, exporter_binds) = self.exporter.for_step(&spec, &self.network)?;
        binds.extend(exporter_binds);
        let mut environment = self.environment(&spec);
        environment.extend(exporter_env);
        let network_mode = match &self.network {
            StepNetwork::Stack { network, .. } => network.clone(),
            StepNetwork::Host => "host".to_string(),
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: Some(entrypoint),
            cmd: Some(Vec::new()),
            env: Some(environment),
            working_dir: spec.working_dir.clone(),
            labels: Some(self.labels(&spec)),
            host_config: Some(HostConfig {
                binds: Some(binds),
                network_mode: Some(network_mode),
                init: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (_, log) = open_log(&spec)?;
        let name = format!(
            "obsctl-step-{}-{}",
            spec.node_id
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                })
                .collect::<String>(),
            rand::random::<u32>()
        );
        let shared = Arc::new(Shared::default());
        let (tel_tx, tel_rx) = oneshot::channel();
        let mut sink = StdoutLines::new(&spec.node_name, self.shim.is_some(), tel_tx);
        let docker = self.docker.clone();
        let task_shared = shared.clone();
        let label = spec.node_name.clone();
        let task = tokio::spawn(async move {
            let created = docker
                .create_container(
                    Some(CreateContainerOptions {
                        name: Some(name.clone()),
                        ..Default::default()
                    }),
                    body,
                )
                .await
                .map_err(|e| docker_err(&format!("container for {label}"), e))?;
            let id = created.id;
            let pending_signal = {
                let mut state = task_shared.state.lock().expect("not poisoned");
                state.0 = Some(id.clone());
                state.1.take()
            };
            docker
                .start_container(&id, None)
                .await
                .map_err(|e| docker_err(&format!("container for {label}"), e))?;
            if let Some(signal) = pending_signal {
                kill(&docker, &id, signal).await;
            }
            let mut logs = docker.logs(
                &id,
                Some(LogsOptions {
                    follow: true,
                    stdout: true,
                    stderr: true,
                    ..Default::default()
                }),
            );
            let mut log = tokio::fs::File::from_std(log);
            let mut pending = String::new();
            while let Some(Ok(chunk)) = logs.next().await {
                match chunk {
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        pending.push_str(&String::from_utf8_lossy(&message));
                        while let Some(nl) = pending.find('\n') {
                            let line: String = pending.drain(..=nl).collect();
                            let line = line.trim_end_matches('\n');
                            if sink.line(line) {
                                let _ = log.write_all(line.as_bytes()).await;
                                let _ = log.write_all(b"\n").await;
                            }
                        }
                    }
                    LogOutput::StdErr { message } => {
                        let _ = log.write_all(&message).await;
                    }
                    LogOutput::StdIn { .. } => {}
                }
            }
            let shim_ended = sink.shim_ended();
            let captured = sink.finish(&pending);
            let _ = log.flush().await;
            let mut wait = docker.wait_container(&id, None);
            let code = match wait.next().await {
                Some(Ok(r)) => r.status_code as i32,
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                    code as i32
                }
                Some(Err(e)) => {
                    return Err(RunnerError::Wait(std::io::Error::other(e.to_string())));
                }
                None => 1,
            };
            Ok((code, captured, shim_ended))
        });
        Ok(DockerHandle {
            docker: self.docker.clone(),
            shared,
            task: Some(task),
            telemetry: Some(tel_rx),
            tmp,
            output_paths: spec.output_paths,
            done: None,
            shimmed: self.shim.is_some(),
        })
    }
}

impl DockerHandle {
    fn signal(&self, signal: &'static str) {
        let mut state = self.shared.state.lock().expect("not poisoned");
        match state.0.clone() {
            Some(id) => {
                let docker = self.docker.clone();
                tokio::spawn(async move { kill(&docker, &id, signal).await });
            }
            None => state.1 = Some(signal),
        }
    }
}

impl StepHandle for DockerHandle {
    fn take_telemetry(&mut self) -> Option<oneshot::Receiver<Option<ShimStart>>> {
        self.telemetry.take()
    }

    async fn wait(&mut self) -> Result<StepExit, RunnerError> {
        if let Some(task) = &mut self.task {
            let (exit_code, stdout, shim_ended) = task
                .await
                .map_err(|e| RunnerError::Wait(std::io::Error::other(e.to_string())))??;
            self.task = None;
            let files = self
                .output_paths
                .iter()
                .map(|path| {
                    let host = self.tmp.join(path.trim_start_matches("/tmp/"));
                    (path.clone(), std::fs::read_to_string(host).ok())
                })
                .collect();
            self.done = Some(StepExit {
                exit_code,
                stdout,
                files,
                // 137 is both "the shim was killed" and "the shim reported its step killed";
                // only a shim that ran to its end prints its end line.
                shim_killed_by: (self.shimmed && !shim_ended && exit_code > 128)
                    .then(|| nix::sys::signal::Signal::try_from(exit_code - 128).ok())
                    .flatten(),
            });
        }
        Ok(self.done.clone().expect("set above"))
    }

    fn terminate(&self) {
        self.signal("SIGTERM");
    }

    fn kill(&self) {
        self.signal("SIGKILL");
    }

    fn process_group(&self) -> Option<i32> {
        None
    }
}

/// Why the Docker runner cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StepsError {
    #[error(transparent)]
    Docker(#[from] docker::DockerError),
    #[error("cannot prepare the shim bundle in {path}: {source}")]
    Bundle {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{var} names {}, which is not a file on this host; step containers get it \
         bind-mounted, so it must exist before the run starts",
        path.display()
    )]
    ExporterFile { var: String, path: PathBuf },
}

/// The Docker runner for a run: on the Docker stack's network when the endpoints file says the
/// Docker stack is up (project from `OBSCTL_PROJECT`, default `obsctl`), else on the host's.
pub async fn docker_runner(with_shim: bool, run_name: &str) -> Result<DockerRunner, StepsError> {
    use definition::{Component, Port};
    use endpoints::{Endpoints, Runtime};
    let exporter = ExporterSettings::from_lookup(|k| std::env::var(k).ok())?;
    let docker = docker::connect().await?;
    let shim = if with_shim {
        let dir = crate::paths::state_home().join("shim-bundle");
        Some(ShimBundle::build(&dir).map_err(|source| StepsError::Bundle { path: dir, source })?)
    } else {
        None
    };
    let network = match Endpoints::load(&Endpoints::default_path()) {
        Some(e) if e.runtime == Runtime::Docker => {
            let project = docker::default_project();
            let collector = Component::Collector.service();
            StepNetwork::Stack {
                network: docker::network_name(&project),
                grpc_endpoint: format!("http://{collector}:{}", Port::OtlpGrpc.container_port()),
                http_endpoint: format!("http://{collector}:{}", Port::OtlpHttp.container_port()),
            }
        }
        _ => StepNetwork::Host,
    };
    Ok(DockerRunner::new(docker, shim, network, run_name, exporter))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(env: &[(&str, &str)]) -> StepSpec {
        StepSpec {
            node_id: "n".into(),
            node_name: "n".into(),
            template_name: "t".into(),
            agent: "a".into(),
            step: "s".into(),
            image: "busybox".into(),
            argv: vec!["true".into()],
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            working_dir: None,
            script: None,
            output_paths: Vec::new(),
            work_dir: PathBuf::from("/nonexistent"),
        }
    }

    #[test]
    fn exporter_files_are_mounted_read_only_and_their_variables_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let key = dir.path().join("logs.key");
        std::fs::write(&ca, "ca").unwrap();
        std::fs::write(&key, "key").unwrap();
        let vars = [
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.display().to_string()),
            (
                "OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY",
                key.display().to_string(),
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-a=1".to_string()),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "https://elsewhere".to_string(),
            ),
        ];
        let lookup = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let settings = ExporterSettings::from_lookup(lookup).unwrap();
        let (env, binds) = settings.for_step(&spec(&[]), &StepNetwork::Host).unwrap();
        assert_eq!(
            env,
            [
                "OTEL_EXPORTER_OTLP_CERTIFICATE=/.obsctl-otlp/OTEL_EXPORTER_OTLP_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY=/.obsctl-otlp/OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY",
                "OTEL_EXPORTER_OTLP_HEADERS=x-a=1",
            ]
        );
        assert_eq!(
            binds,
            [
                format!(
                    "{}:/.obsctl-otlp/OTEL_EXPORTER_OTLP_CERTIFICATE:ro",
                    ca.display()
                ),
                format!(
                    "{}:/.obsctl-otlp/OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY:ro",
                    key.display()
                ),
            ]
        );
        // A template that sets a variable itself keeps its own value and gets no mount.
        let own = spec(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ssl/ca.pem")]);
        let (env, binds) = settings.for_step(&own, &StepNetwork::Host).unwrap();
        assert!(
            !env.iter()
                .any(|e| e.starts_with("OTEL_EXPORTER_OTLP_CERTIFICATE="))
        );
        assert_eq!(binds.len(), 1);
        // On the Docker stack's network the steps export to its collector in plain OTLP: no
        // file, no header.
        let stack = StepNetwork::Stack {
            network: "obsctl_default".into(),
            grpc_endpoint: "http://otel-collector:4317".into(),
            http_endpoint: "http://otel-collector:4318".into(),
        };
        let (env, binds) = settings.for_step(&spec(&[]), &stack).unwrap();
        assert!(env.is_empty() && binds.is_empty(), "{env:?} {binds:?}");
        // A file gone since the run started is named before the step's container is created.
        std::fs::remove_file(&key).unwrap();
        let err = settings
            .for_step(&spec(&[]), &StepNetwork::Host)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("logs.key") && err.contains("LOGS_CLIENT_KEY"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_exporter_file_is_named_with_its_variable() {
        let err = ExporterSettings::from_lookup(|k| {
            (k == "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE").then(|| "/nonexistent/c.pem".into())
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE names /nonexistent/c.pem"),
            "{err}"
        );
    }
}
