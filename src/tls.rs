//! TLS for every connection obsctl opens as a client: the backend query clients, the shim's
//! OTLP exporter (HTTP and gRPC) and `flush`. One rustls configuration with the ring provider
//! (no C toolchain, small), the system's CA roots unless a CA file replaces them, an optional
//! client certificate (mTLS), and failures named as a person can act on them: expired, wrong
//! host name, unknown CA, client certificate refused.

use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};

/// Makes ring the process's rustls provider. reqwest is built without a provider of its own
/// (its default, aws-lc-rs, needs a C toolchain and doubles the TLS code), so a reqwest client
/// built without [`TlsOptions::client_config`] needs this first; calling it again is harmless.
pub fn install_default_provider() {
    // Err only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// ALPN for gRPC: HTTP/2 or nothing.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN for the HTTP/1.1 clients.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// How a client checks the server and proves itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsOptions {
    /// PEM CA certificates that replace the system's roots (`--ca-file`,
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE`).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key, for servers that require mTLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Accept any server certificate. Only ever set by an explicit, loudly named flag.
    pub insecure_skip_verify: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {what} file {}: {reason}; expected PEM", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("the {what} file {} holds no PEM certificate", path.display())]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error(
        "a client certificate needs its key and a key its certificate (only the {given} is set)"
    )]
    HalfIdentity { given: &'static str },
    #[error("the client certificate and key do not form a usable identity: {0}")]
    Identity(rustls::Error),
}

impl TlsOptions {
    /// A client configuration offering `alpn`. Reads the files given (and, without a CA file,
    /// the system's roots) each time: callers build it once per process.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions");
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(
                    provider.signature_verification_algorithms,
                )))
        } else {
            builder.with_root_certificates(self.roots()?)
        };
        let mut config = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let chain = read_certificates("client certificate", cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
                    what: "client key",
                    path: key.clone(),
                    reason: e.to_string(),
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(TlsError::Identity)?
            }
            (Some(_), None) => {
                return Err(TlsError::HalfIdentity {
                    given: "certificate",
                });
            }
            (None, Some(_)) => return Err(TlsError::HalfIdentity { given: "key" }),
            (None, None) => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// A reqwest client builder whose TLS is these options (HTTP/1.1); callers add their own
    /// timeouts and limits. Every reqwest client obsctl builds for a server it does not run
    /// should start here.
    pub fn reqwest_builder(&self) -> Result<reqwest::ClientBuilder, TlsError> {
        let config = self.client_config(&[ALPN_HTTP1])?;
        Ok(reqwest::Client::builder().use_preconfigured_tls(Arc::unwrap_or_clone(config)))
    }

    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                roots.add_parsable_certificates(read_certificates("CA certificate", path)?);
            }
            None => {
                // Unreadable entries in the system store are skipped, as every TLS client does.
                // A machine without any still builds clients: plain http works, and an https
                // handshake fails as an unknown CA, which --ca-file fixes.
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
            }
        }
        Ok(roots)
    }
}

fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |e: rustls::pki_types::pem::Error| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// `--insecure-skip-verify`: any certificate for any name is accepted; the handshake's
/// signatures are still checked, so the connection is encrypted, just not authenticated.
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Why a TLS handshake failed, in words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Expired,
    NotYetValid,
    /// The certificate names other hosts than the one connected to.
    WrongHost,
    UnknownCa,
    /// The server wanted a client certificate and got none, or refused the one it got.
    ClientCertificate(String),
    Other(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Expired => f.write_str("TLS: the server's certificate has expired"),
            Failure::NotYetValid => f.write_str(
                "TLS: the server's certificate is not valid yet (is this machine's clock right?)",
            ),
            Failure::WrongHost => f.write_str(
                "TLS: the server's certificate is not valid for this host name (wrong host)",
            ),
            Failure::UnknownCa => f.write_str(
                "TLS: the server's certificate is not signed by a trusted CA (unknown CA)",
            ),
            Failure::ClientCertificate(alert) => write!(
                f,
                "TLS: the server refused the connection for want of an acceptable client \
                 certificate ({alert})"
            ),
            Failure::Other(reason) => write!(f, "TLS: {reason}"),
        }
    }
}

impl Failure {
    fn of(err: &rustls::Error) -> Self {
        match err {
            rustls::Error::InvalidCertificate(cert) => match cert {
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    Failure::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    Failure::NotYetValid
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => Failure::WrongHost,
                CertificateError::UnknownIssuer => Failure::UnknownCa,
                other => Failure::Other(format!("invalid server certificate: {other:?}")),
            },
            rustls::Error::AlertReceived(
                alert @ (AlertDescription::CertificateRequired
                | AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateUnknown
                | AlertDescription::AccessDenied),
            ) => Failure::ClientCertificate(format!("{alert:?}")),
            other => Failure::Other(other.to_string()),
        }
    }

    /// The TLS failure somewhere in `err`'s chain, looking inside `io::Error`s too (their
    /// `source()` skips the error they wrap, which is where rustls puts its own; reqwest's
    /// connector wraps that `io::Error` in another one).
    pub fn find(err: &(dyn StdError + 'static)) -> Option<Self> {
        let mut next = Some(err);
        while let Some(e) = next {
            if let Some(tls) = e.downcast_ref::<rustls::Error>() {
                return Some(Self::of(tls));
            }
            let wrapped = e
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref());
            if let Some(found) = wrapped.and_then(|inner| Self::find(inner)) {
                return Some(found);
            }
            next = e.source();
        }
        None
    }
}

/// The TLS failure in `err` when there is one, else its innermost cause ("Connection refused"
/// hides several wrapper layers down).
pub fn describe(err: &(dyn StdError + 'static)) -> String {
    if let Some(failure) = Failure::find(err) {
        return failure.to_string();
    }
    let mut innermost = err;
    while let Some(cause) = innermost.source() {
        innermost = cause;
    }
    innermost.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_errors_inside_io_errors_are_named() {
        let expired = rustls::Error::InvalidCertificate(CertificateError::Expired);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, expired);
        assert_eq!(Failure::find(&io), Some(Failure::Expired));
        assert!(describe(&io).contains("expired"), "{}", describe(&io));
        let twice = std::io::Error::other(io);
        assert_eq!(Failure::find(&twice), Some(Failure::Expired));
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert_eq!(Failure::find(&unknown), Some(Failure::UnknownCa));
        let refused = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        assert!(matches!(
            Failure::find(&refused),
            Some(Failure::ClientCertificate(_))
        ));
        let plain = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(Failure::find(&plain), None);
    }

    #[test]
    fn bad_files_are_named_with_what_they_should_hold() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let options = TlsOptions {
            ca_file: Some(not_pem.clone()),
            ..Default::default()
        };
        let err = options
            .client_config(&[ALPN_HTTP1])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CA certificate") && err.contains("ca.pem"),
            "{err}"
        );
        let half = TlsOptions {
            client_cert: Some(not_pem),
            ..Default::default()
        };
        let err = half.client_config(&[ALPN_H2]).unwrap_err().to_string();
        assert!(err.contains("only the certificate"), "{err}");
        let missing = TlsOptions {
            ca_file: Some(dir.path().join("absent.pem")),
            ..Default::default()
        };
        let err = missing.client_config(&[]).unwrap_err().to_string();
        assert!(err.contains("absent.pem"), "{err}");
    }
}
