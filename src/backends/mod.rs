//! Clients for the query APIs obsctl reads back: Tempo (traces), Prometheus (metrics) and Loki
//! (logs). The same clients talk to the real backends and to `obsctl serve`, which speaks the same
//! subset. Every request is bounded in time and every response in size; `access` holds what a
//! shared or hosted backend asks of a client (TLS, token, tenant, headers), `file` the file
//! that holds it.

pub mod access;
pub mod file;
pub mod loki;
pub mod prometheus;
pub mod tempo;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::stack::endpoints::Endpoints;
use crate::tls::{Failure, TlsError, TlsOptions};

pub use access::{Access, Backend, BackendAccess};
pub use loki::LokiClient;
pub use prometheus::PrometheusClient;
pub use tempo::TempoClient;

/// How long one request may take, connection included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest response body accepted from any backend; a larger one is an error, not a truncation.
pub const DEFAULT_MAX_BODY: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{backend} at {url}: {failure}")]
    Tls {
        backend: &'static str,
        url: String,
        failure: Failure,
    },
    #[error("{backend} at {url} refused the request: HTTP {status} ({reason}): {body}")]
    Refused {
        backend: &'static str,
        url: String,
        status: u16,
        reason: &'static str,
        body: String,
    },
    #[error("{backend} at {url} is unreachable: {source}")]
    Unreachable {
        backend: &'static str,
        url: String,
        source: reqwest::Error,
    },
    #[error("{backend} answered HTTP {status} for {url}: {body}")]
    Status {
        backend: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    #[error("{backend} response from {url} is larger than the {limit}-byte limit")]
    TooLarge {
        backend: &'static str,
        url: String,
        limit: usize,
    },
    #[error("{backend} response from {url} is not the expected shape: {reason}")]
    Shape {
        backend: &'static str,
        url: String,
        reason: String,
    },
    #[error("{backend} rejected the query {}: {message}", crate::ui::quoted(query))]
    Query {
        backend: &'static str,
        query: String,
        message: String,
    },
    #[error(
        "invalid {backend} URL {}: expected http://host:port or https://host:port",
        crate::ui::quoted(url)
    )]
    BadUrl { backend: &'static str, url: String },
}

/// The HTTP client every backend client shares: timeouts, the response size cap, TLS; and
/// what one backend's requests carry ([`Http::with_access`]).
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
    max_body: usize,
    access: Access,
}

impl Default for Http {
    fn default() -> Self {
        Self::new(DEFAULT_REQUEST_TIMEOUT, DEFAULT_MAX_BODY)
    }
}

/// A response whose body has been read within the size cap.
struct Fetched {
    url: String,
    status: u16,
    body: Vec<u8>,
}

impl Http {
    /// A client that verifies servers against the system's CA roots.
    pub fn new(timeout: Duration, max_body: usize) -> Self {
        Self::with_tls(timeout, max_body, &TlsOptions::default())
            .expect("options without files to read always build")
    }

    pub fn with_tls(
        timeout: Duration,
        max_body: usize,
        tls: &TlsOptions,
    ) -> Result<Self, TlsError> {
        let client = tls
            .reqwest_builder()?
            .timeout(timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .build()
            .expect("a client with a rustls configuration always builds");
        Ok(Self {
            client,
            max_body,
            access: Access::default(),
        })
    }

    /// The same client, its requests carrying `access`'s credential, tenant and headers.
    pub fn with_access(&self, access: Access) -> Self {
        Self {
            access,
            ..self.clone()
        }
    }

    async fn get(
        &self,
        backend: &'static str,
        url: &str,
        query: &[(&str, String)],
        headers: &[(&str, &str)],
    ) -> Result<Fetched, BackendError> {
        let shown = redact(url);
        let mut request = self.access.apply(self.client.get(url).query(query));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        // reqwest's message repeats the URL, credentials included: drop it, ours is redacted.
        let unreachable = |source: reqwest::Error| match Failure::find(&source) {
            Some(failure) => BackendError::Tls {
                backend,
                url: shown.clone(),
                failure,
            },
            None => BackendError::Unreachable {
                backend,
                url: shown.clone(),
                source: source.without_url(),
            },
        };
        let mut response = request.send().await.map_err(unreachable)?;
        let too_large = || BackendError::TooLarge {
            backend,
            url: shown.clone(),
            limit: self.max_body,
        };
        if response
            .content_length()
            .is_some_and(|len| len > self.max_body as u64)
        {
            return Err(too_large());
        }
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > self.max_body {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            url: shown,
            status,
            body,
        })
    }
}

impl Http {
    /// The repeats an obsctl backend absorbed (`GET /api/status`, docs/embedded-backend.md);
    /// `None` from a backend without that endpoint (a real Tempo, Loki or Prometheus).
    pub async fn absorbed(
        &self,
        backend: &'static str,
        base: &str,
    ) -> Result<Option<crate::embedded::identity::Absorbed>, BackendError> {
        #[derive(serde::Deserialize)]
        struct Status {
            duplicates_absorbed: crate::embedded::identity::Absorbed,
        }
        let url = format!("{}/api/status", base.trim_end_matches('/'));
        let fetched = self.get(backend, &url, &[], &[]).await?;
        // A refusal is not a backend without the endpoint: the credentials are wrong.
        if matches!(fetched.status, 401 | 403) {
            return Err(fetched.status_error(backend));
        }
        if !fetched.is_success() {
            return Ok(None);
        }
        Ok(Some(fetched.decode::<Status>(backend)?.duplicates_absorbed))
    }
}

impl Fetched {
    fn decode<T: DeserializeOwned>(&self, backend: &'static str) -> Result<T, BackendError> {
        serde_json::from_slice(&self.body).map_err(|e| BackendError::Shape {
            backend,
            url: self.url.clone(),
            reason: e.to_string(),
        })
    }

    fn status_error(&self, backend: &'static str) -> BackendError {
        let body = shown_body(&String::from_utf8_lossy(&self.body));
        let refused = |reason| BackendError::Refused {
            backend,
            url: self.url.clone(),
            status: self.status,
            reason,
            body: body.clone(),
        };
        match self.status {
            401 => return refused("no valid credentials: check the token or password"),
            403 => {
                return refused(
                    "the credentials are not allowed here: check their scope and the tenant",
                );
            }
            _ => {}
        }
        BackendError::Status {
            backend,
            url: self.url.clone(),
            status: self.status,
            body,
        }
    }

    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// An error body as an error message shows it: a backend's own text (its first 300
/// characters), or only the title of an HTML page (a proxy's or a gateway's 401 page says no
/// more than its title, in many lines of markup).
fn shown_body(text: &str) -> String {
    const SHOWN: usize = 300;
    let text = text.trim();
    if !text.starts_with('<') {
        return text.chars().take(SHOWN).collect();
    }
    let lower = text.to_ascii_lowercase();
    let title = lower
        .find("<title>")
        .map(|start| start + "<title>".len())
        .and_then(|start| Some(text[start..start + lower[start..].find("</title>")?].trim()));
    match title {
        Some(t) if !t.is_empty() => format!(
            "an HTML page titled \"{}\"",
            t.chars().take(SHOWN).collect::<String>()
        ),
        _ => "an HTML page".to_string(),
    }
}

/// The URL as reports and errors may show it: any user name and password removed.
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string().trim_end_matches('/').to_string()
        }
        _ => url.to_string(),
    }
}

fn base_url(backend: &'static str, url: &str) -> Result<String, BackendError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| BackendError::BadUrl {
        backend,
        url: url.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(BackendError::BadUrl {
            backend,
            url: url.to_string(),
        });
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// A string map that also accepts JSON numbers and booleans as values (label maps in the wild).
fn string_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    use serde::Deserialize;
    let raw = Option::<BTreeMap<String, serde_json::Value>>::deserialize(d)?.unwrap_or_default();
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, text)
        })
        .collect())
}

/// Where each backend answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendUrls {
    pub tempo: String,
    pub prometheus: String,
    pub loki: String,
    /// Grafana, when the Docker stack runs: used for links a person can click.
    pub grafana: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(
        "no {missing} URL: pass {flag}, or start a stack with `obsctl up` or `obsctl serve` \
         (no endpoints file at {path})"
    )]
    NoStack {
        missing: &'static str,
        flag: &'static str,
        path: String,
    },
}

/// URLs given on the command line; any left out come from the endpoints file.
#[derive(Debug, Clone, Default)]
pub struct UrlFlags {
    pub tempo: Option<String>,
    pub prometheus: Option<String>,
    pub loki: Option<String>,
}

impl BackendUrls {
    /// Flags win; the rest come from the endpoints file that `serve`/`up` write.
    pub fn discover(flags: &UrlFlags, endpoints_path: &Path) -> Result<Self, DiscoveryError> {
        let file = Endpoints::load(endpoints_path);
        let pick = |flag_value: &Option<String>,
                    from_file: fn(&Endpoints) -> &String,
                    missing: &'static str,
                    flag: &'static str| {
            flag_value
                .clone()
                .or_else(|| file.as_ref().map(|e| from_file(e).clone()))
                .ok_or_else(|| DiscoveryError::NoStack {
                    missing,
                    flag,
                    path: endpoints_path.display().to_string(),
                })
        };
        Ok(Self {
            tempo: pick(&flags.tempo, |e| &e.tempo, "Tempo", "--tempo-url")?,
            prometheus: pick(
                &flags.prometheus,
                |e| &e.prometheus,
                "Prometheus",
                "--prometheus-url",
            )?,
            loki: pick(&flags.loki, |e| &e.loki, "Loki", "--loki-url")?,
            grafana: file.and_then(|e| e.grafana),
        })
    }
}

impl UrlFlags {
    /// These URLs, each one not given here taken from `fallback` (flags over a backends file).
    pub fn or(self, fallback: UrlFlags) -> UrlFlags {
        UrlFlags {
            tempo: self.tempo.or(fallback.tempo),
            prometheus: self.prometheus.or(fallback.prometheus),
            loki: self.loki.or(fallback.loki),
        }
    }

    /// `urls` with each URL given here in its place (a stack's URLs, overridden by a backends
    /// file's).
    pub fn over(&self, urls: BackendUrls) -> BackendUrls {
        BackendUrls {
            tempo: self.tempo.clone().unwrap_or(urls.tempo),
            prometheus: self.prometheus.clone().unwrap_or(urls.prometheus),
            loki: self.loki.clone().unwrap_or(urls.loki),
            grafana: urls.grafana,
        }
    }
}

/// How to reach backends that are not obsctl's own: one HTTP client with the TLS settings,
/// each backend's credential, tenant and headers, and URLs that win over a stack's. The
/// default reaches a local stack as it is.
#[derive(Debug, Clone, Default)]
pub struct Connector {
    pub http: Http,
    pub access: BackendAccess,
    pub urls: UrlFlags,
}

impl Connector {
    /// `access`'s TLS settings read (a CA that cannot be read is an error here, before any
    /// request).
    pub fn new(access: BackendAccess, urls: UrlFlags) -> Result<Self, TlsError> {
        Ok(Self {
            http: Http::with_tls(DEFAULT_REQUEST_TIMEOUT, DEFAULT_MAX_BODY, &access.tls)?,
            access,
            urls,
        })
    }

    /// Whether anything was asked for beyond a local stack as it is.
    pub fn is_default(&self) -> bool {
        self.access == BackendAccess::default()
            && self.urls.tempo.is_none()
            && self.urls.prometheus.is_none()
            && self.urls.loki.is_none()
    }

    /// The clients for a stack at `urls`, each URL this connector names in its place.
    pub fn backends(&self, urls: BackendUrls) -> Result<Backends, BackendError> {
        Backends::with_access(self.urls.over(urls), self.http.clone(), &self.access)
    }

    /// The HTTP client for one backend, its requests carrying that backend's settings.
    pub fn http(&self, backend: Backend) -> Http {
        self.http.with_access(self.access.of(backend).clone())
    }
}

/// The three clients, built from one set of URLs and sharing one HTTP client.
#[derive(Debug, Clone)]
pub struct Backends {
    pub tempo: TempoClient,
    pub prometheus: PrometheusClient,
    pub loki: LokiClient,
    pub urls: BackendUrls,
}

impl Backends {
    pub fn new(urls: BackendUrls, http: Http) -> Result<Self, BackendError> {
        Self::with_access(urls, http, &BackendAccess::default())
    }

    /// Each client's requests carry its backend's settings from `access` (whose TLS part
    /// `http` was built with).
    pub fn with_access(
        urls: BackendUrls,
        http: Http,
        access: &BackendAccess,
    ) -> Result<Self, BackendError> {
        let http_for = |backend| http.with_access(access.of(backend).clone());
        Ok(Self {
            tempo: TempoClient::new(&urls.tempo, http_for(Backend::Tempo))?,
            prometheus: PrometheusClient::new(&urls.prometheus, http_for(Backend::Prometheus))?,
            loki: LokiClient::new(&urls.loki, http_for(Backend::Loki))?,
            urls,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_html_error_page_is_shown_by_its_title() {
        let nginx = "<html>\r\n<head><title>401 Authorization Required</title></head>\r\n<body>\r\n\
                     <center><h1>401 Authorization Required</h1></center>\r\n</body>\r\n</html>\r\n";
        assert_eq!(
            super::shown_body(nginx),
            "an HTML page titled \"401 Authorization Required\""
        );
        assert_eq!(
            super::shown_body("<html><body>no</body></html>"),
            "an HTML page"
        );
        assert_eq!(
            super::shown_body("  tenant 'x' not allowed\n"),
            "tenant 'x' not allowed"
        );
        assert_eq!(super::shown_body(&"a".repeat(400)).len(), 300);
    }

    use super::*;

    #[test]
    fn flags_win_over_the_endpoints_file_and_nothing_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("endpoints.json");
        let flags = UrlFlags {
            tempo: Some("http://127.0.0.1:1".into()),
            ..Default::default()
        };
        let err = BackendUrls::discover(&flags, &path).unwrap_err();
        assert!(err.to_string().contains("--prometheus-url"), "{err}");
        assert!(err.to_string().contains("obsctl serve"), "{err}");

        Endpoints::embedded("127.0.0.1:4317", "127.0.0.1:4318", "127.0.0.1:3200")
            .save(&path)
            .unwrap();
        let urls = BackendUrls::discover(&flags, &path).unwrap();
        assert_eq!(urls.tempo, "http://127.0.0.1:1");
        assert_eq!(urls.prometheus, "http://127.0.0.1:3200");
        assert_eq!(urls.loki, "http://127.0.0.1:3200");
        assert_eq!(urls.grafana, None);
    }

    #[test]
    fn credentials_never_reach_reports() {
        assert_eq!(
            redact("http://admin:secret@tempo:3200"),
            "http://tempo:3200"
        );
        assert_eq!(redact("http://tempo:3200/api"), "http://tempo:3200/api");
    }

    #[test]
    fn base_urls_must_be_http() {
        assert!(base_url("Tempo", "127.0.0.1:3200").is_err());
        assert!(base_url("Tempo", "ftp://x").is_err());
        assert_eq!(
            base_url("Tempo", "http://127.0.0.1:3200/").unwrap(),
            "http://127.0.0.1:3200"
        );
    }
}
