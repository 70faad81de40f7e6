//! A client of the Argo Server's REST API (`../shared/argo/swagger.json`): submit, get, stop,
//! and watch one workflow through the `workflow-events` stream (newline-delimited JSON, one
//! `{"result": {"type", "object"}}` per change), falling back to polling when the stream fails.
//!
//! Configured as the `argo` CLI is: `ARGO_SERVER` (host:port), `ARGO_SECURE` (https unless
//! `false`), `ARGO_BASE_HREF`, `ARGO_TOKEN` (the whole `Authorization` value), `ARGO_NAMESPACE`,
//! `ARGO_INSECURE_SKIP_VERIFY`, `ARGO_HTTP1`. The token lives in [`Token`], which never prints.
//! Everything read from the network is bounded: body sizes, event line length, timeouts.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

/// The largest response body or event line read: a workflow with thousands of nodes fits.
pub const MAX_BODY: usize = 32 * 1024 * 1024;
/// Connecting, and any request but the events stream.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Silence on the events stream after which it is dropped and the workflow polled.
pub const STREAM_IDLE: Duration = Duration::from_secs(60);
/// How long a watch keeps retrying a server that does not answer (restarting, network blip)
/// before it gives up; the workflow goes on on the cluster either way.
pub const SERVER_GONE_LIMIT: Duration = Duration::from_secs(120);

/// The `Authorization` header value. Its `Debug` hides it, and it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// `Bearer …` or `Basic …` as given; a bare token gets `Bearer `.
    pub fn new(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        Some(Self(
            if text.starts_with("Bearer ") || text.starts_with("Basic ") {
                text.to_string()
            } else {
                format!("Bearer {text}")
            },
        ))
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(hidden)")
    }
}

/// Where the Argo Server is and how to talk to it.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `https://host:2746` plus `ARGO_BASE_HREF`, without a trailing slash.
    pub base: String,
    pub token: Option<Token>,
    pub namespace: String,
    pub insecure_skip_verify: bool,
    pub http1: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no Argo Server: give --argo-server URL or set ARGO_SERVER")]
    NoServer,
    #[error("cannot read the token file {path}: {source}")]
    TokenFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{var}={value:?}: expected true or false")]
    Flag { var: &'static str, value: String },
    #[error("cannot build the HTTPS client: {0}")]
    Build(reqwest::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// `reason` names a TLS failure (expired, wrong host, unknown CA) when it is one.
    #[error("{what}: {reason}")]
    Transport {
        what: String,
        reason: String,
        tls: bool,
    },
    #[error("{what}: the Argo Server refused the token (401 Unauthorized){hint}: {message}")]
    Unauthorized {
        what: String,
        hint: &'static str,
        message: String,
    },
    #[error("{what}: the token may not do this (403 Forbidden): {message}")]
    Forbidden { what: String, message: String },
    #[error("{what}: not found (404): {message}")]
    NotFound { what: String, message: String },
    #[error("{what}: the Argo Server rejected it ({status}): {message}")]
    Rejected {
        what: String,
        status: u16,
        message: String,
    },
    #[error("{what}: the answer is larger than {MAX_BODY} bytes")]
    TooLarge { what: String },
    #[error("{what}: not the JSON the Argo API defines: {source}")]
    Decode {
        what: String,
        source: serde_json::Error,
    },
}

impl ClientError {
    /// A request that got no HTTP answer, its cause named (a TLS failure as such).
    fn transport(what: &str, err: &reqwest::Error) -> Self {
        Self::Transport {
            what: what.to_string(),
            reason: crate::tls::describe(err),
            tls: crate::tls::Failure::find(err).is_some(),
        }
    }

    /// The server may answer the same request later: it could not be reached, or it failed
    /// (5xx), as while an Argo Server restarts behind its load balancer.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { tls, .. } => !tls,
            Self::Rejected { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// The server judged the request itself wrong (invalid workflow, unknown namespace, a name
    /// taken): the user's input, not the server or the credentials, must change.
    pub fn is_invalid_input(&self) -> bool {
        match self {
            Self::NotFound { .. } => true,
            Self::Rejected { status, .. } => matches!(status, 400 | 409 | 422),
            _ => false,
        }
    }
}

impl ServerConfig {
    /// From the flags, else the `argo` CLI's variables. `server` may be a URL or `host:port`.
    pub fn resolve(
        server: Option<&str>,
        namespace: Option<&str>,
        token_file: Option<&Path>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ClientError> {
        let var = |k: &str| var(k).filter(|v| !v.is_empty());
        let flag = |k: &'static str| -> Result<Option<bool>, ClientError> {
            match var(k).as_deref() {
                None => Ok(None),
                Some("true" | "1") => Ok(Some(true)),
                Some("false" | "0") => Ok(Some(false)),
                Some(other) => Err(ClientError::Flag {
                    var: k,
                    value: other.to_string(),
                }),
            }
        };
        let server = server
            .map(String::from)
            .or_else(|| var("ARGO_SERVER"))
            .ok_or(ClientError::NoServer)?;
        let mut base = if server.contains("://") {
            server
        } else {
            let scheme = if flag("ARGO_SECURE")? == Some(false) {
                "http"
            } else {
                "https"
            };
            format!("{scheme}://{server}")
        };
        if let Some(href) = var("ARGO_BASE_HREF") {
            base = format!("{}/{}", base.trim_end_matches('/'), href.trim_matches('/'));
        }
        let token = match token_file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ClientError::TokenFile {
                        path: path.to_path_buf(),
                        source,
                    })?;
                Token::new(&text)
            }
            None => var("ARGO_TOKEN").and_then(|t| Token::new(&t)),
        };
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            namespace: namespace
                .map(String::from)
                .or_else(|| var("ARGO_NAMESPACE"))
                .unwrap_or_else(|| "argo".into()),
            insecure_skip_verify: flag("ARGO_INSECURE_SKIP_VERIFY")?.unwrap_or(false),
            http1: flag("ARGO_HTTP1")?.unwrap_or(false),
        })
    }
}

/// A Workflow as the Argo Server returns it: what obsctl reads of it, leniently (a workflow
/// just created has no phase yet; node types include some the local executor never makes).
#[derive(Debug, Clone, Deserialize)]
pub struct Workflow {
    pub metadata: Metadata,
    /// As submitted (instrumented), for judging a workflow that obsctl did not follow.
    #[serde(default)]
    pub spec: Value,
    #[serde(default)]
    pub status: Status,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub resource_version: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    #[serde(default)]
    pub phase: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub message: Option<String>,
    #[serde(default)]
    pub nodes: std::collections::BTreeMap<String, Value>,
    pub outputs: Option<Value>,
}

impl Workflow {
    /// Finished: `Succeeded`, `Failed` or `Error`.
    pub fn is_finished(&self) -> bool {
        matches!(self.status.phase.as_str(), "Succeeded" | "Failed" | "Error")
    }
}

/// One line of the events stream.
#[derive(Debug, Deserialize)]
struct StreamLine {
    result: Option<WatchEvent>,
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct WatchEvent {
    #[serde(rename = "type", default)]
    kind: String,
    object: Option<Workflow>,
}

/// How a watch ended.
#[derive(Debug)]
pub enum WatchEnd {
    /// The workflow finished; its last state.
    Finished(Box<Workflow>),
    /// The caller asked to stop watching.
    Detached,
}

pub struct ArgoClient {
    http: reqwest::Client,
    stream: reqwest::Client,
    config: ServerConfig,
}

impl ArgoClient {
    pub fn new(config: ServerConfig) -> Result<Self, ClientError> {
        if config.insecure_skip_verify {
            eprintln!(
                "obsctl: warning: ARGO_INSECURE_SKIP_VERIFY: the Argo Server's certificate is not checked"
            );
        }
        Ok(Self {
            http: http_client(&config, Some(REQUEST_TIMEOUT))?,
            stream: http_client(&config, None)?,
            config,
        })
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.base)
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.config.token {
            Some(Token(value)) => req.header(reqwest::header::AUTHORIZATION, value),
            None => req,
        }
    }

    /// `POST /api/v1/workflows/{namespace}`: the created workflow (its generated name).
    pub async fn submit(&self, workflow: &Value) -> Result<Workflow, ClientError> {
        let ns = &self.config.namespace;
        let what = format!("submitting to {} namespace {ns}", self.config.base);
        let body = serde_json::json!({ "namespace": ns, "workflow": workflow });
        let req = self
            .http
            .post(self.url(&format!("/api/v1/workflows/{ns}")))
            .json(&body);
        self.call(req, &what).await
    }

    /// `GET /api/v1/workflows/{namespace}/{name}`.
    pub async fn get(&self, name: &str) -> Result<Workflow, ClientError> {
        let ns = &self.config.namespace;
        let req = self
            .http
            .get(self.url(&format!("/api/v1/workflows/{ns}/{name}")));
        self.call(req, &format!("reading workflow {ns}/{name}"))
            .await
    }

    /// `PUT /api/v1/workflows/{namespace}/{name}/stop`: exit handlers still run, as `argo stop`.
    pub async fn stop(&self, name: &str, message: &str) -> Result<Workflow, ClientError> {
        let ns = &self.config.namespace;
        let body = serde_json::json!({ "name": name, "namespace": ns, "message": message });
        let req = self
            .http
            .put(self.url(&format!("/api/v1/workflows/{ns}/{name}/stop")))
            .json(&body);
        self.call(req, &format!("stopping workflow {ns}/{name}"))
            .await
    }

    async fn call(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<Workflow, ClientError> {
        let resp = self.send(req, what).await?;
        let body = read_bounded(resp, what).await?;
        serde_json::from_slice(&body).map_err(|source| ClientError::Decode {
            what: what.to_string(),
            source,
        })
    }

    /// Sends; a non-2xx status becomes the error it means, with Argo's own message.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = self
            .authorized(req)
            .send()
            .await
            .map_err(|e| ClientError::transport(what, &e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = read_bounded(resp, what).await.unwrap_or_default();
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(500).collect());
        let what = what.to_string();
        Err(match status.as_u16() {
            401 => ClientError::Unauthorized {
                what,
                hint: if self.config.token.is_none() {
                    " (no token: set ARGO_TOKEN or --token-file)"
                } else {
                    ""
                },
                message,
            },
            403 => ClientError::Forbidden { what, message },
            404 => ClientError::NotFound { what, message },
            code => ClientError::Rejected {
                what,
                status: code,
                message,
            },
        })
    }

    /// Follows the workflow until it finishes: `on_update` sees every state (the stream's, else a
    /// poll's). A broken or silent stream is reopened after a poll, so nothing is missed and
    /// nothing is applied twice that differs from the server's state. `stop_watching` resolving
    /// ends the watch early.
    pub async fn watch(
        &self,
        name: &str,
        mut on_update: impl FnMut(&Workflow),
        stop_watching: impl std::future::Future<Output = ()>,
    ) -> Result<WatchEnd, ClientError> {
        let mut stop_watching = std::pin::pin!(stop_watching);
        let mut stream_failures = 0u32;
        let mut gone_since: Option<Instant> = None;
        loop {
            // A poll first: the state before the stream opens (or between two streams).
            let current = match self.get(name).await {
                Ok(current) => current,
                Err(e) if e.is_transient() => {
                    let since = *gone_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > SERVER_GONE_LIMIT {
                        return Err(e);
                    }
                    crate::ui::debug(1, format!("{e}; retrying"));
                    stream_failures += 1;
                    let pause = Duration::from_millis(200 * u64::from(stream_failures.min(10)));
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        () = &mut stop_watching => return Ok(WatchEnd::Detached),
                    }
                }
                Err(e) => return Err(e),
            };
            gone_since = None;
            on_update(&current);
            if current.is_finished() {
                return Ok(WatchEnd::Finished(Box::new(current)));
            }
            let followed = tokio::select! {
                r = self.follow_stream(name, &mut on_update) => r,
                () = &mut stop_watching => return Ok(WatchEnd::Detached),
            };
            match followed {
                Ok(Some(done)) => return Ok(WatchEnd::Finished(Box::new(done))),
                Ok(None) => stream_failures = 0,
                Err(e @ (ClientError::Unauthorized { .. } | ClientError::Forbidden { .. })) => {
                    return Err(e);
                }
                Err(e) => {
                    stream_failures += 1;
                    crate::ui::debug(1, format!("workflow events stream: {e}; polling"));
                }
            }
            // Back off after repeated failures: polling stays the fallback meanwhile.
            let pause = Duration::from_millis(200 * u64::from(stream_failures.min(10)));
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = &mut stop_watching => return Ok(WatchEnd::Detached),
            }
        }
    }

    /// Reads the events stream until the workflow finishes (`Some`) or the stream ends (`None`).
    async fn follow_stream(
        &self,
        name: &str,
        on_update: &mut impl FnMut(&Workflow),
    ) -> Result<Option<Workflow>, ClientError> {
        let ns = &self.config.namespace;
        let what = format!("watching workflow {ns}/{name}");
        let req = self
            .stream
            .get(self.url(&format!("/api/v1/workflow-events/{ns}")))
            .query(&[("listOptions.fieldSelector", format!("metadata.name={name}"))]);
        let mut resp = self.send(req, &what).await?;
        let mut lines = LineBuffer::default();
        loop {
            let chunk = resp
                .chunk()
                .await
                .map_err(|e| ClientError::transport(&what, &e))?;
            let Some(chunk) = chunk else {
                return Ok(None);
            };
            for line in lines
                .push(&chunk)
                .map_err(|()| ClientError::TooLarge { what: what.clone() })?
            {
                let Some(workflow) = event_of(&line, name, &what)? else {
                    continue;
                };
                on_update(&workflow);
                if workflow.is_finished() {
                    return Ok(Some(workflow));
                }
            }
        }
    }
}

/// One line of the events stream: the workflow it carries when it is a change of `name` (not
/// its deletion), `None` for anything else, or the error the server sent in the stream.
pub fn event_of(line: &[u8], name: &str, what: &str) -> Result<Option<Workflow>, ClientError> {
    let parsed: StreamLine =
        serde_json::from_slice(line).map_err(|source| ClientError::Decode {
            what: what.to_string(),
            source,
        })?;
    if let Some(err) = parsed.error {
        let message = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("stream error")
            .to_string();
        return Err(ClientError::Rejected {
            what: what.to_string(),
            status: 200,
            message,
        });
    }
    Ok(parsed
        .result
        .filter(|event| event.kind != "DELETED")
        .and_then(|event| event.object)
        .filter(|workflow| workflow.metadata.name == name))
}

/// The one place the HTTP client is built: rustls through `crate::tls` (system roots, verified
/// unless `ARGO_INSECURE_SKIP_VERIFY`), bounded connect, and either a whole-request timeout or
/// (for the events stream) an idle one. Every request is HTTP/1.1, which `ARGO_HTTP1` asks for;
/// HTTP/2 is not built in.
fn http_client(
    config: &ServerConfig,
    timeout: Option<Duration>,
) -> Result<reqwest::Client, ClientError> {
    let tls = crate::tls::TlsOptions {
        insecure_skip_verify: config.insecure_skip_verify,
        ..Default::default()
    };
    let b = tls.reqwest_builder()?.connect_timeout(REQUEST_TIMEOUT);
    let b = match timeout {
        Some(t) => b.timeout(t),
        None => b.read_timeout(STREAM_IDLE),
    };
    b.http1_only().build().map_err(ClientError::Build)
}

/// Splits a byte stream into lines, refusing a line longer than [`MAX_BODY`].
#[derive(Default)]
struct LineBuffer {
    pending: Vec<u8>,
}

impl LineBuffer {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<Vec<u8>>, ()> {
        self.pending.extend_from_slice(chunk);
        let mut lines = Vec::new();
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = line.trim_ascii();
            if !line.is_empty() {
                lines.push(line.to_vec());
            }
        }
        if self.pending.len() > MAX_BODY {
            return Err(());
        }
        Ok(lines)
    }
}

async fn read_bounded(mut resp: reqwest::Response, what: &str) -> Result<Vec<u8>, ClientError> {
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ClientError::TooLarge {
            what: what.to_string(),
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| ClientError::transport(what, &e))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(ClientError::TooLarge {
                what: what.to_string(),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn reads_the_argo_cli_variables() {
        let c = ServerConfig::resolve(
            None,
            None,
            None,
            vars(&[
                ("ARGO_SERVER", "argo.example:2746"),
                ("ARGO_TOKEN", "Bearer v2:abc"),
                ("ARGO_NAMESPACE", "ci"),
                ("ARGO_INSECURE_SKIP_VERIFY", "true"),
                ("ARGO_BASE_HREF", "/argo/"),
            ]),
        )
        .unwrap();
        assert_eq!(c.base, "https://argo.example:2746/argo");
        assert_eq!(c.namespace, "ci");
        assert!(c.insecure_skip_verify);
        assert_eq!(c.token, Token::new("v2:abc"));
        assert!(!format!("{c:?}").contains("abc"), "the token never prints");
        let plain = ServerConfig::resolve(
            None,
            Some("x"),
            None,
            vars(&[("ARGO_SERVER", "h:1"), ("ARGO_SECURE", "false")]),
        )
        .unwrap();
        assert_eq!(plain.base, "http://h:1");
        assert_eq!(plain.namespace, "x");
        assert!(matches!(
            ServerConfig::resolve(None, None, None, vars(&[])),
            Err(ClientError::NoServer)
        ));
        let bad = ServerConfig::resolve(Some("h:1"), None, None, vars(&[("ARGO_HTTP1", "yes")]))
            .unwrap_err();
        assert_eq!(
            bad.to_string(),
            "ARGO_HTTP1=\"yes\": expected true or false"
        );
    }

    #[test]
    fn lines_split_across_chunks_and_a_huge_line_is_refused() {
        let mut b = LineBuffer::default();
        assert!(b.push(b"{\"a\":").unwrap().is_empty());
        assert_eq!(
            b.push(b"1}\n\n{\"b\"").unwrap(),
            vec![b"{\"a\":1}".to_vec()]
        );
        assert!(b.push(&vec![b'x'; MAX_BODY + 1]).is_err());
    }
}
