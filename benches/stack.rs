//! `cargo bench --bench stack`: time from `obsctl up` to every component ready and from
//! `obsctl down --volumes` to nothing left, against `docker-compose up -d` on
//! stack/compose/docker-compose.yml followed by polling the same readiness endpoints (and
//! `docker-compose down -v`), in the same run, with the same local images (scripts/build-images.sh:
//! real Prometheus, stand-ins for the components no registry can provide here).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use obsctl::stack::definition::{self, Component, Port};
use obsctl::stack::ready::{Target, wait_all};

#[path = "../tests/common/mod.rs"]
mod common;

use common::free_port;

const ROUNDS: usize = 5;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn docker_names(filter: &str) -> usize {
    let ps = run(Command::new("docker").args(["ps", "-aq", "--filter", filter]));
    let nets = run(Command::new("docker").args(["network", "ls", "-q", "--filter", filter]));
    let vols = run(Command::new("docker").args(["volume", "ls", "-q", "--filter", filter]));
    ps.lines().count() + nets.lines().count() + vols.lines().count()
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let root = env!("CARGO_MANIFEST_DIR");
    let obsctl = env!("CARGO_BIN_EXE_obsctl");
    let images: BTreeMap<String, String> =
        run(Command::new(format!("{root}/scripts/build-images.sh")).args(["--obsctl", ""]))
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let state = tempfile::tempdir().unwrap();
    let mut env: Vec<(String, String)> = vec![
        (
            "XDG_STATE_HOME".into(),
            state.path().join("state").display().to_string(),
        ),
        (
            "XDG_CONFIG_HOME".into(),
            state.path().join("config").display().to_string(),
        ),
        (
            "GRAFANA_ADMIN_PASSWORD".into(),
            "bench-only-not-a-default".into(),
        ),
    ];
    for c in Component::ALL {
        let image = if c == Component::Prometheus {
            &images["prometheus"]
        } else {
            &images["standin"]
        };
        env.push((c.image_env(), image.clone()));
    }
    let mut ports = BTreeMap::new();
    for p in Port::ALL {
        let port = free_port();
        ports.insert(p, port);
        env.push((p.env(), port.to_string()));
    }
    let targets: Vec<Target> = definition::services()
        .iter()
        .map(|s| Target {
            name: s.component.name().into(),
            url: format!("http://127.0.0.1:{}{}", ports[&s.ready.0], s.ready.1),
        })
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cmd = |program: &str| {
        let mut c = Command::new(program);
        c.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    };
    let project = format!("bench{}", std::process::id());
    let compose_project = format!("benchcompose{}", std::process::id());
    let compose_file = format!("{root}/stack/compose/docker-compose.yml");

    let mut o_up = Vec::new();
    let mut o_again = Vec::new();
    let mut o_down = Vec::new();
    let mut c_up = Vec::new();
    let mut c_again = Vec::new();
    let mut c_down = Vec::new();
    for round in 0..ROUNDS {
        eprintln!("round {}/{ROUNDS}", round + 1);
        // obsctl: `up` returns once every readiness endpoint answers.
        let t = Instant::now();
        run(cmd(obsctl).args(["up", "--runtime", "docker", "--project", &project]));
        o_up.push(t.elapsed());
        rt.block_on(wait_all(&targets, Duration::from_secs(5), |_| async {
            None
        }))
        .expect("obsctl's stack answers after up");
        let t = Instant::now();
        run(cmd(obsctl).args(["up", "--runtime", "docker", "--project", &project]));
        o_again.push(t.elapsed());
        let t = Instant::now();
        run(cmd(obsctl).args(["down", "--volumes", "--project", &project]));
        o_down.push(t.elapsed());
        assert_eq!(
            docker_names(&format!("label=io.obsctl.project={project}")),
            0
        );

        // docker-compose on the same definition, then the same readiness polling.
        let t = Instant::now();
        run(cmd("docker-compose").args(["-p", &compose_project, "-f", &compose_file, "up", "-d"]));
        rt.block_on(wait_all(&targets, Duration::from_secs(120), |_| async {
            None
        }))
        .expect("compose stack becomes ready");
        c_up.push(t.elapsed());
        let t = Instant::now();
        run(cmd("docker-compose").args(["-p", &compose_project, "-f", &compose_file, "up", "-d"]));
        rt.block_on(wait_all(&targets, Duration::from_secs(120), |_| async {
            None
        }))
        .expect("compose stack stays ready");
        c_again.push(t.elapsed());
        let t = Instant::now();
        run(cmd("docker-compose").args([
            "-p",
            &compose_project,
            "-f",
            &compose_file,
            "down",
            "-v",
        ]));
        c_down.push(t.elapsed());
        assert_eq!(
            docker_names(&format!(
                "label=com.docker.compose.project={compose_project}"
            )),
            0
        );
    }

    let mut table = comfy_table::Table::new();
    table.set_header([
        "phase (median of rounds)",
        "obsctl",
        "docker-compose",
        "obsctl / compose",
    ]);
    for (name, o, c) in [
        (
            &*format!("up → all {} ready", Component::ALL.len()),
            &mut o_up,
            &mut c_up,
        ),
        ("up again (no change) → ready", &mut o_again, &mut c_again),
        ("down --volumes → nothing left", &mut o_down, &mut c_down),
    ] {
        let (mo, mc) = (median(o), median(c));
        table.add_row([
            name.to_string(),
            format!("{:.0} ms", mo.as_secs_f64() * 1e3),
            format!("{:.0} ms", mc.as_secs_f64() * 1e3),
            format!("{:.2}", mo.as_secs_f64() / mc.as_secs_f64()),
        ]);
    }
    println!(
        "stack lifecycle, {ROUNDS} rounds, local images (Prometheus {}, stand-in {}), Docker Engine {}",
        images["prometheus"],
        images["standin"],
        run(Command::new("docker").args(["version", "--format", "{{.Server.Version}}"])).trim()
    );
    println!("{table}");
}
