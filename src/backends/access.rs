//! How obsctl is let into a backend that is not its own: a bearer token or basic auth, a
//! tenant (`X-Scope-OrgID`, which multi-tenant Tempo, Loki and Mimir require), extra headers,
//! and the TLS settings of the connection. Settings for all backends and per backend are
//! merged here; the secrets stay [`Secret`]s until the request that carries them.

use std::path::PathBuf;

use reqwest::header::{HeaderName, HeaderValue};

use crate::secret::{Secret, SecretError};
use crate::tls::TlsOptions;

/// The header multi-tenant Grafana backends read the tenant from.
pub const TENANT_HEADER: &str = "X-Scope-OrgID";

/// The three backends obsctl reads, for per-backend settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Tempo,
    Prometheus,
    Loki,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Tempo => "Tempo",
            Backend::Prometheus => "Prometheus",
            Backend::Loki => "Loki",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Bearer(Secret),
    Basic { user: String, password: Secret },
}

/// A header to send, its value treated as a secret (it may well be one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    pub value: Secret,
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("{flag} expects NAME=VALUE, got an entry without '='")]
    HeaderSyntax { flag: String },
    #[error("{flag}: {name:?} is not a valid HTTP header name")]
    HeaderName { flag: String, name: String },
    #[error("{flag}: the value of header {name} is not a valid HTTP header value")]
    HeaderValue { flag: String, name: String },
    #[error("{flag}: the tenant {tenant:?} is not a valid header value")]
    Tenant { flag: String, tenant: String },
    #[error(transparent)]
    Secret(#[from] SecretError),
}

impl Header {
    /// `NAME=VALUE` as `--header` takes it; errors name the flag, never the value.
    pub fn parse(flag: &str, entry: &str) -> Result<Self, AccessError> {
        let (name, value) = entry
            .split_once('=')
            .ok_or_else(|| AccessError::HeaderSyntax {
                flag: flag.to_string(),
            })?;
        let name = name.trim();
        let parsed =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| AccessError::HeaderName {
                flag: flag.to_string(),
                name: name.to_string(),
            })?;
        if HeaderValue::from_str(value).is_err() {
            return Err(AccessError::HeaderValue {
                flag: flag.to_string(),
                name: name.to_string(),
            });
        }
        Ok(Self {
            name: parsed,
            value: Secret::new(value),
        })
    }
}

/// What one backend's requests carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    pub credential: Option<Credential>,
    pub tenant: Option<String>,
    pub headers: Vec<Header>,
}

impl Access {
    /// `self` (settings for every backend) with `specific` (one backend's) on top: a field set
    /// for the backend wins, and so does a header of the same name.
    pub fn overlaid(&self, specific: &Access) -> Access {
        let mut headers: Vec<Header> = self
            .headers
            .iter()
            .filter(|h| !specific.headers.iter().any(|s| s.name == h.name))
            .cloned()
            .collect();
        headers.extend(specific.headers.iter().cloned());
        Access {
            credential: specific
                .credential
                .clone()
                .or_else(|| self.credential.clone()),
            tenant: specific.tenant.clone().or_else(|| self.tenant.clone()),
            headers,
        }
    }

    /// The headers for one request, every credential marked sensitive so that no `Debug` of
    /// the request shows it.
    pub(super) fn apply(&self, mut request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credential {
            Some(Credential::Bearer(token)) => request = request.bearer_auth(token.expose()),
            Some(Credential::Basic { user, password }) => {
                request = request.basic_auth(user, Some(password.expose()))
            }
            None => {}
        }
        if let Some(tenant) = &self.tenant {
            request = request.header(TENANT_HEADER, tenant);
        }
        for header in &self.headers {
            if let Ok(mut value) = HeaderValue::from_str(header.value.expose()) {
                value.set_sensitive(true);
                request = request.header(header.name.clone(), value);
            }
        }
        request
    }
}

/// Every setting for the backends: TLS for all, requests per backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendAccess {
    pub tls: TlsOptions,
    pub tempo: Access,
    pub prometheus: Access,
    pub loki: Access,
}

impl BackendAccess {
    pub fn of(&self, backend: Backend) -> &Access {
        match backend {
            Backend::Tempo => &self.tempo,
            Backend::Prometheus => &self.prometheus,
            Backend::Loki => &self.loki,
        }
    }
}

/// Where a bearer token comes from; a file or a variable keeps it off the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    File(PathBuf),
    Value(Secret),
}

impl TokenSource {
    pub fn read(&self) -> Result<Credential, SecretError> {
        Ok(Credential::Bearer(match self {
            TokenSource::File(path) => Secret::from_file("token", path)?,
            TokenSource::Value(secret) => secret.clone(),
        }))
    }
}

/// A tenant id, checked to be sendable as a header.
pub fn tenant(flag: &str, value: &str) -> Result<String, AccessError> {
    if value.trim().is_empty() || HeaderValue::from_str(value).is_err() {
        return Err(AccessError::Tenant {
            flag: flag.to_string(),
            tenant: value.to_string(),
        });
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_and_errors_never_quote_the_value() {
        let h = Header::parse("--header", "X-Api-Key=s3cr3t=x").unwrap();
        assert_eq!(h.name.as_str(), "x-api-key");
        assert_eq!(h.value.expose(), "s3cr3t=x");
        let err = Header::parse("--tempo-header", "s3cr3t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--tempo-header") && !err.contains("s3cr3t"),
            "{err}"
        );
        let err = Header::parse("--header", "bad name=s3cr3t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad name") && !err.contains("s3cr3t"), "{err}");
        let err = Header::parse("--header", "X=s3cr\n3t")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cr"), "{err}");
        assert!(tenant("--tenant", " ").is_err());
    }

    #[test]
    fn per_backend_settings_win_over_the_shared_ones() {
        let shared = Access {
            credential: Some(Credential::Bearer(Secret::new("shared"))),
            tenant: Some("team-a".into()),
            headers: vec![
                Header::parse("--header", "X-A=1").unwrap(),
                Header::parse("--header", "X-B=1").unwrap(),
            ],
        };
        let tempo = Access {
            tenant: Some("team-t".into()),
            headers: vec![Header::parse("--tempo-header", "X-B=2").unwrap()],
            ..Default::default()
        };
        let merged = shared.overlaid(&tempo);
        assert_eq!(merged.tenant.as_deref(), Some("team-t"));
        assert_eq!(merged.credential, shared.credential);
        let shown: Vec<(String, String)> = merged
            .headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.expose().to_string()))
            .collect();
        assert_eq!(
            shown,
            vec![("x-a".into(), "1".into()), ("x-b".into(), "2".into())]
        );
        assert_eq!(shared.overlaid(&Access::default()), shared);
    }
}
