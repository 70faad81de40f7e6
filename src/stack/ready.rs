//! Readiness: polls each component's HTTP endpoint until it answers 200, with progress once a
//! wait lasts a second, and stops early when the component's process or container dies.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// One endpoint to wait for.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub url: String,
}

/// Why a component did not become ready.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{name} is not ready after {waited:.1?}: {state}; last probe of {url}: {last}")]
pub struct NotReady {
    pub name: String,
    pub url: String,
    /// The container or process state when we gave up (for example `exited (code 137)`).
    pub state: String,
    pub last: String,
    pub waited: Duration,
}

/// A single probe: `Ok` when `url` answers 200 within two seconds.
pub async fn probe(client: &reqwest::Client, url: &str) -> Result<(), String> {
    match client.get(url).timeout(Duration::from_secs(2)).send().await {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => Err(format!("HTTP {}", resp.status().as_u16())),
        Err(e) if e.is_timeout() => Err("timed out".into()),
        Err(e) if e.is_connect() => Err("connection refused".into()),
        Err(e) => Err(e.to_string()),
    }
}

pub fn client() -> reqwest::Client {
    crate::tls::install_default_provider();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a plain HTTP client builds")
}

/// How long a wait goes unreported: most components are ready sooner, and a spinner that
/// flashes for 200 ms says nothing.
const QUIET_FOR: Duration = Duration::from_secs(1);

/// How often a wait is reported when stderr is not a terminal (CI logs, pipes).
const LINE_EVERY: Duration = Duration::from_secs(5);

/// Waits until every target is ready, or one is dead (`dead(name)` returns its state), or the
/// timeout passes. Returns how long each took. A wait longer than a second shows progress: one
/// spinner per component on a terminal, else a line on stderr every five seconds naming what is
/// still awaited.
pub async fn wait_all<F, Fut>(
    targets: &[Target],
    timeout: Duration,
    mut dead: F,
) -> Result<BTreeMap<String, Duration>, NotReady>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Option<String>>,
{
    let client = client();
    let start = Instant::now();
    let terminal = crate::ui::progress_enabled();
    let mut spinners: Option<(MultiProgress, Vec<ProgressBar>)> = None;
    let mut next_line = QUIET_FOR;
    let mut done: BTreeMap<String, Duration> = BTreeMap::new();
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    loop {
        for (i, t) in targets.iter().enumerate() {
            if done.contains_key(&t.name) {
                continue;
            }
            match probe(&client, &t.url).await {
                Ok(()) => {
                    let took = start.elapsed();
                    done.insert(t.name.clone(), took);
                    crate::ui::debug(1, format!("{} ready in {took:.1?}", t.name));
                    if let Some((_, bars)) = &spinners {
                        bars[i].finish_with_message(format!("ready in {took:.1?}"));
                    }
                }
                Err(why) => {
                    last.insert(t.name.clone(), why);
                }
            }
        }
        if done.len() == targets.len() {
            return Ok(done);
        }
        let timed_out = start.elapsed() >= timeout;
        for t in targets {
            if done.contains_key(&t.name) {
                continue;
            }
            let state = dead(t.name.clone()).await;
            if state.is_some() || timed_out {
                for pb in spinners.iter().flat_map(|(_, bars)| bars) {
                    if !pb.is_finished() {
                        pb.abandon();
                    }
                }
                return Err(NotReady {
                    name: t.name.clone(),
                    url: t.url.clone(),
                    state: state.unwrap_or_else(|| "running, not ready".into()),
                    last: last.get(&t.name).cloned().unwrap_or_default(),
                    waited: start.elapsed(),
                });
            }
        }
        let waited = start.elapsed();
        let pending = targets
            .iter()
            .enumerate()
            .filter(|(_, t)| !done.contains_key(&t.name));
        let why = |t: &Target| last.get(&t.name).map_or("", String::as_str).to_string();
        if terminal && waited >= QUIET_FOR {
            let (_, bars) = spinners.get_or_insert_with(|| show_spinners(targets, &done));
            for (i, t) in pending {
                bars[i].set_message(format!("waiting for {} ({})", t.url, why(t)));
            }
        } else if !terminal && waited >= next_line {
            let list: Vec<String> = pending
                .map(|(_, t)| format!("{} ({})", t.name, why(t)))
                .collect();
            crate::ui::note(format!(
                "waiting {waited:.0?} of {timeout:?} for {}",
                list.join(", ")
            ));
            next_line = waited + LINE_EVERY;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One spinner per target, those already ready shown finished.
fn show_spinners(
    targets: &[Target],
    done: &BTreeMap<String, Duration>,
) -> (MultiProgress, Vec<ProgressBar>) {
    let multi = MultiProgress::new();
    let style =
        ProgressStyle::with_template("{spinner} {prefix:>10} {msg}").expect("static template");
    let bars = targets
        .iter()
        .map(|t| {
            let pb = multi.add(ProgressBar::new_spinner());
            pb.set_style(style.clone());
            pb.set_prefix(t.name.clone());
            match done.get(&t.name) {
                Some(took) => pb.finish_with_message(format!("ready in {took:.1?}")),
                None => {
                    pb.set_message(format!("waiting for {}", t.url));
                    pb.enable_steady_tick(Duration::from_millis(120));
                }
            }
            pb
        })
        .collect();
    (multi, bars)
}
