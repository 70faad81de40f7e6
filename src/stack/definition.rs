//! What the Docker stack is: six components, their pinned images, commands, ports, mounts and
//! data volumes. `obsctl up` creates containers from this, and `stack/compose/docker-compose.yml`
//! is checked against it (see [`compose`]) so the two can never drift.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::pins;

/// One container of the stack.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    Collector,
    /// obsctl's metrics accumulator (`obsctl serve`): the single writer of every step series,
    /// between the collector and Prometheus (docs/metrics-path.md).
    Aggregator,
    Tempo,
    Loki,
    Prometheus,
    Grafana,
}

impl Component {
    /// In start order: backends before the collector that feeds them, Grafana last.
    pub const ALL: [Component; 6] = [
        Component::Tempo,
        Component::Loki,
        Component::Aggregator,
        Component::Collector,
        Component::Prometheus,
        Component::Grafana,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Component::Collector => "collector",
            Component::Aggregator => "aggregator",
            Component::Tempo => "tempo",
            Component::Loki => "loki",
            Component::Prometheus => "prometheus",
            Component::Grafana => "grafana",
        }
    }

    /// The host name other containers use (the compose service name and the network alias):
    /// `otel-collector` is the name seed 000 puts in `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn service(self) -> &'static str {
        match self {
            Component::Collector => "otel-collector",
            other => other.name(),
        }
    }

    /// Pinned upstream image ([`pins`]); never `latest`. No registry publishes obsctl's own image: the
    /// aggregator's is built from the obsctl binary by `scripts/build-images.sh`, under this tag.
    pub fn default_image(self) -> &'static str {
        match self {
            Component::Collector => pins::COLLECTOR.image,
            Component::Aggregator => concat!("obsctl-local/obsctl:", env!("CARGO_PKG_VERSION")),
            Component::Tempo => pins::TEMPO.image,
            Component::Loki => pins::LOKI.image,
            Component::Prometheus => pins::PROMETHEUS.image,
            Component::Grafana => pins::GRAFANA.image,
        }
    }

    /// The environment variable overriding this component's image, e.g. `OBSCTL_IMAGE_TEMPO`.
    pub fn image_env(self) -> String {
        format!("OBSCTL_IMAGE_{}", self.name().to_ascii_uppercase())
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A port published on 127.0.0.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Port {
    OtlpGrpc,
    OtlpHttp,
    CollectorHealth,
    /// The aggregator's `/metrics` (and its query API), which Prometheus scrapes.
    Aggregator,
    Tempo,
    Loki,
    Prometheus,
    Grafana,
}

impl Port {
    pub const ALL: [Port; 8] = [
        Port::OtlpGrpc,
        Port::OtlpHttp,
        Port::CollectorHealth,
        Port::Aggregator,
        Port::Tempo,
        Port::Loki,
        Port::Prometheus,
        Port::Grafana,
    ];

    /// The key in the config file's `ports:` map.
    pub fn name(self) -> &'static str {
        match self {
            Port::OtlpGrpc => "otlp-grpc",
            Port::OtlpHttp => "otlp-http",
            Port::CollectorHealth => "collector-health",
            Port::Aggregator => "aggregator",
            Port::Tempo => "tempo",
            Port::Loki => "loki",
            Port::Prometheus => "prometheus",
            Port::Grafana => "grafana",
        }
    }

    /// The environment variable overriding the host port, e.g. `OBSCTL_PORT_OTLP_GRPC`.
    pub fn env(self) -> String {
        format!(
            "OBSCTL_PORT_{}",
            self.name().replace('-', "_").to_ascii_uppercase()
        )
    }

    /// The port inside the container; also the default host port.
    pub fn container_port(self) -> u16 {
        match self {
            Port::OtlpGrpc => 4317,
            Port::OtlpHttp => 4318,
            Port::CollectorHealth => 13133,
            // The port the collector's `prometheus` exporter conventionally uses, which this
            // component replaces.
            Port::Aggregator => 8889,
            Port::Tempo => 3200,
            Port::Loki => 3100,
            Port::Prometheus => 9090,
            Port::Grafana => 3000,
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// A file or directory from `stack/`, mounted read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Relative to `stack/`.
    pub source: &'static str,
    pub target: &'static str,
}

/// An environment value: a literal, or the generated Grafana admin password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    Literal(&'static str),
    GrafanaAdminPassword,
}

/// The variable the compose file reads the Grafana admin password from.
pub const GRAFANA_PASSWORD_ENV: &str = "GRAFANA_ADMIN_PASSWORD";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub component: Component,
    pub command: Vec<&'static str>,
    /// Set only where the image's default user cannot write its data volume.
    pub user: Option<&'static str>,
    pub ports: Vec<Port>,
    pub mounts: Vec<Mount>,
    /// Named volume mounted at this path (volume name `<project>-<component>-data`).
    pub data_dir: &'static str,
    pub env: Vec<(&'static str, EnvValue)>,
    /// Readiness: HTTP GET on this published port and path answers 200.
    pub ready: (Port, &'static str),
    pub depends_on: Vec<Component>,
}

const fn mount(source: &'static str, target: &'static str) -> Mount {
    Mount { source, target }
}

/// The services, in [`Component::ALL`] order.
pub fn services() -> Vec<Service> {
    Component::ALL.into_iter().map(service).collect()
}

pub fn service(component: Component) -> Service {
    use EnvValue::Literal;
    match component {
        Component::Collector => Service {
            component,
            command: vec!["--config=/etc/otelcol-contrib/config.yaml"],
            // The contrib image is FROM scratch with no directory its user 10001 may write, and a
            // fresh named volume is root-owned: the persistent sending queue needs root here.
            user: Some("0:0"),
            ports: vec![Port::OtlpGrpc, Port::OtlpHttp, Port::CollectorHealth],
            mounts: vec![mount(
                "collector/config.yaml",
                "/etc/otelcol-contrib/config.yaml",
            )],
            data_dir: "/var/lib/otelcol",
            env: vec![],
            ready: (Port::CollectorHealth, "/ready"),
            depends_on: vec![Component::Tempo, Component::Loki, Component::Aggregator],
        },
        Component::Aggregator => Service {
            component,
            // The image's entrypoint runs any obsctl subcommand. The OTLP ports are reached only
            // inside the stack's network (from the collector); the query API is published for
            // `curl`, benchmarks and tests. Series retention is the accumulator's default.
            command: vec![
                "serve",
                "--allow-remote",
                "--otlp-grpc=0.0.0.0:4317",
                "--otlp-http=0.0.0.0:4318",
                "--api=0.0.0.0:8889",
                "--data-dir=/var/lib/obsctl",
                "--endpoints-file=/tmp/endpoints.json",
            ],
            // A fresh named volume is root-owned and the image has no other user.
            user: Some("0:0"),
            ports: vec![Port::Aggregator],
            mounts: vec![],
            data_dir: "/var/lib/obsctl",
            env: vec![],
            ready: (Port::Aggregator, "/ready"),
            depends_on: vec![],
        },
        Component::Tempo => Service {
            component,
            command: vec!["-config.file=/etc/tempo/tempo.yaml"],
            user: None,
            ports: vec![Port::Tempo],
            mounts: vec![mount("tempo/tempo.yaml", "/etc/tempo/tempo.yaml")],
            data_dir: "/var/tempo",
            env: vec![],
            ready: (Port::Tempo, "/ready"),
            depends_on: vec![],
        },
        Component::Loki => Service {
            component,
            command: vec!["-config.file=/etc/loki/loki.yaml"],
            user: None,
            ports: vec![Port::Loki],
            mounts: vec![mount("loki/loki.yaml", "/etc/loki/loki.yaml")],
            data_dir: "/loki",
            env: vec![],
            ready: (Port::Loki, "/ready"),
            depends_on: vec![],
        },
        Component::Prometheus => Service {
            component,
            command: vec![
                "--config.file=/etc/prometheus/prometheus.yml",
                "--storage.tsdb.path=/prometheus",
                "--enable-feature=exemplar-storage",
                "--web.enable-lifecycle",
            ],
            user: None,
            ports: vec![Port::Prometheus],
            mounts: vec![
                mount(
                    "prometheus/prometheus.yml",
                    "/etc/prometheus/prometheus.yml",
                ),
                mount("prometheus/rules", "/etc/prometheus/rules"),
            ],
            data_dir: "/prometheus",
            env: vec![],
            ready: (Port::Prometheus, "/-/ready"),
            depends_on: vec![Component::Aggregator],
        },
        Component::Grafana => Service {
            component,
            command: vec![],
            user: None,
            ports: vec![Port::Grafana],
            mounts: vec![
                mount("grafana/provisioning", "/etc/grafana/provisioning"),
                mount("grafana/dashboards", "/etc/grafana/dashboards"),
            ],
            data_dir: "/var/lib/grafana",
            env: vec![
                ("GF_AUTH_ANONYMOUS_ENABLED", Literal("true")),
                ("GF_AUTH_ANONYMOUS_ORG_ROLE", Literal("Viewer")),
                ("GF_SECURITY_ADMIN_USER", Literal("admin")),
                ("GF_SECURITY_ADMIN_PASSWORD", EnvValue::GrafanaAdminPassword),
                ("GF_ANALYTICS_REPORTING_ENABLED", Literal("false")),
                ("GF_ANALYTICS_CHECK_FOR_UPDATES", Literal("false")),
            ],
            ready: (Port::Grafana, "/api/health"),
            depends_on: vec![Component::Prometheus, Component::Tempo, Component::Loki],
        },
    }
}

/// The service a published port belongs to.
pub fn owner(port: Port) -> Component {
    match port {
        Port::OtlpGrpc | Port::OtlpHttp | Port::CollectorHealth => Component::Collector,
        Port::Aggregator => Component::Aggregator,
        Port::Tempo => Component::Tempo,
        Port::Loki => Component::Loki,
        Port::Prometheus => Component::Prometheus,
        Port::Grafana => Component::Grafana,
    }
}

/// A docker-compose file, typed: the subset obsctl's stack uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeFile {
    pub services: BTreeMap<String, ComposeService>,
    pub networks: BTreeMap<String, ComposeResource>,
    pub volumes: BTreeMap<String, ComposeResource>,
}

/// A network or volume of the compose file, under obsctl's name for it and with its labels, so
/// that `obsctl down` finds and removes it as its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeResource {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeService {
    pub image: String,
    pub container_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub ports: Vec<String>,
    pub volumes: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

/// Label keys on everything `obsctl up` creates.
pub const LABEL_PROJECT: &str = "io.obsctl.project";
pub const LABEL_COMPONENT: &str = "io.obsctl.component";

/// The compose file's project: the same variable and default as `obsctl up --project`.
const COMPOSE_PROJECT: &str = "${OBSCTL_PROJECT:-obsctl}";

/// The compose file this definition implies, with the same image and port override variables
/// as obsctl (`OBSCTL_IMAGE_*`, `OBSCTL_PORT_*`), the Grafana password required from the
/// environment, and obsctl's names and labels for the project in `OBSCTL_PROJECT` (so that
/// `status`, `down` and `run --runner docker` recognise the stack).
pub fn compose() -> ComposeFile {
    let mut compose_services = BTreeMap::new();
    let mut volumes = BTreeMap::new();
    let project_label = (LABEL_PROJECT.to_string(), COMPOSE_PROJECT.to_string());
    for svc in services() {
        let c = svc.component;
        let volume = format!("{}-data", c.name());
        let mut mounts: Vec<String> = svc
            .mounts
            .iter()
            .map(|m| format!("../{}:{}:ro", m.source, m.target))
            .collect();
        mounts.push(format!("{volume}:{}", svc.data_dir));
        let component_label = (LABEL_COMPONENT.to_string(), c.name().to_string());
        volumes.insert(
            volume.clone(),
            ComposeResource {
                // The same name as `docker::volume_name`.
                name: format!("{COMPOSE_PROJECT}-{volume}"),
                labels: BTreeMap::from([project_label.clone(), component_label.clone()]),
            },
        );
        let environment = svc
            .env
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    EnvValue::Literal(s) => (*s).to_string(),
                    EnvValue::GrafanaAdminPassword => format!(
                        "${{{GRAFANA_PASSWORD_ENV}:?set {GRAFANA_PASSWORD_ENV}; obsctl up generates one}}"
                    ),
                };
                ((*k).to_string(), value)
            })
            .collect();
        compose_services.insert(
            c.service().to_string(),
            ComposeService {
                image: format!("${{{}:-{}}}", c.image_env(), c.default_image()),
                // The same name as `docker::container_name`.
                container_name: format!("{COMPOSE_PROJECT}-{}", c.service()),
                command: svc.command.iter().map(|s| s.to_string()).collect(),
                user: svc.user.map(str::to_string),
                ports: svc
                    .ports
                    .iter()
                    .map(|p| {
                        format!(
                            "127.0.0.1:${{{}:-{}}}:{}",
                            p.env(),
                            p.container_port(),
                            p.container_port()
                        )
                    })
                    .collect(),
                volumes: mounts,
                environment,
                labels: BTreeMap::from([project_label.clone(), component_label]),
                depends_on: svc
                    .depends_on
                    .iter()
                    .map(|d| d.service().to_string())
                    .collect(),
            },
        );
    }
    ComposeFile {
        services: compose_services,
        // The same name as `docker::network_name`; services reach each other by service name.
        networks: BTreeMap::from([(
            "default".to_string(),
            ComposeResource {
                name: format!("{COMPOSE_PROJECT}-net"),
                labels: BTreeMap::from([project_label]),
            },
        )]),
        volumes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compose_file_matches_the_definition() {
        let file: ComposeFile = serde_norway::from_str(super::super::files::COMPOSE)
            .expect("stack/compose/docker-compose.yml parses");
        let expected = compose();
        for (name, svc) in &expected.services {
            assert_eq!(
                file.services.get(name),
                Some(svc),
                "service {name} in stack/compose/docker-compose.yml differs from obsctl's definition"
            );
        }
        assert_eq!(file, expected);
    }

    #[test]
    fn every_mount_source_is_an_embedded_file_or_directory() {
        for svc in services() {
            for m in &svc.mounts {
                let is_file = super::super::files::get(m.source).is_some();
                let prefix = format!("{}/", m.source);
                let is_dir = super::super::files::FILES
                    .iter()
                    .any(|(p, _)| p.starts_with(&prefix));
                assert!(
                    is_file || is_dir,
                    "{} mounts {} which obsctl does not embed",
                    svc.component,
                    m.source
                );
            }
        }
    }

    #[test]
    fn images_are_pinned_and_ports_are_unique() {
        for c in Component::ALL {
            let image = c.default_image();
            let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
            assert!(!tag.is_empty() && tag != "latest", "{image} is not pinned");
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in Port::ALL {
            assert!(seen.insert(p.container_port()));
            assert_eq!(Port::parse(p.name()), Some(p));
        }
        assert_eq!(Port::OtlpGrpc.env(), "OBSCTL_PORT_OTLP_GRPC");
        assert_eq!(Component::Tempo.image_env(), "OBSCTL_IMAGE_TEMPO");
    }
}
