//! Readiness: polls each component's HTTP endpoint until it answers 200, with one spinner per
//! component on a terminal, and stops early when the component's process or container dies.

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
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a plain HTTP client builds")
}

/// Waits until every target is ready, or one is dead (`dead(name)` returns its state), or the
/// timeout passes. Returns how long each took.
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
    let bars = crate::ui::progress_enabled().then(MultiProgress::new);
    let style =
        ProgressStyle::with_template("{spinner} {prefix:>10} {msg}").expect("static template");
    let spinners: Vec<Option<ProgressBar>> = targets
        .iter()
        .map(|t| {
            bars.as_ref().map(|m| {
                let pb = m.add(ProgressBar::new_spinner());
                pb.set_style(style.clone());
                pb.set_prefix(t.name.clone());
                pb.set_message(format!("waiting for {}", t.url));
                pb.enable_steady_tick(Duration::from_millis(120));
                pb
            })
        })
        .collect();
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
                    if let Some(pb) = &spinners[i] {
                        pb.finish_with_message(format!("ready in {took:.1?}"));
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
        for (i, t) in targets.iter().enumerate() {
            if done.contains_key(&t.name) {
                continue;
            }
            let state = dead(t.name.clone()).await;
            if state.is_some() || timed_out {
                for pb in spinners.iter().flatten() {
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
            if let Some(pb) = &spinners[i] {
                pb.set_message(format!(
                    "waiting for {} ({})",
                    t.url,
                    last.get(&t.name).map_or("", String::as_str)
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
