//! The embedded backend behind `obsctl serve`: receives OTLP (gRPC and HTTP), stores it in
//! SQLite, and answers Tempo-, Loki- and Prometheus-shaped queries on one HTTP address.
//! `Server::start` runs it in-process (for `obsctl demo` and tests); `docs/embedded-backend.md`.

pub mod api;
pub mod identity;
pub mod ingest;
pub mod logql;
pub mod metrics;
mod otlp_grpc;
mod otlp_http;
mod pipeline;
pub mod promql;
pub mod relay;
pub mod store;
pub mod tempo;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use store::{Retention, Store};

pub const DEFAULT_OTLP_GRPC: &str = "127.0.0.1:4317";
pub const DEFAULT_OTLP_HTTP: &str = "127.0.0.1:4318";
pub const DEFAULT_API: &str = "127.0.0.1:3200";
/// Records older than this are deleted.
pub const DEFAULT_RETENTION_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The oldest records are deleted while the database is larger than this.
pub const DEFAULT_RETENTION_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Default longest time one request may take, body upload included; then HTTP 408 / gRPC
/// Cancelled.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often retention runs.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Config {
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub api: SocketAddr,
    pub data_dir: PathBuf,
    /// Allow binding to non-loopback addresses.
    pub allow_remote: bool,
    pub retention: Retention,
    /// Longest time one request may take, body upload included.
    pub request_timeout: Duration,
}

impl Config {
    /// The documented defaults with the given data directory.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            otlp_grpc: DEFAULT_OTLP_GRPC.parse().expect("valid default"),
            otlp_http: DEFAULT_OTLP_HTTP.parse().expect("valid default"),
            api: DEFAULT_API.parse().expect("valid default"),
            data_dir,
            allow_remote: false,
            retention: Retention {
                max_age: DEFAULT_RETENTION_AGE,
                max_bytes: DEFAULT_RETENTION_BYTES,
            },
            request_timeout: REQUEST_TIMEOUT,
        }
    }

    /// Loopback everywhere, port 0 (the OS picks): for tests and the demo.
    pub fn ephemeral(data_dir: PathBuf) -> Self {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("valid");
        Self {
            otlp_grpc: any,
            otlp_http: any,
            api: any,
            ..Self::new(data_dir)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to bind {name} to {addr}: not a loopback address (pass --allow-remote to expose the backend)"
    )]
    NotLoopback {
        name: &'static str,
        addr: SocketAddr,
    },
    #[error("cannot bind {name} to {addr}: {source}")]
    Bind {
        name: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("{name} server failed: {message}")]
    Server { name: &'static str, message: String },
}

/// A running backend. Dropping it without [`Server::shutdown`] asks the listeners to stop but
/// does not wait for them.
pub struct Server {
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub api: SocketAddr,
    store: Arc<Store>,
    stop: watch::Sender<bool>,
    tasks: Vec<Task>,
}

async fn bind(
    name: &'static str,
    addr: SocketAddr,
    allow_remote: bool,
) -> Result<TcpListener, ServeError> {
    if !allow_remote && !addr.ip().is_loopback() {
        return Err(ServeError::NotLoopback { name, addr });
    }
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { name, addr, source })
}

/// A listener's task, named for the error that ends it.
type Task = (&'static str, JoinHandle<Result<(), String>>);

/// OTLP over gRPC and over HTTP into `sink`, until `stop` says so: the backend's receivers,
/// and the relay's.
fn serve_otlp(
    sink: pipeline::Sink,
    (grpc, http): (TcpListener, TcpListener),
    timeout: Duration,
    stop: &watch::Receiver<bool>,
) -> [Task; 2] {
    let router = otlp_grpc::router(sink.clone(), timeout);
    let rx = stop.clone();
    let grpc_task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(
                // Without TCP_NODELAY each second response on a connection waits ~40 ms for
                // the client's delayed ACK (Nagle), which a one-span shim feels.
                tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
                stopped(rx),
            )
            .await
            .map_err(|e| e.to_string())
    });
    let app = otlp_http::router(sink, timeout);
    let rx = stop.clone();
    let http_task = tokio::spawn(async move {
        axum::serve(http, app)
            .with_graceful_shutdown(stopped(rx))
            .await
            .map_err(|e| e.to_string())
    });
    [("otlp-grpc", grpc_task), ("otlp-http", http_task)]
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

impl Server {
    /// Opens the store, binds all three addresses and starts serving. Needs a tokio runtime.
    pub async fn start(config: Config) -> Result<Self, ServeError> {
        let grpc = bind("otlp-grpc", config.otlp_grpc, config.allow_remote).await?;
        let http = bind("otlp-http", config.otlp_http, config.allow_remote).await?;
        let api = bind("api", config.api, config.allow_remote).await?;
        let data_dir = config.data_dir.clone();
        let store = Arc::new(
            tokio::task::spawn_blocking(move || Store::open(&data_dir))
                .await
                .map_err(|e| ServeError::Server {
                    name: "store",
                    message: e.to_string(),
                })??,
        );
        let local = |l: &TcpListener| l.local_addr().expect("bound socket has an address");
        let (otlp_grpc, otlp_http, api_addr) = (local(&grpc), local(&http), local(&api));
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();

        tasks.extend(serve_otlp(
            pipeline::Sink::Store(store.clone()),
            (grpc, http),
            config.request_timeout,
            &stop_rx,
        ));
        let app = api::router(store.clone(), config.request_timeout);
        let rx = stop_rx.clone();
        tasks.push((
            "api",
            tokio::spawn(async move {
                axum::serve(api, app)
                    .with_graceful_shutdown(stopped(rx))
                    .await
                    .map_err(|e| e.to_string())
            }),
        ));
        let pruner = store.clone();
        let retention = config.retention;
        let mut rx = stop_rx;
        tasks.push((
            "retention",
            tokio::spawn(async move {
                loop {
                    let store = pruner.clone();
                    let pass = tokio::task::spawn_blocking(move || store.prune(retention)).await;
                    match pass {
                        Ok(Err(e)) => eprintln!("obsctl serve: retention pass failed: {e}"),
                        Ok(Ok(p)) => crate::ui::debug(
                            1,
                            format!(
                                "serve: retention pass removed {} span(s), {} log record(s), \
                                 {} stream(s), {} series",
                                p.spans, p.logs, p.streams, p.series
                            ),
                        ),
                        Err(_) => {}
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(PRUNE_INTERVAL) => {}
                        _ = rx.wait_for(|s| *s) => return Ok(()),
                    }
                }
            }),
        ));
        Ok(Self {
            otlp_grpc,
            otlp_http,
            api: api_addr,
            store,
            stop,
            tasks,
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Stops accepting, lets in-flight requests finish, then checkpoints the database.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        let _ = self.stop.send(true);
        let mut first_error = None;
        for (name, task) in std::mem::take(&mut self.tasks) {
            let result = match task.await {
                Ok(r) => r,
                Err(e) => Err(e.to_string()),
            };
            if let Err(message) = result {
                first_error.get_or_insert(ServeError::Server { name, message });
            }
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.checkpoint())
            .await
            .map_err(|e| ServeError::Server {
                name: "store",
                message: e.to_string(),
            })??;
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Bounds every HTTP request in time (a slow body upload included), answering 408.
pub(crate) async fn time_limit(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            axum::http::StatusCode::REQUEST_TIMEOUT,
            format!("request not completed within {limit:?}"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn starts_in_process_on_free_ports_and_shuts_down() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(Config::ephemeral(dir.path().join("data")))
            .await
            .unwrap();
        for addr in [server.otlp_grpc, server.otlp_http, server.api] {
            assert!(addr.ip().is_loopback());
            assert_ne!(addr.port(), 0);
        }
        crate::tls::install_default_provider();
        let ready = reqwest::get(format!("http://{}/ready", server.api))
            .await
            .unwrap();
        assert_eq!(ready.status(), 200);
        let api = server.api;
        server.shutdown().await.unwrap();
        assert!(reqwest::get(format!("http://{api}/ready")).await.is_err());
        assert!(dir.path().join("data").join(store::DB_FILE).exists());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_body_that_never_arrives_times_out_with_408() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            request_timeout: Duration::from_millis(300),
            ..Config::ephemeral(dir.path().to_path_buf())
        };
        let server = Server::start(config).await.unwrap();
        let mut conn = tokio::net::TcpStream::connect(server.otlp_http)
            .await
            .unwrap();
        conn.write_all(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 100\r\n\r\n",
        )
        .await
        .unwrap();
        let mut answer = vec![0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(20), conn.read(&mut answer))
            .await
            .expect("the server answers instead of waiting forever")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        server.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn refuses_non_loopback_without_allow_remote() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            api: "0.0.0.0:0".parse().unwrap(),
            ..Config::ephemeral(dir.path().to_path_buf())
        };
        let err = Server::start(config).await.err().expect("refused");
        assert!(
            matches!(err, ServeError::NotLoopback { name: "api", .. }),
            "{err}"
        );
    }
}
