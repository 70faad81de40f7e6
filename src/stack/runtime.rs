//! Which runtime serves the stack, and the `up`/`down`/`status` flows over both: Docker when the
//! daemon answers and the images are present or pullable, else the embedded backend in the
//! background, with one line saying why.

use std::time::Duration;

use serde::Serialize;

use super::background::{self, BackgroundError};
use super::config::StackConfig;
use super::definition::{LABEL_PROJECT, Port};
use super::docker::{self, ComponentStatus, DockerError, DockerStack, UpReport};
use super::endpoints::{Endpoints, Runtime};
use super::ports::{self, PortsTaken};

/// `--runtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeChoice {
    /// Docker when the daemon answers and the images are present or can be pulled, else embedded.
    Auto,
    Docker,
    Embedded,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Background(#[from] BackgroundError),
    #[error(transparent)]
    PortsTaken(#[from] PortsTaken),
    #[error(
        "obsctl's embedded backend (pid {pid}) is already running, but not with this \
         configuration's addresses (query API {api}); run `obsctl down` first"
    )]
    EmbeddedElsewhere { pid: u32, api: String },
    #[error(
        "obsctl's embedded backend (pid {pid}) is running for project {project:?}, and there is \
         one per state directory; stop it with `obsctl down --project {project}` first"
    )]
    EmbeddedOtherProject { pid: u32, project: String },
    #[error("cannot write {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// What `up` brought up.
#[derive(Debug)]
pub enum UpOutcome {
    Docker {
        report: UpReport,
        endpoints: Endpoints,
    },
    Embedded {
        pid: u32,
        already_running: bool,
        endpoints: Endpoints,
        /// Set when `auto` chose embedded: why Docker was not used.
        fallback: Option<String>,
    },
}

/// The endpoints of the Docker stack with this config.
pub fn docker_endpoints(config: &StackConfig) -> Endpoints {
    Endpoints {
        runtime: Runtime::Docker,
        otlp_grpc: config.url(Port::OtlpGrpc),
        otlp_http: config.url(Port::OtlpHttp),
        tempo: config.url(Port::Tempo),
        loki: config.url(Port::Loki),
        prometheus: config.url(Port::Prometheus),
        grafana: Some(config.url(Port::Grafana)),
        pid: None,
    }
}

pub async fn up(
    choice: RuntimeChoice,
    project: &str,
    config: &StackConfig,
    timeout: Duration,
) -> Result<UpOutcome, RuntimeError> {
    docker::check_project(project)?;
    let say = |phase: String| crate::ui::debug(1, phase);
    let fallback = match choice {
        RuntimeChoice::Embedded => None,
        RuntimeChoice::Docker => {
            say(format!("connecting to Docker at {}", docker::docker_host()));
            let stack = DockerStack::new(docker::connect().await?, project)?;
            return finish_docker(&stack, config, timeout).await;
        }
        RuntimeChoice::Auto => match docker::connect().await {
            Err(e) => Some(e.to_string()),
            Ok(client) => {
                say(format!(
                    "Docker answers at {}; checking the images",
                    docker::docker_host()
                ));
                let stack = DockerStack::new(client, project)?;
                match stack.ensure_images(config).await {
                    // One line: `up --runtime docker` prints the whole list with its hints.
                    Err(DockerError::ImageMissing(missing)) => Some(format!(
                        "Docker lacks {} image(s) ({}); `obsctl up --runtime docker` says how to \
                         provide them",
                        missing.len(),
                        missing
                            .iter()
                            .map(|m| format!("{} for {}", m.image, m.component))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                    Err(e) => return Err(e.into()),
                    Ok(()) => return finish_docker(&stack, config, timeout).await,
                }
            }
        },
    };
    if let Some(other) = background::running().filter(|r| r.project != project) {
        return Err(RuntimeError::EmbeddedOtherProject {
            pid: other.pid,
            project: other.project,
        });
    }
    if let Some(pid) = background::running_for(project) {
        let wanted = background::endpoints(config, pid);
        // A second server on other ports would leave the first one running and unmanaged.
        if Endpoints::load(&Endpoints::default_path()).as_ref() != Some(&wanted) {
            return Err(RuntimeError::EmbeddedElsewhere {
                pid,
                api: wanted.tempo,
            });
        }
        if background::answers(config).await {
            return Ok(UpOutcome::Embedded {
                pid,
                already_running: true,
                endpoints: wanted,
                fallback,
            });
        }
        // Recorded but not answering: the port check below names it.
    }
    say(format!(
        "checking that the embedded backend's ports are free: {}",
        port_list(config, &background::PORTS)
    ));
    let busy = ports::busy(config, &background::PORTS);
    if !busy.is_empty() {
        // Only a busy port is worth asking Docker about, and it may not answer.
        let client = docker::connect().await.ok();
        ports::check(busy, client.as_ref(), None).await?;
    }
    let pid = background::start(config, project, timeout).await?;
    Ok(UpOutcome::Embedded {
        pid,
        already_running: false,
        endpoints: background::endpoints(config, pid),
        fallback,
    })
}

/// Refuses ports held by anything but this project's own containers, then converges the stack
/// and records its endpoints.
async fn finish_docker(
    stack: &DockerStack,
    config: &StackConfig,
    timeout: Duration,
) -> Result<UpOutcome, RuntimeError> {
    crate::ui::debug(
        1,
        format!(
            "checking that the stack's ports are free: {}",
            port_list(config, &Port::ALL)
        ),
    );
    ports::check(
        ports::busy(config, &Port::ALL),
        Some(&stack.docker),
        Some(&stack.project),
    )
    .await?;
    let report = stack.up(config, timeout).await?;
    let endpoints = docker_endpoints(config);
    let path = Endpoints::default_path();
    endpoints.save(&path).map_err(|source| RuntimeError::Io {
        path: path.clone(),
        source,
    })?;
    crate::ui::debug(1, format!("recorded the endpoints in {}", path.display()));
    Ok(UpOutcome::Docker { report, endpoints })
}

/// `otlp-grpc 4317, ...` for phase messages.
fn port_list(config: &StackConfig, ports: &[Port]) -> String {
    let list: Vec<String> = ports
        .iter()
        .map(|p| format!("{} {}", p.name(), config.port(*p)))
        .collect();
    list.join(", ")
}

/// What `down` removed.
#[derive(Debug, Default, Serialize)]
pub struct DownReport {
    pub stopped_embedded: Option<u32>,
    pub removed: Vec<String>,
    /// Why Docker was not asked (for example the daemon is not reachable).
    pub docker_skipped: Option<String>,
}

pub async fn down(project: &str, volumes: bool) -> Result<DownReport, RuntimeError> {
    docker::check_project(project)?;
    let say = |phase: String| crate::ui::debug(1, phase);
    say(format!(
        "down: the embedded backend of project {project} (pid file {})",
        background::pid_path().display()
    ));
    let mut report = DownReport {
        stopped_embedded: background::down(project)?,
        ..Default::default()
    };
    say(format!(
        "down: asking Docker at {} for what carries {LABEL_PROJECT}={project}",
        docker::docker_host()
    ));
    match docker::connect().await {
        Ok(client) => {
            report.removed = DockerStack::new(client, project)?.down(volumes).await?;
            let path = Endpoints::default_path();
            // Another project's `down` removes nothing here and leaves the running stack's file.
            if !report.removed.is_empty()
                && Endpoints::load(&path).is_some_and(|e| e.runtime == Runtime::Docker)
            {
                std::fs::remove_file(&path).map_err(|source| RuntimeError::Io { path, source })?;
            }
        }
        Err(e) => report.docker_skipped = Some(e.to_string()),
    }
    Ok(report)
}

/// `obsctl status`: the Docker components of the project and the embedded backend, if any.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub project: String,
    /// Which runtime the endpoints file says is up, if any.
    pub runtime: Option<Runtime>,
    pub components: Vec<ComponentStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedded: Option<EmbeddedStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_unreachable: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct EmbeddedStatus {
    pub pid: u32,
    pub url: String,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl StatusReport {
    /// Up and healthy: every Docker component ready, or the embedded backend ready.
    pub fn healthy(&self) -> bool {
        let docker_up =
            !self.components.is_empty() && self.components.iter().any(|c| c.state != "missing");
        let docker_ok = docker_up && self.components.iter().all(|c| c.ready);
        let embedded_ok = self.embedded.as_ref().is_some_and(|e| e.ready);
        (docker_ok || !docker_up)
            && (embedded_ok || self.embedded.is_none())
            && (docker_up || self.embedded.is_some())
    }
}

pub async fn status(project: &str) -> Result<StatusReport, RuntimeError> {
    docker::check_project(project)?;
    let endpoints = Endpoints::load(&Endpoints::default_path());
    let embedded = match background::running_for(project) {
        Some(pid) => {
            let url = format!(
                "{}/ready",
                endpoints
                    .as_ref()
                    .filter(|e| e.runtime == Runtime::Embedded)
                    .map_or_else(|| "http://127.0.0.1:3200".to_string(), |e| e.tempo.clone())
            );
            crate::ui::debug(
                1,
                format!("status: embedded backend pid {pid}, probing {url}"),
            );
            let probe = super::ready::probe(&super::ready::client(), &url).await;
            Some(EmbeddedStatus {
                pid,
                url,
                ready: probe.is_ok(),
                detail: probe.err(),
            })
        }
        None => None,
    };
    crate::ui::debug(
        1,
        format!(
            "status: asking Docker at {} for project {project}'s containers and probing each",
            docker::docker_host()
        ),
    );
    let (components, docker_unreachable) = match docker::connect().await {
        Ok(client) => {
            let rows = DockerStack::new(client, project)?.status().await?;
            let any = rows.iter().any(|r| r.state != "missing");
            (if any { rows } else { Vec::new() }, None)
        }
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    Ok(StatusReport {
        project: project.to_string(),
        runtime: endpoints.map(|e| e.runtime),
        components,
        embedded,
        docker_unreachable,
    })
}
