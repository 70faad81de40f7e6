//! Per-component image and host-port choices for `obsctl up`, merged from (highest first) the
//! command line, `OBSCTL_IMAGE_<COMPONENT>` / `OBSCTL_PORT_<PORT>` environment variables, the
//! stack config file, and the pinned defaults: private registries and air-gapped machines need
//! nothing but an override.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::definition::{Component, Port};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read stack config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("stack config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "{origin}: unknown component {name:?} (expected one of: collector, aggregator, tempo, loki, prometheus, grafana)"
    )]
    UnknownComponent { origin: String, name: String },
    #[error(
        "{origin}: unknown port {name:?} (expected one of: otlp-grpc, otlp-http, collector-health, aggregator, tempo, loki, prometheus, grafana)"
    )]
    UnknownPort { origin: String, name: String },
    #[error("unknown environment variable {name}; the known ones are {}", known.join(", "))]
    UnknownVariable { name: String, known: Vec<String> },
    #[error("{origin}: {value:?} is not a port number (1-65535)")]
    BadPort { origin: String, value: String },
    #[error("{origin}: {value:?} is not COMPONENT=IMAGE")]
    BadImageOverride { origin: String, value: String },
    #[error("{origin}: image reference is empty")]
    EmptyImage { origin: String },
    #[error("host port {port} is given to both {a} and {b}")]
    PortClash {
        port: u16,
        a: &'static str,
        b: &'static str,
    },
}

/// The stack config file, e.g. `~/.config/obsctl/stack.yaml`:
/// ```yaml
/// images:
///   tempo: registry.internal/grafana/tempo:3.0.3
/// ports:
///   grafana: 13000
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    images: BTreeMap<String, String>,
    #[serde(default)]
    ports: BTreeMap<String, u16>,
}

/// Images and host ports after every override is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackConfig {
    pub images: BTreeMap<Component, String>,
    pub ports: BTreeMap<Port, u16>,
}

impl StackConfig {
    pub fn image(&self, c: Component) -> &str {
        &self.images[&c]
    }

    pub fn port(&self, p: Port) -> u16 {
        self.ports[&p]
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self, p: Port) -> String {
        format!("http://127.0.0.1:{}", self.port(p))
    }
}

/// `$XDG_CONFIG_HOME/obsctl/stack.yaml`, else `~/.config/obsctl/stack.yaml`.
pub fn default_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("obsctl/stack.yaml"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|home| PathBuf::from(home).join(".config/obsctl/stack.yaml"))
}

/// Resolves the stack config. `file` is read when given (and must exist); otherwise the default
/// path is read if present. `image_flags` are `COMPONENT=IMAGE` strings from the command line.
pub fn resolve(
    file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    image_flags: &[String],
) -> Result<StackConfig, ConfigError> {
    let (path, from_file) = match file {
        Some(p) => (Some(p.to_path_buf()), read_file(p)?),
        None => match default_path().filter(|p| p.is_file()) {
            Some(p) => {
                let cfg = read_file(&p)?;
                (Some(p), cfg)
            }
            None => (None, FileConfig::default()),
        },
    };
    let origin = path
        .as_ref()
        .map_or_else(String::new, |p| p.display().to_string());

    let mut images: BTreeMap<Component, String> = Component::ALL
        .into_iter()
        .map(|c| (c, c.default_image().to_string()))
        .collect();
    for (name, image) in from_file.images {
        let c = Component::parse(&name).ok_or_else(|| ConfigError::UnknownComponent {
            origin: format!("{origin}: images"),
            name: name.clone(),
        })?;
        images.insert(c, non_empty(image, &format!("{origin}: images.{name}"))?);
    }
    for c in Component::ALL {
        if let Some(image) = env(&c.image_env()) {
            images.insert(c, non_empty(image, &c.image_env())?);
        }
    }
    for flag in image_flags {
        let (name, image) = flag
            .split_once('=')
            .ok_or_else(|| ConfigError::BadImageOverride {
                origin: "--image".into(),
                value: flag.clone(),
            })?;
        let c = Component::parse(name).ok_or_else(|| ConfigError::UnknownComponent {
            origin: "--image".into(),
            name: name.to_string(),
        })?;
        images.insert(c, non_empty(image.to_string(), "--image")?);
    }

    let mut ports: BTreeMap<Port, u16> = Port::ALL
        .into_iter()
        .map(|p| (p, p.container_port()))
        .collect();
    for (name, port) in from_file.ports {
        let p = Port::parse(&name).ok_or_else(|| ConfigError::UnknownPort {
            origin: format!("{origin}: ports"),
            name: name.clone(),
        })?;
        if port == 0 {
            return Err(ConfigError::BadPort {
                origin: format!("{origin}: ports.{name}"),
                value: "0".into(),
            });
        }
        ports.insert(p, port);
    }
    for p in Port::ALL {
        if let Some(value) = env(&p.env()) {
            let port = value
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|n| *n != 0)
                .ok_or_else(|| ConfigError::BadPort {
                    origin: p.env(),
                    value: value.clone(),
                })?;
            ports.insert(p, port);
        }
    }
    let mut seen: BTreeMap<u16, Port> = BTreeMap::new();
    for (p, port) in &ports {
        if let Some(other) = seen.insert(*port, *p) {
            return Err(ConfigError::PortClash {
                port: *port,
                a: other.name(),
                b: p.name(),
            });
        }
    }
    Ok(StackConfig { images, ports })
}

/// Refuses an `OBSCTL_PORT_*` or `OBSCTL_IMAGE_*` variable that names no port or component: a
/// typo (`OBSCTL_PORT_TEMP`) would otherwise be ignored and the default used without a word.
/// `names`: every variable name in the environment.
pub fn check_env_names<S: AsRef<str>>(
    names: impl IntoIterator<Item = S>,
) -> Result<(), ConfigError> {
    let ports: Vec<String> = Port::ALL.iter().map(|p| p.env()).collect();
    let images: Vec<String> = Component::ALL.iter().map(|c| c.image_env()).collect();
    for name in names {
        let name = name.as_ref();
        let known = if name.starts_with("OBSCTL_PORT_") {
            &ports
        } else if name.starts_with("OBSCTL_IMAGE_") {
            &images
        } else {
            continue;
        };
        if !known.iter().any(|k| k == name) {
            return Err(ConfigError::UnknownVariable {
                name: name.to_string(),
                known: known.clone(),
            });
        }
    }
    Ok(())
}

fn non_empty(image: String, origin: &str) -> Result<String, ConfigError> {
    let image = image.trim().to_string();
    if image.is_empty() {
        return Err(ConfigError::EmptyImage {
            origin: origin.to_string(),
        });
    }
    Ok(image)
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let body = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if body.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    serde_norway::from_str(&body).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The process environment, for [`resolve`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Whether `image` is one of the images `scripts/build-images.sh` builds in the place of a
/// component that cannot be had without a registry (the obsctl image standing in for the
/// collector, Tempo or Loki, and the readiness stand-in), so that output never presents it as
/// the product it stands in for.
pub fn is_stand_in(image: &str) -> bool {
    image.starts_with("obsctl-local/obsctl:") || image.starts_with("obsctl-local/standin:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_environment_beat_file_beat_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stack.yaml");
        std::fs::write(
            &file,
            "images:\n  tempo: file/tempo:1\n  loki: file/loki:1\n  grafana: file/grafana:1\nports:\n  grafana: 13000\n",
        )
        .unwrap();
        let env = |k: &str| match k {
            "OBSCTL_IMAGE_LOKI" => Some("env/loki:2".to_string()),
            "OBSCTL_IMAGE_GRAFANA" => Some("env/grafana:2".to_string()),
            "OBSCTL_PORT_TEMPO" => Some("13200".to_string()),
            _ => None,
        };
        let cfg = resolve(Some(&file), &env, &["grafana=flag/grafana:3".into()]).unwrap();
        assert_eq!(cfg.image(Component::Tempo), "file/tempo:1");
        assert_eq!(cfg.image(Component::Loki), "env/loki:2");
        assert_eq!(cfg.image(Component::Grafana), "flag/grafana:3");
        assert_eq!(
            cfg.image(Component::Prometheus),
            Component::Prometheus.default_image()
        );
        assert_eq!(cfg.port(Port::Grafana), 13000);
        assert_eq!(cfg.port(Port::Tempo), 13200);
        assert_eq!(cfg.port(Port::Loki), 3100);
    }

    #[test]
    fn an_unknown_port_or_image_variable_is_refused_naming_the_known_ones() {
        assert!(check_env_names(["PATH", "OBSCTL_PORT_TEMPO", "OBSCTL_IMAGE_LOKI"]).is_ok());
        let err = check_env_names(["OBSCTL_PORT_TEMP"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("OBSCTL_PORT_TEMP;")
                && err.contains("OBSCTL_PORT_OTLP_GRPC, OBSCTL_PORT_OTLP_HTTP")
                && err.contains("OBSCTL_PORT_GRAFANA"),
            "{err}"
        );
        let err = check_env_names(["OBSCTL_IMAGE_JAEGER"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("OBSCTL_IMAGE_TEMPO"), "{err}");
    }

    #[test]
    fn bad_input_names_the_place_and_what_was_expected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stack.yaml");
        std::fs::write(&file, "images:\n  jaeger: x:1\n").unwrap();
        let err = resolve(Some(&file), &|_| None, &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("stack.yaml: images") && err.contains("\"jaeger\""),
            "{err}"
        );

        std::fs::write(&file, "ports:\n  grafana: banana\n").unwrap();
        let err = resolve(Some(&file), &|_| None, &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("stack.yaml") && err.contains("line 2"),
            "{err}"
        );

        let env = |k: &str| (k == "OBSCTL_PORT_LOKI").then(|| "70000".to_string());
        let err = resolve(None, &env, &[]).unwrap_err().to_string();
        assert!(
            err.contains("OBSCTL_PORT_LOKI") && err.contains("70000"),
            "{err}"
        );

        let env = |k: &str| (k == "OBSCTL_PORT_LOKI").then(|| "3000".to_string());
        let err = resolve(None, &env, &[]).unwrap_err().to_string();
        assert!(err.contains("3000") && err.contains("grafana"), "{err}");

        let err = resolve(None, &|_| None, &["tempo".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("COMPONENT=IMAGE"), "{err}");
    }
}
