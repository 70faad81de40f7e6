//! Fixtures for the verify tests. A scripted HTTP server standing in for Tempo, Loki and Prometheus, which cannot run here: it
//! answers each path with bodies shaped exactly like theirs (tests/fixtures, reference §2), in
//! order, repeating the last one, and records every request so tests can assert on queries.

pub mod scenario;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
}

#[derive(Clone)]
pub struct Canned {
    pub status: u16,
    pub body: String,
    pub content_type: &'static str,
}

impl Canned {
    pub fn ok(body: impl Into<String>) -> Self {
        Self {
            status: 200,
            body: body.into(),
            content_type: "application/json",
        }
    }

    pub fn typed(content_type: &'static str, body: impl Into<String>) -> Self {
        Self {
            status: 200,
            body: body.into(),
            content_type,
        }
    }

    pub fn status(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
            content_type: "application/json",
        }
    }
}

type Script = Arc<Mutex<HashMap<String, Vec<Canned>>>>;

/// Matches a request to a script key: the path, or the path plus the `query` parameter when a
/// script was registered for that (`/api/v1/query?agent_step_success_total{...}`), plus
/// `@<time>` for an instant query at a past time.
pub struct FakeBackend {
    pub addr: SocketAddr,
    script: Script,
    requests: Arc<Mutex<Vec<Recorded>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeBackend {
    pub fn start() -> Self {
        let script: Script = Arc::default();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (s, r) = (script.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(move |req: Request| {
                    let (s, r) = (s.clone(), r.clone());
                    async move { answer(req, &s, &r) }
                });
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        Self {
            addr,
            script,
            requests,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers for `key` (a path, or `path?query-parameter`), in order; the last one repeats.
    pub fn script(&self, key: &str, answers: Vec<Canned>) {
        self.script.lock().unwrap().insert(key.to_string(), answers);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn count(&self, path: &str) -> usize {
        self.requests().iter().filter(|r| r.path == path).count()
    }
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(req: Request, script: &Script, requests: &Mutex<Vec<Recorded>>) -> Response {
    let path = req.uri().path().to_string();
    let query: HashMap<String, String> = axum::extract::Query::try_from_uri(req.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    requests.lock().unwrap().push(Recorded {
        path: path.clone(),
        query: query.clone(),
        headers: req.headers().clone(),
    });
    let mut script = script.lock().unwrap();
    let specific = query.get("query").map(|q| format!("{path}?{q}"));
    // An instant query at a past time (`time=`) is keyed `path?query@time`; unscripted, it
    // answers an empty vector: the series did not exist yet, so all of today's value is new.
    if let (Some(q), Some(time)) = (&specific, query.get("time")) {
        let at = format!("{q}@{time}");
        if !script.contains_key(&at) {
            return Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(Body::from(
                    r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
                ))
                .unwrap();
        }
        return respond(script.get_mut(&at).expect("checked above"));
    }
    let key = specific
        .filter(|k| script.contains_key(k))
        .unwrap_or(path.clone());
    match script.get_mut(&key) {
        Some(answers) => respond(answers),
        None => respond(&mut vec![Canned::status(
            404,
            format!("no script for {key}"),
        )]),
    }
}

/// The next of `answers`; the last one repeats.
fn respond(answers: &mut Vec<Canned>) -> Response {
    let canned = match answers.len() {
        0 => Canned::status(404, "empty script"),
        1 => answers[0].clone(),
        _ => answers.remove(0),
    };
    Response::builder()
        .status(StatusCode::from_u16(canned.status).unwrap())
        .header("content-type", canned.content_type)
        .body(Body::from(canned.body))
        .unwrap()
}

pub fn fixture(path: &str) -> String {
    let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}
