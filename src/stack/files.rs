//! The `stack/` files, compiled into obsctl so that `obsctl up` mounts exactly what users can read
//! in the repository: one copy, never a second one drifting in the code.

use std::path::Path;

/// Every file under `stack/` that a container mounts, by path relative to `stack/`.
pub const FILES: &[(&str, &str)] = &[
    (
        "collector/config.yaml",
        include_str!("../../stack/collector/config.yaml"),
    ),
    (
        "tempo/tempo.yaml",
        include_str!("../../stack/tempo/tempo.yaml"),
    ),
    ("loki/loki.yaml", include_str!("../../stack/loki/loki.yaml")),
    (
        "prometheus/prometheus.yml",
        include_str!("../../stack/prometheus/prometheus.yml"),
    ),
    (
        "prometheus/rules/agent-steps.yml",
        include_str!("../../stack/prometheus/rules/agent-steps.yml"),
    ),
    (
        "grafana/provisioning/datasources/datasources.yaml",
        include_str!("../../stack/grafana/provisioning/datasources/datasources.yaml"),
    ),
    (
        "grafana/provisioning/dashboards/dashboards.yaml",
        include_str!("../../stack/grafana/provisioning/dashboards/dashboards.yaml"),
    ),
    (
        "grafana/dashboards/agent-steps.json",
        include_str!("../../stack/grafana/dashboards/agent-steps.json"),
    ),
];

/// The compose file, checked against [`super::definition`] by the tests.
pub const COMPOSE: &str = include_str!("../../stack/compose/docker-compose.yml");

/// The contents of one embedded file.
pub fn get(path: &str) -> Option<&'static str> {
    FILES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, body)| *body)
}

/// Writes every file under `dir`, keeping the `stack/` layout; a file already holding the same
/// bytes is left alone so that running containers see no change.
pub fn write_all(dir: &Path) -> std::io::Result<()> {
    for (rel, body) in FILES {
        let path = dir.join(rel);
        if std::fs::read(&path).is_ok_and(|old| old == body.as_bytes()) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, body)?;
    }
    Ok(())
}
