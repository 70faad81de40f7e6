//! Fixtures for the stack tests: an isolated obsctl environment per stack project (torn down on
//! drop), the local images, `docker` wrappers, and a static OpenMetrics target.

use std::net::TcpListener;
use std::process::Command;

use super::free_ports;

/// Serves `body` as OpenMetrics text to every request, from a background thread, until the
/// process ends; returns `host:port`.
pub fn serve_openmetrics(body: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
    });
    addr
}

/// Builds the local images with scripts/build-images.sh; returns NAME → image reference.
pub fn build_images() -> std::collections::BTreeMap<String, String> {
    static BUILT: std::sync::OnceLock<std::collections::BTreeMap<String, String>> =
        std::sync::OnceLock::new();
    BUILT.get_or_init(build_images_now).clone()
}

fn build_images_now() -> std::collections::BTreeMap<String, String> {
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/build-images.sh"
    ))
    .args(["--obsctl", env!("CARGO_BIN_EXE_obsctl")])
    .output()
    .expect("scripts/build-images.sh runs");
    assert!(
        out.status.success(),
        "build-images.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The local images, with ours also tagged `busybox:latest`, the image the workflows ask for:
/// only when no such image exists, so a real busybox is left alone (Docker then never pulls).
pub fn build_images_with_busybox() -> std::collections::BTreeMap<String, String> {
    let images = build_images();
    if Command::new("docker")
        .args(["image", "inspect", "busybox:latest"])
        .output()
        .is_ok_and(|o| !o.status.success())
    {
        docker(&["tag", &images["busybox"], "busybox:latest"]);
    }
    images
}

/// Removes a run's step containers on drop.
pub struct StepContainers(pub String);

impl Drop for StepContainers {
    fn drop(&mut self) {
        let filter = format!("label=io.obsctl.run={}", self.0);
        if let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
    }
}

/// `docker ARGS`, stdout trimmed; panics on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Lines of `docker <kind> ls` names carrying the project label.
pub fn labelled(kind: &str, project: &str) -> Vec<String> {
    let filter = format!("label=io.obsctl.project={project}");
    let args: Vec<&str> = match kind {
        "container" => vec!["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"],
        "network" => vec![
            "network",
            "ls",
            "--filter",
            &filter,
            "--format",
            "{{.Name}}",
        ],
        _ => vec!["volume", "ls", "--filter", &filter, "--format", "{{.Name}}"],
    };
    let mut names: Vec<String> = docker(&args).lines().map(str::to_string).collect();
    names.sort();
    names
}

/// An isolated obsctl environment (state and config directories, ports, images) for one stack
/// project; `down --volumes` runs on drop, so a failing test leaves no container behind.
pub struct StackEnv {
    pub project: String,
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl StackEnv {
    pub fn new(project_prefix: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let project = format!(
            "{project_prefix}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
                % 100_000
        );
        let env = vec![
            (
                "XDG_STATE_HOME".to_string(),
                dir.path().join("state").display().to_string(),
            ),
            (
                "XDG_CONFIG_HOME".to_string(),
                dir.path().join("config").display().to_string(),
            ),
            // Every command of this environment, `--project` or not, is about its project.
            ("OBSCTL_PROJECT".to_string(), project.clone()),
        ];
        Self { project, dir, env }
    }

    pub fn set(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Free host ports for every published port.
    pub fn free_ports(&mut self) {
        let all = obsctl::stack::definition::Port::ALL;
        for (p, port) in all.iter().zip(free_ports(all.len())) {
            self.set(&p.env(), &port.to_string());
        }
    }

    pub fn state_home(&self) -> std::path::PathBuf {
        self.dir.path().join("state/obsctl")
    }

    pub fn obsctl(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_obsctl"));
        cmd.args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }
}

impl Drop for StackEnv {
    fn drop(&mut self) {
        let _ = self.obsctl(&["down", "--volumes", "--project", &self.project]);
    }
}

pub fn text(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
