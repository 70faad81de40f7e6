//! The Docker runtime: creates, repairs, inspects and removes the stack's network, volumes and
//! containers through the Docker Engine API (bollard, honouring `DOCKER_HOST`). Everything it
//! creates carries `io.obsctl.project`, so `down` removes exactly that and nothing else.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, EndpointSettings, HostConfig,
    NetworkCreateRequest, NetworkingConfig, PortBinding, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListNetworksOptions,
    ListVolumesOptions, LogsOptions, RemoveContainerOptions, RemoveVolumeOptions,
    StopContainerOptions,
};
use futures_util::StreamExt;
use serde::Serialize;

use super::config::StackConfig;
use super::definition::{self, Component, EnvValue, LABEL_COMPONENT, LABEL_PROJECT, Service};
use super::ready::{self, NotReady, Target};

/// Label holding a hash of everything a container was created from: `up` recreates a container
/// only when this differs.
pub const LABEL_SPEC: &str = "io.obsctl.spec";

/// One image `up` needs that Docker neither has nor could pull.
#[derive(Debug)]
pub struct MissingImage {
    pub component: Component,
    pub image: String,
    pub reason: String,
}

impl std::fmt::Display for MissingImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Registry errors can run to hundreds of characters; the first line says enough.
        const MAX_REASON: usize = 120;
        let reason = self.reason.lines().next().unwrap_or_default();
        let cut: String = reason.chars().take(MAX_REASON).collect();
        let ellipsis = if cut.len() < reason.len() { "…" } else { "" };
        write!(
            f,
            "  {} for {} is not present ({cut}{ellipsis}); {}=REF picks another",
            self.image,
            self.component,
            self.component.image_env()
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach the Docker daemon ({host}): {source}")]
    Unreachable {
        host: String,
        source: bollard::errors::Error,
    },
    #[error("Docker API call {call} failed: {source}")]
    Api {
        call: String,
        source: bollard::errors::Error,
    },
    #[error(
        "{} image(s) are not present and could not be pulled:\n{}\nWithout a registry, \
         scripts/build-images.sh builds Debian's Prometheus, the aggregator and stand-ins for the \
         other components (docs/observability.md, \"Air-gapped\"); point obsctl at images you \
         have with --image COMPONENT=REF, OBSCTL_IMAGE_<COMPONENT>=REF or `images:` in the stack \
         config file",
        .0.len(),
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
    )]
    ImageMissing(Vec<MissingImage>),
    #[error("{0}\n{1}")]
    NotReady(Box<NotReady>, String),
    #[error(
        "{failure}\nthis `up` could not remove what it created: {}; run `obsctl down --project {project}`",
        left.join(", ")
    )]
    RollBack {
        failure: Box<DockerError>,
        left: Vec<String>,
        project: String,
    },
    #[error(
        "invalid project name {0:?}: use 1-40 characters from a-z, 0-9, '-' and '_', starting with a letter or digit"
    )]
    BadProject(String),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn api(call: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> DockerError {
    let call = call.into();
    move |source| DockerError::Api { call, source }
}

/// The host the client talks to, for messages.
pub fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

/// Connects (honouring `DOCKER_HOST`), negotiates the API version with the engine and pings it.
pub async fn connect() -> Result<Docker, DockerError> {
    let unreachable = |source| DockerError::Unreachable {
        host: docker_host(),
        source,
    };
    let docker = Docker::connect_with_defaults().map_err(unreachable)?;
    let docker = tokio::time::timeout(Duration::from_secs(5), docker.negotiate_version())
        .await
        .map_err(|_| DockerError::Unreachable {
            host: docker_host(),
            source: bollard::errors::Error::RequestTimeoutError,
        })?
        .map_err(unreachable)?;
    docker.ping().await.map_err(unreachable)?;
    Ok(docker)
}

/// Checks a project name: it becomes part of container, network and volume names.
pub fn check_project(name: &str) -> Result<(), DockerError> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(DockerError::BadProject(name.to_string()))
    }
}

pub fn container_name(project: &str, c: Component) -> String {
    format!("{project}-{}", c.service())
}

/// The project of commands without a `--project` flag (`run --runner docker`): `OBSCTL_PROJECT`,
/// else `obsctl`, as for `up`/`down`/`status`.
pub fn default_project() -> String {
    std::env::var("OBSCTL_PROJECT")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| DEFAULT_PROJECT.to_string())
}

/// `--project`'s default.
pub const DEFAULT_PROJECT: &str = "obsctl";

pub fn network_name(project: &str) -> String {
    format!("{project}-net")
}

pub fn volume_name(project: &str, c: Component) -> String {
    format!("{project}-{}-data", c.name())
}

/// Where `up` writes the `stack/` files that containers mount.
pub fn files_dir(project: &str) -> PathBuf {
    crate::paths::state_home().join("stack").join(project)
}

/// The Grafana admin password file for a project (mode 0600).
pub fn password_path(project: &str) -> PathBuf {
    crate::paths::state_home()
        .join("grafana")
        .join(format!("{project}.admin-password"))
}

/// Reads the project's Grafana admin password, generating and storing one on first use.
pub fn grafana_password(project: &str) -> Result<String, DockerError> {
    use rand::Rng;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = password_path(project);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_string();
        if !existing.is_empty() {
            return Ok(existing);
        }
    }
    let io = |source| DockerError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(path.parent().expect("has a parent")).map_err(io)?;
    let password: String = rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    f.write_all(password.as_bytes()).map_err(io)?;
    Ok(password)
}

/// What `up` did to one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Created,
    Recreated,
    Started,
    Unchanged,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Created => "created",
            Action::Recreated => "recreated",
            Action::Started => "started",
            Action::Unchanged => "unchanged",
        })
    }
}

/// The result of `up`: per component, what was done and how long readiness took.
#[derive(Debug, Clone)]
pub struct UpReport {
    pub actions: BTreeMap<Component, Action>,
    pub ready_after: BTreeMap<String, Duration>,
    pub password_file: PathBuf,
    /// The image each component runs, so that stand-ins can be named as such.
    pub images: BTreeMap<Component, String>,
}

/// What one `up` created, removed again when it fails part-way.
#[derive(Debug, Default)]
struct Created {
    network: bool,
    volumes: Vec<String>,
    containers: Vec<String>,
}

/// One project's stack on one Docker engine.
pub struct DockerStack {
    pub docker: Docker,
    pub project: String,
}

/// The parts' 64-bit FNV-1a, each part ended by a NUL so that `["a", "b"]` differs from `["ab"]`.
fn fnv64(parts: &[&str]) -> String {
    let bytes = parts.iter().flat_map(|p| p.bytes().chain([0u8]));
    format!("{:016x}", crate::encode::fnv64a(bytes))
}

impl DockerStack {
    pub fn new(docker: Docker, project: &str) -> Result<Self, DockerError> {
        check_project(project)?;
        Ok(Self {
            docker,
            project: project.to_string(),
        })
    }

    fn labels(&self, c: Option<Component>) -> HashMap<String, String> {
        let mut l = HashMap::from([(LABEL_PROJECT.to_string(), self.project.clone())]);
        if let Some(c) = c {
            l.insert(LABEL_COMPONENT.to_string(), c.name().to_string());
        }
        l
    }

    fn project_filter(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_PROJECT}={}", self.project)],
        )])
    }

    /// Containers of this project, by component.
    pub async fn containers(&self) -> Result<BTreeMap<Component, ContainerSummary>, DockerError> {
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(self.project_filter()),
                ..Default::default()
            }))
            .await
            .map_err(api("list containers"))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let comp = c
                    .labels
                    .as_ref()?
                    .get(LABEL_COMPONENT)
                    .and_then(|n| Component::parse(n))?;
                Some((comp, c))
            })
            .collect())
    }

    /// Makes sure every image is present, pulling what is missing (with progress on a
    /// terminal). Fails on the first image that is neither present nor pullable.
    /// Every image is looked at before any error is reported, so one message names them all.
    pub async fn ensure_images(&self, config: &StackConfig) -> Result<(), DockerError> {
        let mut missing = Vec::new();
        for c in Component::ALL {
            let image = config.image(c);
            if self.docker.inspect_image(image).await.is_ok() {
                continue;
            }
            match self.pull(c, image).await {
                Ok(()) => {}
                Err(DockerError::ImageMissing(mut m)) => missing.append(&mut m),
                Err(e) => return Err(e),
            }
        }
        match missing.is_empty() {
            true => Ok(()),
            false => Err(DockerError::ImageMissing(missing)),
        }
    }

    async fn pull(&self, c: Component, image: &str) -> Result<(), DockerError> {
        let bar = crate::ui::progress_enabled().then(|| {
            let pb = indicatif::ProgressBar::new_spinner();
            pb.set_style(
                indicatif::ProgressStyle::with_template("{spinner} pulling {prefix}: {msg}")
                    .expect("static template"),
            );
            pb.set_prefix(image.to_string());
            pb.enable_steady_tick(Duration::from_millis(120));
            pb
        });
        let mut stream = self.docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(image.to_string()),
                ..Default::default()
            }),
            None,
            None,
        );
        let missing = |reason: String| {
            DockerError::ImageMissing(vec![MissingImage {
                component: c,
                image: image.to_string(),
                reason,
            }])
        };
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(err) = info.error_detail.and_then(|d| d.message) {
                        return Err(missing(err));
                    }
                    if let Some(pb) = &bar {
                        let detail = info.progress_detail.unwrap_or_default();
                        let msg = match (detail.current, detail.total) {
                            (Some(cur), Some(total)) if total > 0 => format!(
                                "{} {}/{} MB",
                                info.status.unwrap_or_default(),
                                cur / 1_000_000,
                                total / 1_000_000
                            ),
                            _ => info.status.unwrap_or_default(),
                        };
                        pb.set_message(msg);
                    }
                }
                Err(e) => return Err(missing(e.to_string())),
            }
        }
        if let Some(pb) = bar {
            pb.finish_with_message("pulled");
        }
        self.docker
            .inspect_image(image)
            .await
            .map(|_| ())
            .map_err(|e| missing(e.to_string()))
    }

    /// Creates the project's network unless it exists; `true` when it was created.
    async fn ensure_network(&self) -> Result<bool, DockerError> {
        let name = network_name(&self.project);
        let existing = self
            .docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(HashMap::from([("name".to_string(), vec![name.clone()])])),
            }))
            .await
            .map_err(api("list networks"))?;
        if existing.iter().any(|n| n.name.as_deref() == Some(&name)) {
            return Ok(false);
        }
        self.docker
            .create_network(NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                labels: Some(self.labels(None)),
                ..Default::default()
            })
            .await
            .map_err(api(format!("create network {name}")))?;
        Ok(true)
    }

    /// Creates a component's volume unless it exists; `true` when it was created.
    async fn ensure_volume(&self, c: Component) -> Result<bool, DockerError> {
        let name = volume_name(&self.project, c);
        if self.docker.inspect_volume(&name).await.is_ok() {
            return Ok(false);
        }
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(name.clone()),
                labels: Some(self.labels(Some(c))),
                ..Default::default()
            })
            .await
            .map_err(api(format!("create volume {name}")))?;
        Ok(true)
    }

    /// The container body for one service, and the hash of everything in it.
    fn container_spec(
        &self,
        svc: &Service,
        config: &StackConfig,
        files: &Path,
        password: &str,
    ) -> ContainerCreateBody {
        let c = svc.component;
        let env: Vec<String> = svc
            .env
            .iter()
            .map(|(k, v)| match v {
                EnvValue::Literal(s) => format!("{k}={s}"),
                EnvValue::GrafanaAdminPassword => format!("{k}={password}"),
            })
            .collect();
        let mut binds: Vec<String> = svc
            .mounts
            .iter()
            .map(|m| format!("{}:{}:ro", files.join(m.source).display(), m.target))
            .collect();
        binds.push(format!(
            "{}:{}",
            volume_name(&self.project, c),
            svc.data_dir
        ));
        let port_bindings: HashMap<String, Option<Vec<PortBinding>>> = svc
            .ports
            .iter()
            .map(|p| {
                (
                    format!("{}/tcp", p.container_port()),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(config.port(*p).to_string()),
                    }]),
                )
            })
            .collect();
        let network = network_name(&self.project);
        let file_parts: Vec<&str> = super::files::FILES
            .iter()
            .filter(|(p, _)| svc.mounts.iter().any(|m| p.starts_with(m.source)))
            .map(|(_, body)| *body)
            .collect();
        let ports_text: Vec<String> = svc
            .ports
            .iter()
            .map(|p| format!("{}={}", p.name(), config.port(*p)))
            .collect();
        let mut parts: Vec<&str> = vec![config.image(c), svc.user.unwrap_or("")];
        parts.extend(svc.command.iter().copied());
        parts.extend(env.iter().map(String::as_str));
        parts.extend(binds.iter().map(String::as_str));
        parts.extend(ports_text.iter().map(String::as_str));
        parts.extend(file_parts);
        let mut labels = self.labels(Some(c));
        labels.insert(LABEL_SPEC.to_string(), fnv64(&parts));
        ContainerCreateBody {
            image: Some(config.image(c).to_string()),
            cmd: (!svc.command.is_empty())
                .then(|| svc.command.iter().map(|s| s.to_string()).collect()),
            user: svc.user.map(str::to_string),
            env: Some(env),
            labels: Some(labels),
            exposed_ports: Some(
                svc.ports
                    .iter()
                    .map(|p| format!("{}/tcp", p.container_port()))
                    .collect(),
            ),
            host_config: Some(HostConfig {
                binds: Some(binds),
                port_bindings: Some(port_bindings),
                network_mode: Some(network.clone()),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network,
                    EndpointSettings {
                        aliases: Some(vec![c.service().to_string()]),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        }
    }

    /// Brings the stack to the wanted state, fixing only what differs, then waits for every
    /// component to be ready.
    pub async fn up(
        &self,
        config: &StackConfig,
        timeout: Duration,
    ) -> Result<UpReport, DockerError> {
        self.ensure_images(config).await?;
        let files = files_dir(&self.project);
        crate::ui::debug(
            1,
            format!("writing the stack's files to {}", files.display()),
        );
        super::files::write_all(&files).map_err(|source| DockerError::Io {
            path: files.clone(),
            source,
        })?;
        let password = grafana_password(&self.project)?;
        let created = std::sync::Mutex::new(Created::default());
        let converged = self.converge(config, &files, &password, &created).await;
        let actions = match converged {
            Ok(actions) => actions,
            Err(e) => {
                let created = created.into_inner().expect("no converge task panicked");
                crate::ui::debug(1, format!("{e}; removing what this `up` created"));
                return Err(self.roll_back(created, e).await);
            }
        };
        crate::ui::debug(
            1,
            format!(
                "waiting up to {timeout:?} for {} components to be ready",
                actions.len()
            ),
        );
        let targets: Vec<Target> = definition::services()
            .iter()
            .map(|svc| Target {
                name: svc.component.name().to_string(),
                url: format!("{}{}", config.url(svc.ready.0), svc.ready.1),
            })
            .collect();
        let ready_after =
            match ready::wait_all(&targets, timeout, |name| self.dead_state(name)).await {
                Ok(r) => r,
                Err(not_ready) => {
                    let logs = match Component::parse(&not_ready.name) {
                        Some(c) => self.last_logs(c, 20).await,
                        None => String::new(),
                    };
                    return Err(DockerError::NotReady(Box::new(not_ready), logs));
                }
            };
        Ok(UpReport {
            actions,
            ready_after,
            password_file: password_path(&self.project),
            images: config.images.clone(),
        })
    }

    /// Creates what is missing and (re)starts what is not running, recording in `created` each
    /// network, volume and container made, so that a failure can remove them again.
    async fn converge(
        &self,
        config: &StackConfig,
        files: &Path,
        password: &str,
        created: &std::sync::Mutex<Created>,
    ) -> Result<BTreeMap<Component, Action>, DockerError> {
        let record = |f: &dyn Fn(&mut Created)| f(&mut created.lock().expect("not poisoned"));
        if self.ensure_network().await? {
            record(&|c| c.network = true);
            crate::ui::debug(
                1,
                format!("created network {}", network_name(&self.project)),
            );
        }
        let existing = self.containers().await?;
        // Components are independent at start (each retries its peers), so they are created
        // and started concurrently.
        let existing = &existing;
        let converge = definition::services().into_iter().map(|svc| async move {
            let c = svc.component;
            if self.ensure_volume(c).await? {
                record(&|created| created.volumes.push(volume_name(&self.project, c)));
                crate::ui::debug(
                    1,
                    format!("created volume {}", volume_name(&self.project, c)),
                );
            }
            let spec = self.container_spec(&svc, config, files, password);
            let want = spec
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_SPEC))
                .cloned();
            let name = container_name(&self.project, c);
            let action = match existing.get(&c) {
                Some(cur)
                    if cur.labels.as_ref().and_then(|l| l.get(LABEL_SPEC)) == want.as_ref() =>
                {
                    if cur.state == Some(ContainerSummaryStateEnum::RUNNING) {
                        Action::Unchanged
                    } else {
                        Action::Started
                    }
                }
                Some(cur) => {
                    let id = cur.id.clone().unwrap_or_else(|| name.clone());
                    self.docker
                        .remove_container(
                            &id,
                            Some(RemoveContainerOptions {
                                force: true,
                                ..Default::default()
                            }),
                        )
                        .await
                        .map_err(api(format!("remove container {name}")))?;
                    self.create(&name, spec).await?;
                    record(&|created| created.containers.push(name.clone()));
                    Action::Recreated
                }
                None => {
                    self.create(&name, spec).await?;
                    record(&|created| created.containers.push(name.clone()));
                    Action::Created
                }
            };
            if action != Action::Unchanged {
                self.docker
                    .start_container(&name, None)
                    .await
                    .map_err(api(format!("start container {name}")))?;
            }
            crate::ui::debug(1, format!("container {name} {action}"));
            Ok::<_, DockerError>((c, action))
        });
        futures_util::future::join_all(converge)
            .await
            .into_iter()
            .collect()
    }

    /// Removes what a failed `up` created (containers first: they hold the network and
    /// volumes), and returns the error to report: `failure`, plus what could not be removed.
    async fn roll_back(&self, created: Created, failure: DockerError) -> DockerError {
        let force = || {
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            })
        };
        let mut left = Vec::new();
        for name in &created.containers {
            if let Err(e) = self.docker.remove_container(name, force()).await {
                left.push(format!("container {name} ({e})"));
            }
        }
        for name in &created.volumes {
            if let Err(e) = self
                .docker
                .remove_volume(name, None::<RemoveVolumeOptions>)
                .await
            {
                left.push(format!("volume {name} ({e})"));
            }
        }
        if created.network {
            let name = network_name(&self.project);
            if let Err(e) = self.docker.remove_network(&name).await {
                left.push(format!("network {name} ({e})"));
            }
        }
        if left.is_empty() {
            return failure;
        }
        DockerError::RollBack {
            failure: Box::new(failure),
            left,
            project: self.project.clone(),
        }
    }

    async fn create(&self, name: &str, spec: ContainerCreateBody) -> Result<(), DockerError> {
        self.docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_string()),
                    ..Default::default()
                }),
                spec,
            )
            .await
            .map_err(api(format!("create container {name}")))?;
        Ok(())
    }

    /// `Some(state)` when the component's container is not running.
    async fn dead_state(&self, name: String) -> Option<String> {
        let c = Component::parse(&name)?;
        let info = self
            .docker
            .inspect_container(&container_name(&self.project, c), None)
            .await
            .ok()?;
        let state = info.state?;
        if state.running == Some(true) {
            return None;
        }
        Some(format!(
            "container {} (exit code {}{})",
            state
                .status
                .map_or_else(|| "unknown".to_string(), |s| s.to_string()),
            state.exit_code.unwrap_or_default(),
            state
                .error
                .filter(|e| !e.is_empty())
                .map_or_else(String::new, |e| format!(", {e}"))
        ))
    }

    /// The last `n` lines of a component's logs, indented, for error messages.
    pub async fn last_logs(&self, c: Component, n: usize) -> String {
        let name = container_name(&self.project, c);
        let mut stream = self.docker.logs(
            &name,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                tail: n.to_string(),
                ..Default::default()
            }),
        );
        let mut out = format!("last {n} log lines of {name}:\n");
        while let Some(Ok(chunk)) = stream.next().await {
            for line in chunk.to_string().lines() {
                out.push_str("    ");
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Removes this project's containers (the stack's and the workflow steps' it ran) and
    /// network, and its volumes when asked. Returns the names of what was removed.
    pub async fn down(&self, volumes: bool) -> Result<Vec<String>, DockerError> {
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(self.project_filter()),
                ..Default::default()
            }))
            .await
            .map_err(api("list containers"))?;
        // Containers stop in parallel: each may take its grace period.
        let stops = containers.into_iter().map(|summary| async move {
            let name = summary
                .names
                .iter()
                .flatten()
                .next()
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default();
            let id = summary.id.unwrap_or_else(|| name.clone());
            if summary.state == Some(ContainerSummaryStateEnum::RUNNING) {
                self.docker
                    .stop_container(
                        &id,
                        Some(StopContainerOptions {
                            t: Some(10),
                            ..Default::default()
                        }),
                    )
                    .await
                    .map_err(api(format!("stop container {name}")))?;
            }
            self.docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(api(format!("remove container {name}")))?;
            Ok::<_, DockerError>(format!("container {name}"))
        });
        let mut removed = futures_util::future::join_all(stops)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        let networks = self
            .docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(self.project_filter()),
            }))
            .await
            .map_err(api("list networks"))?;
        for n in networks {
            let Some(name) = n.name else { continue };
            self.docker
                .remove_network(&name)
                .await
                .map_err(api(format!("remove network {name}")))?;
            removed.push(format!("network {name}"));
        }
        if volumes {
            let list = self
                .docker
                .list_volumes(Some(ListVolumesOptions {
                    filters: Some(self.project_filter()),
                }))
                .await
                .map_err(api("list volumes"))?;
            for v in list.volumes.unwrap_or_default() {
                self.docker
                    .remove_volume(&v.name, Some(RemoveVolumeOptions { force: false }))
                    .await
                    .map_err(api(format!("remove volume {}", v.name)))?;
                removed.push(format!("volume {}", v.name));
            }
        }
        Ok(removed)
    }

    /// Each component's container state, image, and readiness through its published port.
    pub async fn status(&self) -> Result<Vec<ComponentStatus>, DockerError> {
        let containers = self.containers().await?;
        let client = ready::client();
        let mut out = Vec::new();
        for svc in definition::services() {
            let c = svc.component;
            let Some(summary) = containers.get(&c) else {
                out.push(ComponentStatus {
                    component: c,
                    container: None,
                    image: None,
                    state: "missing".into(),
                    ready: false,
                    url: None,
                    detail: None,
                });
                continue;
            };
            let state = summary
                .state
                .map_or_else(|| "unknown".to_string(), |s| s.to_string());
            let published = summary.ports.as_ref().and_then(|ports| {
                ports
                    .iter()
                    .find(|p| {
                        p.private_port == svc.ready.0.container_port() && p.public_port.is_some()
                    })
                    .and_then(|p| p.public_port)
            });
            let url = published.map(|port| format!("http://127.0.0.1:{port}{}", svc.ready.1));
            let probe = match &url {
                Some(u) if summary.state == Some(ContainerSummaryStateEnum::RUNNING) => {
                    ready::probe(&client, u).await
                }
                _ => Err(summary.status.clone().unwrap_or_default()),
            };
            out.push(ComponentStatus {
                component: c,
                container: Some(container_name(&self.project, c)),
                image: summary.image.clone(),
                state,
                ready: probe.is_ok(),
                url,
                detail: probe.err(),
            });
        }
        Ok(out)
    }
}

/// One row of `obsctl status`.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentStatus {
    pub component: Component,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `running`, `exited`, `missing`, ...
    pub state: String,
    pub ready: bool,
    /// The readiness URL probed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Why it is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_are_checked_and_names_derive_from_them() {
        assert!(check_project("obsctl").is_ok());
        assert!(check_project("t-1_x").is_ok());
        for bad in ["", "-x", "Upper", "a b", "a/b", &"x".repeat(41)] {
            assert!(check_project(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            container_name("p", Component::Collector),
            "p-otel-collector"
        );
        assert_eq!(volume_name("p", Component::Tempo), "p-tempo-data");
        assert_eq!(network_name("p"), "p-net");
    }

    #[test]
    fn the_spec_hash_is_stable_and_sensitive() {
        assert_eq!(fnv64(&["a", "b"]), fnv64(&["a", "b"]));
        assert_ne!(fnv64(&["a", "b"]), fnv64(&["ab"]));
        assert_ne!(fnv64(&["a"]), fnv64(&["b"]));
    }
}
