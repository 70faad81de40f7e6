//! What chaos breaks: [`Target`] is either runtime behind one interface, so the scenarios do not
//! know which one they break. On the Docker runtime it is the stack's collector container
//! (`chaos::docker`). On the embedded runtime it is an `obsctl serve` process that chaos starts
//! itself (its own ports, data directory and endpoints file, so nothing of the user's is ever
//! touched) behind a TCP relay that chaos controls. The steps send to the relay; the faults are
//! real: SIGTERM or SIGKILL of the process and a restart on the same data, SIGSTOP/SIGCONT, and a
//! partition in which the relay holds every connection without forwarding a byte, as a network
//! policy that drops egress leaves a client waiting. Dropping the target undoes every fault.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::docker::DockerTarget;
use super::{ChaosError, OutageMode};
use crate::backends::{Backend, BackendError, BackendUrls, Backends, Connector, Http};
use crate::embedded::identity::Absorbed;
use crate::workflow::record::RecordStore;

/// Which runtime a scenario breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runtime {
    /// A private `obsctl serve` per scenario, started, broken and stopped by chaos.
    Embedded,
    /// The Docker stack of this project that is up; steps run as containers.
    Docker { project: String },
}

impl Runtime {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Docker { .. } => "docker",
        }
    }
}

/// A step attempt that is running: where it runs and the span its shim announced.
#[derive(Debug, Clone)]
pub struct RunningStep {
    pub run: String,
    pub node: String,
    pub process_group: Option<i32>,
}

/// What a scenario breaks, on either runtime.
pub enum Target {
    Embedded(EmbeddedTarget),
    Docker(DockerTarget),
}

impl Target {
    /// Starts the embedded backend in `dir`, or attaches to the Docker stack that is up.
    pub async fn new(
        runtime: &Runtime,
        exe: &Path,
        dir: &Path,
        runs: RecordStore,
    ) -> Result<Self, ChaosError> {
        Ok(match runtime {
            Runtime::Embedded => Self::Embedded(EmbeddedTarget::start(exe, dir).await?),
            Runtime::Docker { project } => Self::Docker(DockerTarget::attach(project, runs).await?),
        })
    }

    /// `obsctl run --runner` for the steps: processes on the embedded runtime, containers on
    /// the Docker stack.
    pub fn runner(&self) -> &'static str {
        match self {
            Self::Embedded(_) => "process",
            Self::Docker(_) => "docker",
        }
    }

    /// The OTLP/HTTP endpoint `obsctl run` is given.
    pub fn otlp_endpoint(&self) -> String {
        match self {
            Self::Embedded(t) => t.otlp_endpoint(),
            Self::Docker(t) => t.otlp_endpoint(),
        }
    }

    /// The query clients. The embedded backend is chaos's own and read directly; the Docker
    /// stack's are read as `connector` says (TLS, credentials, a proxy's URLs in front of it).
    pub fn backends(&self, connector: &Connector) -> Result<Backends, BackendError> {
        match self {
            Self::Embedded(t) => {
                let api = t.api_url();
                let urls = BackendUrls {
                    tempo: api.clone(),
                    prometheus: api.clone(),
                    loki: api,
                    grafana: None,
                };
                Backends::new(urls, Http::default())
            }
            Self::Docker(t) => connector.backends(t.backend_urls()),
        }
    }

    /// The OpenMetrics endpoint whose scrape the burst measures.
    pub fn metrics_url(&self) -> String {
        match self {
            Self::Embedded(t) => t.metrics_url(),
            Self::Docker(t) => t.metrics_url(),
        }
    }

    /// The repeats the backends absorbed so far (idempotent ingest); `None` when one does not
    /// say (a real Tempo or Loki), so duplicates there are judged by the loss account alone.
    pub async fn absorbed(&self, connector: &Connector) -> Result<Option<Absorbed>, ChaosError> {
        Ok(match self {
            Self::Embedded(t) => {
                Http::default()
                    .absorbed("embedded backend", &t.api_url())
                    .await?
            }
            Self::Docker(t) => {
                let urls = connector.urls.over(t.backend_urls());
                let spans = connector
                    .http(Backend::Tempo)
                    .absorbed(Backend::Tempo.name(), &urls.tempo)
                    .await?;
                let logs = connector
                    .http(Backend::Loki)
                    .absorbed(Backend::Loki.name(), &urls.loki)
                    .await?;
                // The aggregator is obsctl's own scrape target, never behind a proxy.
                let points = connector
                    .http
                    .absorbed("aggregator", &t.aggregator_url())
                    .await?;
                match (spans, logs, points) {
                    (Some(s), Some(l), Some(p)) => Some(Absorbed {
                        spans: s.spans,
                        logs: l.logs,
                        metric_points: p.metric_points,
                    }),
                    _ => None,
                }
            }
        })
    }

    /// Begins the outage.
    pub async fn inject(&mut self, mode: OutageMode) -> Result<(), ChaosError> {
        match self {
            Self::Embedded(t) => t.inject(mode).await,
            Self::Docker(t) => t.inject(mode).await,
        }
    }

    /// Ends the outage.
    pub async fn recover(&mut self, mode: OutageMode) -> Result<(), ChaosError> {
        match self {
            Self::Embedded(t) => t.recover(mode).await,
            Self::Docker(t) => t.recover(mode).await,
        }
    }

    /// Deletes a step's pod as Kubernetes does: SIGTERM, `grace`, SIGKILL.
    pub async fn delete_step(&self, step: &RunningStep, grace: Duration) -> Result<(), ChaosError> {
        match self {
            Self::Embedded(_) => {
                let group = process_group(step)?;
                let _ = killpg(group, Signal::SIGTERM);
                tokio::time::sleep(grace).await;
                let _ = killpg(group, Signal::SIGKILL);
                Ok(())
            }
            Self::Docker(t) => t.delete_step(&step.run, &step.node, grace).await,
        }
    }

    /// What starting a step adds to its duration, beyond the process start the embedded runtime
    /// has too.
    pub fn step_start(&self) -> Duration {
        match self {
            Self::Embedded(_) => Duration::ZERO,
            Self::Docker(_) => super::docker::STEP_START,
        }
    }

    /// Just before a `kill -9` of `obsctl run`: on Docker its running step containers are
    /// frozen, so that they die at the same moment as it, as process steps do by PDEATHSIG.
    /// Answers the nodes frozen so far (`None` on the embedded runtime).
    pub async fn before_controller_death(
        &self,
        run: &str,
    ) -> Result<Option<Vec<String>>, ChaosError> {
        match self {
            Self::Embedded(_) => Ok(None),
            Self::Docker(t) => t.freeze_run_steps(run).await.map(Some),
        }
    }

    /// After a `kill -9` of `obsctl run`: its steps die with it (process steps by PDEATHSIG,
    /// containers killed here), so the resumed run finds them interrupted on either runtime.
    pub async fn steps_die_with_controller(&self, run: &str) -> Result<(), ChaosError> {
        match self {
            Self::Embedded(_) => Ok(()),
            Self::Docker(t) => t.kill_run_steps(run).await,
        }
    }

    /// Kills a step's pod with no grace (OOM kill, node loss).
    pub async fn kill_step(&self, step: &RunningStep) -> Result<(), ChaosError> {
        match self {
            Self::Embedded(_) => {
                let _ = killpg(process_group(step)?, Signal::SIGKILL);
                Ok(())
            }
            Self::Docker(t) => t.kill_step(&step.run, &step.node).await,
        }
    }
}

fn process_group(step: &RunningStep) -> Result<Pid, ChaosError> {
    step.process_group
        .map(Pid::from_raw)
        .ok_or_else(|| ChaosError::Run(format!("step {} has no process group", step.node)))
}

/// How long a stopped backend may take to exit, and a started one to answer.
const PROCESS_DEADLINE: Duration = Duration::from_secs(15);

pub struct EmbeddedTarget {
    exe: PathBuf,
    dir: PathBuf,
    grpc: SocketAddr,
    http: SocketAddr,
    api: SocketAddr,
    child: Option<Child>,
    paused: bool,
    relay: Relay,
}

impl EmbeddedTarget {
    /// Starts `obsctl serve` in `dir` on free loopback ports, behind a relay.
    pub async fn start(exe: &Path, dir: &Path) -> Result<Self, ChaosError> {
        let ports = free_ports(3)?;
        let http: SocketAddr = ([127, 0, 0, 1], ports[1]).into();
        let mut target = Self {
            exe: exe.to_path_buf(),
            dir: dir.to_path_buf(),
            grpc: ([127, 0, 0, 1], ports[0]).into(),
            http,
            api: ([127, 0, 0, 1], ports[2]).into(),
            child: None,
            paused: false,
            relay: Relay::start(http).await?,
        };
        target.spawn().await?;
        Ok(target)
    }

    /// The OTLP/HTTP endpoint the steps use: the relay in front of the backend.
    pub fn otlp_endpoint(&self) -> String {
        format!("http://{}", self.relay.addr)
    }

    pub fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// The backend's own OpenMetrics endpoint, for the scrape measurement.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.api)
    }

    fn endpoints_file(&self) -> PathBuf {
        self.dir.join("endpoints.json")
    }

    async fn spawn(&mut self) -> Result<(), ChaosError> {
        let _ = std::fs::remove_file(self.endpoints_file());
        let log = std::fs::File::create(self.dir.join("serve.log"))
            .map_err(|e| ChaosError::io(&self.dir, e))?;
        let child = Command::new(&self.exe)
            .arg("serve")
            .args(["--otlp-grpc", &self.grpc.to_string()])
            .args(["--otlp-http", &self.http.to_string()])
            .args(["--api", &self.api.to_string()])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--endpoints-file")
            .arg(self.endpoints_file())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| ChaosError::io(&self.exe, e))?;
        // Tests (and a person) can find the backend chaos started.
        let pid = self.dir.join("serve.pid");
        std::fs::write(&pid, child.id().to_string()).map_err(|e| ChaosError::io(&pid, e))?;
        self.child = Some(child);
        // serve writes its endpoints file once every listener is bound.
        let deadline = tokio::time::Instant::now() + PROCESS_DEADLINE;
        while !self.endpoints_file().exists() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(ChaosError::Backend(format!(
                    "obsctl serve exited ({status}) before it was ready: {}",
                    crate::stack::background::tail(&self.dir.join("serve.log"), 5)
                )));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ChaosError::Backend(
                    "obsctl serve was not ready within 15 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    fn pid(&self) -> Option<Pid> {
        self.child.as_ref().map(|c| Pid::from_raw(c.id() as i32))
    }

    async fn stop_with(&mut self, signal: Signal) -> Result<(), ChaosError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = kill(Pid::from_raw(child.id() as i32), signal);
        let deadline = tokio::time::Instant::now() + PROCESS_DEADLINE;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Ok(());
                }
            }
        }
    }

    /// Begins the outage.
    pub async fn inject(&mut self, mode: OutageMode) -> Result<(), ChaosError> {
        match mode {
            OutageMode::Stop => self.stop_with(Signal::SIGTERM).await,
            OutageMode::Kill => self.stop_with(Signal::SIGKILL).await,
            OutageMode::Pause => {
                if let Some(pid) = self.pid() {
                    kill(pid, Signal::SIGSTOP).map_err(|e| ChaosError::Backend(e.to_string()))?;
                    self.paused = true;
                }
                Ok(())
            }
            OutageMode::Partition => {
                self.relay.set_partitioned(true);
                Ok(())
            }
        }
    }

    /// Ends the outage: the backend runs again on the same data and ports.
    pub async fn recover(&mut self, mode: OutageMode) -> Result<(), ChaosError> {
        match mode {
            OutageMode::Stop | OutageMode::Kill => self.spawn().await,
            OutageMode::Pause => {
                self.resume();
                Ok(())
            }
            OutageMode::Partition => {
                self.relay.set_partitioned(false);
                Ok(())
            }
        }
    }

    fn resume(&mut self) {
        if self.paused
            && let Some(pid) = self.pid()
        {
            let _ = kill(pid, Signal::SIGCONT);
        }
        self.paused = false;
    }
}

impl Drop for EmbeddedTarget {
    /// Nothing is left paused or partitioned, and the backend chaos started goes with it.
    fn drop(&mut self) {
        self.resume();
        self.relay.set_partitioned(false);
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Ports the OS picked, all held until every one is picked so none is handed out twice.
fn free_ports(n: usize) -> Result<Vec<u16>, ChaosError> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| ChaosError::Backend(format!("cannot pick a free port: {e}")))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| ChaosError::Backend(format!("cannot pick a free port: {e}")))
}

/// A loopback TCP relay to the backend that can be partitioned.
struct Relay {
    addr: SocketAddr,
    partitioned: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Result<Self, ChaosError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| ChaosError::Backend(format!("cannot start the relay: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| ChaosError::Backend(e.to_string()))?;
        let partitioned = Arc::new(watch::channel(false).0);
        let state = partitioned.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay_one(client, upstream, state.subscribe()));
            }
        });
        Ok(Self {
            addr,
            partitioned,
            task,
        })
    }

    fn set_partitioned(&self, on: bool) {
        self.partitioned.send_replace(on);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards one connection; during a partition nothing passes in either direction, and a
/// connection open when the partition begins is cut.
async fn relay_one(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut partitioned: watch::Receiver<bool>,
) {
    if *partitioned.borrow_and_update() {
        // Held, never answered: the client waits until its own deadline, as behind a drop rule.
        let _ = partitioned.wait_for(|p| !*p).await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return; // the backend is down: the client sees its connection closed
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = partitioned.wait_for(|p| *p) => {}
    }
}
