//! Who holds a host port the stack needs. `up` asks before it creates anything, so a port taken
//! by obsctl's embedded backend, another Docker stack, a compose project or any other process is
//! refused with the holder and the fix, instead of Docker's raw `address already in use` after
//! half the containers exist, or a readiness probe answered by someone else.

use std::collections::BTreeMap;
use std::net::TcpListener;

use bollard::Docker;
use bollard::query_parameters::ListContainersOptions;

use super::background::Running;
use super::config::StackConfig;
use super::definition::{LABEL_PROJECT, Port};

/// The label docker-compose puts on the containers of a project.
const LABEL_COMPOSE_PROJECT: &str = "com.docker.compose.project";

/// What holds a port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Holder {
    /// The embedded backend `obsctl up --runtime embedded` started (its pid file names it).
    Embedded(Running),
    /// Containers of an obsctl Docker stack.
    Stack { project: String },
    /// Containers of a docker-compose project (obsctl's compose file or any other).
    Compose { project: String },
    /// Any other container publishing the port.
    Container { name: String },
    /// A process on this machine, with its command line.
    Process { pid: u32, command: String },
    /// The port cannot be bound and nothing visible to this user holds it.
    Unknown,
}

/// One holder and the ports it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub holder: Holder,
    pub ports: Vec<(Port, u16)>,
    /// The holder's containers that publish them (for a stack or compose project).
    pub containers: Vec<String>,
}

impl std::fmt::Display for Taken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<String> = self
            .ports
            .iter()
            .map(|(p, n)| format!("127.0.0.1:{n} ({})", p.name()))
            .collect();
        let addrs = addrs.join(", ");
        let other_port = || {
            let vars: Vec<String> = self.ports.iter().map(|(p, _)| p.env()).collect();
            format!("or give obsctl other ports ({})", vars.join(", "))
        };
        let containers = match self.containers.as_slice() {
            [] => String::new(),
            [one] => format!(" (container {one})"),
            many => format!(" (containers {})", many.join(", ")),
        };
        match &self.holder {
            Holder::Embedded(Running { pid, project }) => write!(
                f,
                "obsctl's embedded backend (pid {pid}, project {project}) holds {addrs}; run \
                 `obsctl down --project {project}` first"
            ),
            Holder::Stack { project } => write!(
                f,
                "obsctl's Docker stack {project:?}{containers} holds {addrs}; run \
                 `obsctl down --project {project}` first"
            ),
            Holder::Compose { project } => write!(
                f,
                "docker-compose project {project:?}{containers} holds {addrs}; run \
                 `docker-compose -p {project} down` first, {}",
                other_port()
            ),
            Holder::Container { name } => write!(
                f,
                "Docker container {name} holds {addrs}; stop it (`docker stop {name}`) {}",
                other_port()
            ),
            Holder::Process { pid, command } => write!(
                f,
                "process {pid} ({command}) holds {addrs}; stop it {}",
                other_port()
            ),
            Holder::Unknown => write!(
                f,
                "another process (not visible to this user) holds {addrs}; stop it {}",
                other_port()
            ),
        }
    }
}

/// Every port the stack needs that something else holds, one entry per holder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct PortsTaken(pub Vec<Taken>);

/// The ports among `wanted` that cannot be bound on 127.0.0.1 now.
pub fn busy(config: &StackConfig, wanted: &[Port]) -> Vec<(Port, u16)> {
    wanted
        .iter()
        .map(|p| (*p, config.port(*p)))
        .filter(|(_, n)| TcpListener::bind(("127.0.0.1", *n)).is_err())
        .collect()
}

/// Names the holder of each busy port and fails when any is not `own_project`'s container (the
/// Docker stack `up` converges, whose ports are expected to be held). `docker`: the engine to
/// ask about containers, when it answers.
pub async fn check(
    busy: Vec<(Port, u16)>,
    docker: Option<&Docker>,
    own_project: Option<&str>,
) -> Result<(), PortsTaken> {
    if busy.is_empty() {
        return Ok(());
    }
    let containers = match docker {
        Some(docker) => published(docker).await,
        None => Vec::new(),
    };
    let embedded = super::background::running();
    let mut by_holder: BTreeMap<Holder, Taken> = BTreeMap::new();
    for (port, number) in busy {
        let (holder, container) = match containers.iter().find(|c| c.ports.contains(&number)) {
            Some(c) if c.project.is_some() && c.project.as_deref() == own_project => continue,
            Some(c) => c.holder(),
            None => match process_holding(number) {
                Some(pid) => match embedded.clone().filter(|e| e.pid == pid) {
                    Some(running) => (Holder::Embedded(running), None),
                    None => (
                        Holder::Process {
                            pid,
                            command: command_line(pid),
                        },
                        None,
                    ),
                },
                None => (Holder::Unknown, None),
            },
        };
        let taken = by_holder.entry(holder.clone()).or_insert_with(|| Taken {
            holder,
            ports: Vec::new(),
            containers: Vec::new(),
        });
        taken.ports.push((port, number));
        if let Some(name) = container
            && !taken.containers.contains(&name)
        {
            taken.containers.push(name);
        }
    }
    if by_holder.is_empty() {
        return Ok(());
    }
    Err(PortsTaken(by_holder.into_values().collect()))
}

/// A running container and the host ports it publishes.
struct Published {
    name: String,
    project: Option<String>,
    compose: Option<String>,
    ports: Vec<u16>,
}

impl Published {
    /// Who holds this container's ports, and the container to name beside a project.
    fn holder(&self) -> (Holder, Option<String>) {
        let container = Some(self.name.clone());
        match (&self.project, &self.compose) {
            (Some(project), _) => (
                Holder::Stack {
                    project: project.clone(),
                },
                container,
            ),
            (None, Some(project)) => (
                Holder::Compose {
                    project: project.clone(),
                },
                container,
            ),
            (None, None) => (
                Holder::Container {
                    name: self.name.clone(),
                },
                None,
            ),
        }
    }
}

/// Running containers with published ports; empty when the engine does not answer (the
/// process scan then still names docker-proxy).
async fn published(docker: &Docker) -> Vec<Published> {
    let Ok(list) = docker
        .list_containers(Some(ListContainersOptions::default()))
        .await
    else {
        return Vec::new();
    };
    list.into_iter()
        .map(|c| {
            let labels = c.labels.unwrap_or_default();
            Published {
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_string())
                    .or(c.id)
                    .unwrap_or_default(),
                project: labels.get(LABEL_PROJECT).cloned(),
                compose: labels.get(LABEL_COMPOSE_PROJECT).cloned(),
                ports: c
                    .ports
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|p| p.public_port)
                    .collect(),
            }
        })
        .collect()
}

/// The process with a listening TCP socket on `port`, from `/proc/net/tcp{,6}` and the open
/// file descriptors under `/proc` (only processes this user may inspect are found).
fn process_holding(port: u16) -> Option<u32> {
    let sockets: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|body| listening_inodes(&body, port))
        .map(|inode| format!("socket:[{inode}]"))
        .collect();
    if sockets.is_empty() {
        return None;
    }
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let fds = std::fs::read_dir(entry.path().join("fd")).ok()?;
            fds.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .any(|target| sockets.iter().any(|s| target.as_os_str() == s.as_str()))
                .then_some(pid)
        })
}

/// Inodes of the sockets listening on `port` in one `/proc/net/tcp` table (columns: slot,
/// local address `HEXIP:HEXPORT`, remote address, state (`0A` = LISTEN), ..., inode).
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (_, local_port) = fields.get(1)?.rsplit_once(':')?;
            let listening = *fields.get(3)? == "0A";
            (listening && u16::from_str_radix(local_port, 16).ok()? == port)
                .then(|| fields.get(9)?.parse().ok())?
        })
        .collect()
}

/// A process's command line, shortened for one message line.
fn command_line(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    // Arguments may hold newlines (`sh -c` scripts): the message stays on one line.
    let text = String::from_utf8_lossy(&raw)
        .split(|c: char| c == '\0' || c.is_whitespace())
        .filter(|a| !a.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    match text.char_indices().nth(100) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None if text.is_empty() => "command unknown".into(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_are_found_by_port_and_state() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0C80 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0C80 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
   2: 00000000:10E1 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(listening_inodes(table, 3200), [4242]);
        assert_eq!(listening_inodes(table, 4321), [4444]);
        assert!(listening_inodes(table, 4317).is_empty());
    }

    #[test]
    fn this_process_is_named_as_the_holder_of_its_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(process_holding(port), Some(std::process::id()));
        drop(listener);
        assert_eq!(process_holding(port), None);
    }

    #[test]
    fn each_holder_gets_its_fix() {
        let ports = vec![(Port::Tempo, 3200)];
        let text = |holder, containers: &[&str]| {
            Taken {
                holder,
                ports: ports.clone(),
                containers: containers.iter().map(|c| c.to_string()).collect(),
            }
            .to_string()
        };
        assert_eq!(
            text(
                Holder::Embedded(Running {
                    pid: 7,
                    project: "obsctl".into()
                }),
                &[]
            ),
            "obsctl's embedded backend (pid 7, project obsctl) holds 127.0.0.1:3200 (tempo); run \
             `obsctl down --project obsctl` first"
        );
        let stack = text(
            Holder::Stack {
                project: "obsctl".into(),
            },
            &["obsctl-otel-collector", "obsctl-tempo"],
        );
        assert!(
            stack.starts_with(
                "obsctl's Docker stack \"obsctl\" (containers obsctl-otel-collector, \
                 obsctl-tempo) holds"
            ) && stack.contains("`obsctl down --project obsctl`"),
            "{stack}"
        );
        let compose = text(
            Holder::Compose {
                project: "p".into(),
            },
            &["p-tempo-1"],
        );
        assert!(compose.contains("`docker-compose -p p down`"), "{compose}");
        assert!(compose.contains("OBSCTL_PORT_TEMPO"), "{compose}");
        let process = text(
            Holder::Process {
                pid: 9,
                command: "nc -l 3200".into(),
            },
            &[],
        );
        assert!(
            process.starts_with("process 9 (nc -l 3200) holds 127.0.0.1:3200"),
            "{process}"
        );
    }
}
