//! What chaos breaks on the Docker runtime: the collector container of the obsctl stack that is
//! up, through the Docker Engine API. The faults are what Kubernetes or a network does to a pod:
//! stop (SIGTERM, grace, SIGKILL) and start, kill and start, pause and unpause (the freezer
//! cgroup, connections hang), and a disconnect from the stack's network and a reconnect under
//! its alias (egress and ingress blocked). Step containers are killed the same way for
//! pod-kill. Chaos touches only containers it can prove belong to the stack: the project and
//! component labels `obsctl up` sets, and the published OTLP port the endpoints file names.
//! Dropping the target undoes a fault still in force and removes the step containers of the
//! scenario's runs, also on Ctrl-C.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{EndpointSettings, NetworkConnectRequest, NetworkDisconnectRequest};
use bollard::query_parameters::{
    InspectContainerOptions, KillContainerOptions, ListContainersOptions, RemoveContainerOptions,
    StopContainerOptions,
};

use super::{ChaosError, OutageMode};
use crate::stack::definition::{Component, LABEL_COMPONENT, LABEL_PROJECT, Port};
use crate::stack::docker::network_name;
use crate::stack::endpoints::{Endpoints, Runtime};
use crate::workflow::record::RecordStore;
use crate::workflow::runner::docker::LABEL_RUN;

/// How long the collector may take to stop, and to answer again once started.
const CONTAINER_DEADLINE: Duration = Duration::from_secs(30);
/// Grace `docker stop` gives the collector in the stop mode (Kubernetes' default is 30 s).
const STOP_GRACE_S: i32 = 10;
const POLL: Duration = Duration::from_millis(100);

/// What a container adds to a step: a 0.5 s step took about 1.5 s as a container on a 2-core
/// machine (create, start, attach, wait, remove).
pub const STEP_START: Duration = Duration::from_secs(1);

/// The label a step container carries with its node's id (set by the Docker runner).
const LABEL_NODE: &str = "io.obsctl.node";

pub struct DockerTarget {
    docker: Docker,
    collector: String,
    network: String,
    endpoints: Endpoints,
    health_url: String,
    /// The aggregator (`obsctl serve`), whose `/metrics` Prometheus scrapes.
    aggregator_url: String,
    /// The fault in force, undone on drop if the scenario did not undo it.
    active: Option<OutageMode>,
    /// The scenario's run records: their step containers are removed on drop.
    runs: RecordStore,
}

fn api(call: &str) -> impl FnOnce(bollard::errors::Error) -> ChaosError + '_ {
    move |e| ChaosError::Docker(format!("Docker API {call}: {e}"))
}

impl DockerTarget {
    /// Attaches to `project`'s running stack: the endpoints file must name a Docker stack, and
    /// the collector container must carry the project's labels and publish the OTLP/HTTP port
    /// that file names.
    pub async fn attach(project: &str, runs: RecordStore) -> Result<Self, ChaosError> {
        let path = Endpoints::default_path();
        let endpoints = Endpoints::load(&path)
            .filter(|e| e.runtime == Runtime::Docker)
            .ok_or_else(|| {
                ChaosError::Docker(format!(
                    "no Docker stack is up ({} does not name one); start it with \
                     `obsctl up --runtime docker`",
                    path.display()
                ))
            })?;
        let docker = crate::stack::docker::connect()
            .await
            .map_err(|e| ChaosError::Docker(e.to_string()))?;
        let filter = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_PROJECT}={project}")],
        )]);
        let found = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filter),
                ..Default::default()
            }))
            .await
            .map_err(api("list containers"))?;
        let of = |c: Component| {
            let mut matching = found.iter().filter(move |s| {
                s.labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_COMPONENT))
                    .map(String::as_str)
                    == Some(c.name())
            });
            match (matching.next(), matching.next()) {
                (Some(one), None) => Ok(one),
                _ => Err(ChaosError::Docker(format!(
                    "project {project:?} has no single {} container labelled \
                     {LABEL_PROJECT}={project} (is OBSCTL_PROJECT / --project the stack's?)",
                    c.name()
                ))),
            }
        };
        let collector = of(Component::Collector)?;
        let published = |c: &bollard::models::ContainerSummary, port: Port| {
            c.ports.iter().flatten().find_map(|p| {
                (p.private_port == port.container_port())
                    .then_some(p.public_port)
                    .flatten()
            })
        };
        let otlp = published(collector, Port::OtlpHttp);
        let named = endpoints
            .otlp_http
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse::<u16>().ok());
        if otlp.is_none() || otlp != named {
            return Err(ChaosError::Docker(format!(
                "the collector of project {project:?} publishes OTLP/HTTP on {otlp:?}, but the \
                 stack that is up listens on {}: not touching a container that may not be it",
                endpoints.otlp_http
            )));
        }
        let port = |c: Component, port: Port| {
            let container = of(c)?;
            published(container, port).ok_or_else(|| {
                ChaosError::Docker(format!(
                    "the {} of project {project:?} publishes no {} port",
                    c.name(),
                    port.name()
                ))
            })
        };
        let health = port(Component::Collector, Port::CollectorHealth)?;
        let aggregator = port(Component::Aggregator, Port::Aggregator)?;
        let target = Self {
            collector: collector.id.clone().unwrap_or_default(),
            docker,
            aggregator_url: format!("http://127.0.0.1:{aggregator}"),
            network: network_name(project),
            endpoints,
            health_url: format!("http://127.0.0.1:{health}/ready"),
            active: None,
            runs,
        };
        target.wait_ready().await?;
        Ok(target)
    }

    /// The OTLP/HTTP endpoint on the host (the runner points step containers at the collector
    /// by its network alias).
    pub fn otlp_endpoint(&self) -> String {
        self.endpoints.otlp_http.clone()
    }

    pub fn backend_urls(&self) -> crate::backends::BackendUrls {
        crate::backends::BackendUrls {
            tempo: self.endpoints.tempo.clone(),
            prometheus: self.endpoints.prometheus.clone(),
            loki: self.endpoints.loki.clone(),
            grafana: None,
        }
    }

    /// The aggregator's OpenMetrics endpoint, whose scrape the burst measures.
    pub fn metrics_url(&self) -> String {
        format!("{}/metrics", self.aggregator_url)
    }

    /// The aggregator's own API (its `/api/status` counts the metric points it absorbed).
    pub fn aggregator_url(&self) -> String {
        self.aggregator_url.clone()
    }

    pub async fn inject(&mut self, mode: OutageMode) -> Result<(), ChaosError> {
        self.active = Some(mode);
        let id = self.collector.as_str();
        match mode {
            OutageMode::Stop => self
                .docker
                .stop_container(
                    id,
                    Some(StopContainerOptions {
                        t: Some(STOP_GRACE_S),
                        signal: None,
                    }),
                )
                .await
                .map_err(api("stop the collector")),
            OutageMode::Kill => {
                kill(&self.docker, id, "SIGKILL").await?;
                self.wait_stopped().await
            }
            OutageMode::Pause => self
                .docker
                .pause_container(id)
                .await
                .map_err(api("pause the collector")),
            OutageMode::Partition => self
                .docker
                .disconnect_network(
                    &self.network,
                    NetworkDisconnectRequest {
                        container: id.to_string(),
                        force: Some(true),
                    },
                )
                .await
                .map_err(api("disconnect the collector")),
        }
    }

    pub async fn recover(&mut self, mode: OutageMode) -> Result<(), ChaosError> {
        undo(&self.docker, &self.collector, &self.network, mode).await?;
        self.active = None;
        self.wait_ready().await
    }

    async fn wait_stopped(&self) -> Result<(), ChaosError> {
        let deadline = tokio::time::Instant::now() + CONTAINER_DEADLINE;
        loop {
            let state = self
                .docker
                .inspect_container(&self.collector, None::<InspectContainerOptions>)
                .await
                .map_err(api("inspect the collector"))?
                .state;
            if !state.and_then(|s| s.running).unwrap_or(false) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ChaosError::Deadline(
                    "the collector's exit".into(),
                    CONTAINER_DEADLINE,
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Until the collector's health endpoint answers 200.
    async fn wait_ready(&self) -> Result<(), ChaosError> {
        let client = crate::stack::ready::client();
        let deadline = tokio::time::Instant::now() + CONTAINER_DEADLINE;
        loop {
            let last = match crate::stack::ready::probe(&client, &self.health_url).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(ChaosError::Docker(format!(
                    "the collector did not answer {} within {CONTAINER_DEADLINE:?}: {last}",
                    self.health_url
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The container of node `node` in run `run`, if the Docker runner started one.
    async fn step_container(&self, run: &str, node: &str) -> Result<String, ChaosError> {
        let filter = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_RUN}={run}"), format!("{LABEL_NODE}={node}")],
        )]);
        let found = self
            .docker
            .list_containers(Some(ListContainersOptions {
                filters: Some(filter),
                ..Default::default()
            }))
            .await
            .map_err(api("list step containers"))?;
        found
            .into_iter()
            .find_map(|c| c.id)
            .ok_or_else(|| ChaosError::Run(format!("no running container for step {node}")))
    }

    /// What Kubernetes does to a deleted pod: SIGTERM, `grace`, then SIGKILL.
    pub async fn delete_step(
        &self,
        run: &str,
        node: &str,
        grace: Duration,
    ) -> Result<(), ChaosError> {
        let id = self.step_container(run, node).await?;
        self.docker
            .stop_container(
                &id,
                Some(StopContainerOptions {
                    t: Some(grace.as_secs() as i32),
                    signal: Some("SIGTERM".into()),
                }),
            )
            .await
            .map_err(api("stop a step container"))
    }

    /// The step containers of `run` that run or are paused.
    async fn run_steps(
        &self,
        run: &str,
    ) -> Result<Vec<bollard::models::ContainerSummary>, ChaosError> {
        let filter = HashMap::from([("label".to_string(), vec![format!("{LABEL_RUN}={run}")])]);
        self.docker
            .list_containers(Some(ListContainersOptions {
                filters: Some(filter),
                ..Default::default()
            }))
            .await
            .map_err(api("list step containers"))
    }

    /// Freezes the running step containers of `run`, so none finishes between its
    /// controller's death and theirs; answers the nodes of every frozen one.
    pub async fn freeze_run_steps(&self, run: &str) -> Result<Vec<String>, ChaosError> {
        use bollard::models::ContainerSummaryStateEnum as State;
        let mut nodes = Vec::new();
        for c in self.run_steps(run).await? {
            if c.state == Some(State::RUNNING)
                && let Some(id) = &c.id
            {
                self.docker
                    .pause_container(id)
                    .await
                    .map_err(api("pause a step container"))?;
            }
            nodes.extend(c.labels.and_then(|mut l| l.remove(LABEL_NODE)));
        }
        Ok(nodes)
    }

    /// SIGKILLs the step containers of `run` (the Engine kills a paused one too): unlike a
    /// process step (PDEATHSIG), a container does not die with the `obsctl run` that started it.
    pub async fn kill_run_steps(&self, run: &str) -> Result<(), ChaosError> {
        for id in self.run_steps(run).await?.into_iter().filter_map(|c| c.id) {
            kill(&self.docker, &id, "SIGKILL").await?;
        }
        Ok(())
    }

    /// What an OOM kill or a lost node does: SIGKILL, no grace.
    pub async fn kill_step(&self, run: &str, node: &str) -> Result<(), ChaosError> {
        let id = self.step_container(run, node).await?;
        kill(&self.docker, &id, "SIGKILL").await
    }
}

async fn kill(docker: &Docker, id: &str, signal: &str) -> Result<(), ChaosError> {
    docker
        .kill_container(
            id,
            Some(KillContainerOptions {
                signal: signal.into(),
            }),
        )
        .await
        .map_err(api("kill a container"))
}

/// Undoes `mode` on the collector: started, unpaused or reconnected under its network alias.
async fn undo(
    docker: &Docker,
    collector: &str,
    network: &str,
    mode: OutageMode,
) -> Result<(), ChaosError> {
    match mode {
        OutageMode::Stop | OutageMode::Kill => docker
            .start_container(collector, None)
            .await
            .map_err(api("start the collector")),
        OutageMode::Pause => docker
            .unpause_container(collector)
            .await
            .map_err(api("unpause the collector")),
        OutageMode::Partition => docker
            .connect_network(
                network,
                NetworkConnectRequest {
                    container: collector.to_string(),
                    endpoint_config: Some(EndpointSettings {
                        aliases: Some(vec![Component::Collector.service().to_string()]),
                        ..Default::default()
                    }),
                },
            )
            .await
            .map_err(api("reconnect the collector")),
    }
}

/// Force-removes the step containers of `runs` (they are chaos's: it started those runs).
async fn remove_steps(docker: &Docker, runs: &[String]) {
    for run in runs {
        let filter = HashMap::from([("label".to_string(), vec![format!("{LABEL_RUN}={run}")])]);
        let Ok(found) = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filter),
                ..Default::default()
            }))
            .await
        else {
            continue;
        };
        for id in found.into_iter().filter_map(|c| c.id) {
            let _ = docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await;
        }
    }
}

impl Drop for DockerTarget {
    /// Undoes a fault still in force and removes the scenario's step containers. Drop may run
    /// while the async runtime is being torn down (Ctrl-C), so the cleanup runs on a thread of
    /// its own with its own runtime and Docker client, and drop waits for it.
    fn drop(&mut self) {
        let active = self.active.take();
        let collector = self.collector.clone();
        let network = self.network.clone();
        let runs: Vec<String> = self
            .runs
            .list()
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.name)
            .collect();
        let (id, net) = (collector.clone(), network.clone());
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return Err(format!("cannot start a runtime to undo {active:?}"));
            };
            rt.block_on(async {
                let docker = Docker::connect_with_defaults().map_err(|e| e.to_string())?;
                let undone = match active {
                    Some(mode) => undo(&docker, &id, &net, mode)
                        .await
                        .map_err(|e| e.to_string()),
                    None => Ok(()),
                };
                remove_steps(&docker, &runs).await;
                undone
            })
        });
        if let Ok(Err(e)) = cleanup.join() {
            eprintln!(
                "obsctl chaos: could not undo the fault on collector {collector}: {e}; \
                 run `docker start/unpause` or `docker network connect --alias {} {network} \
                 {collector}`",
                Component::Collector.service()
            );
        }
    }
}
