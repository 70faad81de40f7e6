//! A real TLS terminator for the TLS tests: Debian's nginx in front of `obsctl serve`, with a CA
//! and certificates the test generates (rcgen). nginx runs as the test user from a temporary
//! prefix (`master_process off`, every path under it) on free 127.0.0.1 ports; each listener
//! is one case: HTTPS and gRPC over TLS to serve's OTLP ports, the same with a client
//! certificate required, the query API behind a bearer token and a tenant that nginx checks,
//! and servers whose certificate is expired or names another host.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType, date_time_ymd,
};

use super::{ChildGuard, Serve, free_ports, poll, require_tool};

/// The token and tenant the API listener demands.
pub const TOKEN: &str = "tok-3f9a7c1e-never-shown";
pub const TENANT: &str = "team-tls";
/// The token nginx accepts and one it refuses, each in a file of a directory outside any home
/// obsctl writes to (so that walking a home for the token finds only what obsctl wrote).
pub struct TokenFiles {
    pub dir: tempfile::TempDir,
    pub token: PathBuf,
    pub wrong: PathBuf,
}

impl TokenFiles {
    pub fn write() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        let wrong = dir.path().join("wrong-token");
        std::fs::write(&wrong, "tok-not-this-one\n").unwrap();
        Self { dir, token, wrong }
    }
}

/// A header value the shim tests send through OTEL_EXPORTER_OTLP_HEADERS.
pub const HEADER_SECRET: &str = "hdr-5b2d-never-shown";

/// Certificates and keys as PEM files in one directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `ca.pem` signs `server` (localhost and 127.0.0.1), `expired` (same names, valid in
    /// 2001 only), `wronghost` (elsewhere.invalid) and `client`; `other-ca.pem` signs nothing
    /// this server shows.
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let authority = ca("obsctl test CA");
        std::fs::write(dir.path().join("ca.pem"), authority.pem()).unwrap();
        std::fs::write(dir.path().join("other-ca.pem"), ca("obsctl other CA").pem()).unwrap();
        let leaf = |name: &str, hosts: &[&str], expired: bool| {
            let mut params =
                CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
                    .unwrap();
            // The wrong-host certificate must not match 127.0.0.1 either.
            if name != "wronghost" {
                params
                    .subject_alt_names
                    .push(SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
            }
            params.distinguished_name.push(DnType::CommonName, hosts[0]);
            if expired {
                params.not_before = date_time_ymd(2001, 1, 1);
                params.not_after = date_time_ymd(2001, 12, 31);
            }
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &authority).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
        };
        leaf("server", &["localhost"], false);
        leaf("expired", &["localhost"], true);
        leaf("wronghost", &["elsewhere.invalid"], false);
        leaf("client", &["obsctl-client"], false);
        Self { dir }
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// What nginx forwards to, each `host:port`: OTLP (HTTP and gRPC) and the three query APIs.
pub struct Upstreams {
    pub otlp_http: String,
    pub otlp_grpc: String,
    pub tempo: String,
    pub prometheus: String,
    pub loki: String,
}

impl Upstreams {
    /// `serve`'s ports: one query API for all three backends.
    pub fn of(serve: &Serve) -> Self {
        let upstream = |url: &str| url.trim_start_matches("http://").to_string();
        Self {
            otlp_http: upstream(&serve.http),
            otlp_grpc: upstream(&serve.grpc),
            tempo: upstream(&serve.api),
            prometheus: upstream(&serve.api),
            loki: upstream(&serve.api),
        }
    }
}

/// The listeners, each an `https://localhost:PORT` URL.
pub struct Listeners {
    pub otlp_http: String,
    pub otlp_grpc: String,
    pub otlp_http_mtls: String,
    pub otlp_grpc_mtls: String,
    /// Tempo's query API: 401 without `Bearer TOKEN`, 403 without `X-Scope-OrgID: TENANT`.
    pub api: String,
    /// Prometheus' and Loki's, the same way (with `obsctl serve` behind, all three are its API).
    pub prometheus_api: String,
    pub loki_api: String,
    /// OTLP/HTTP behind an expired certificate.
    pub expired: String,
    /// OTLP/HTTP behind a certificate for elsewhere.invalid.
    pub wrong_host: String,
    /// OTLP/HTTP through nginx without TLS (`http://`): the benchmark's same-hop baseline.
    pub plain_http: String,
}

/// nginx, killed on drop; `None` (after [`super::missing`]) when it is not installed.
pub struct Nginx {
    _process: ChildGuard,
    prefix: tempfile::TempDir,
    pub urls: Listeners,
}

impl Nginx {
    pub fn start(serve: &Serve, pki: &Pki, test: &str) -> Option<Self> {
        Self::in_front_of(&Upstreams::of(serve), pki, test)
    }

    pub fn in_front_of(upstreams: &Upstreams, pki: &Pki, test: &str) -> Option<Self> {
        let binary = require_tool("nginx", test)?;
        let prefix = tempfile::tempdir().unwrap();
        let ports = free_ports(10);
        let config = config(prefix.path(), &ports, upstreams, pki);
        std::fs::write(prefix.path().join("nginx.conf"), config).unwrap();
        let child = Command::new(binary)
            .arg("-p")
            .arg(prefix.path())
            .arg("-c")
            .arg(prefix.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nginx");
        let url = |i: usize| format!("https://localhost:{}", ports[i]);
        let nginx = Self {
            _process: ChildGuard::new(child),
            prefix,
            urls: Listeners {
                otlp_http: url(0),
                otlp_grpc: url(1),
                otlp_http_mtls: url(2),
                otlp_grpc_mtls: url(3),
                api: url(4),
                expired: url(5),
                wrong_host: url(6),
                plain_http: format!("http://127.0.0.1:{}", ports[7]),
                prometheus_api: url(8),
                loki_api: url(9),
            },
        };
        for port in &ports {
            poll(
                &format!("nginx to listen on 127.0.0.1:{port}"),
                Duration::from_secs(20),
                || std::net::TcpStream::connect(("127.0.0.1", *port)).ok(),
            );
        }
        Some(nginx)
    }

    /// nginx's own access and error logs, to show that no secret reached them either.
    pub fn logs(&self) -> String {
        ["access.log", "error.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.prefix.path().join(f)).unwrap_or_default())
            .collect()
    }

    /// Whether nginx forwarded a query under `path` with a 200: that a command read through it.
    pub fn forwarded(&self, path: &str) -> bool {
        self.logs()
            .lines()
            .any(|l| l.contains(&format!("\"GET {path}")) && l.contains("\" 200 "))
    }

    /// A backends file (`--backends-file`) in `dir` that reads the three query APIs through
    /// this nginx: the test CA, the token from `token_file` and `tenant`.
    pub fn backends_file(&self, dir: &Path, pki: &Pki, token_file: &Path, tenant: &str) -> PathBuf {
        let token_name = token_file.file_name().unwrap().to_string_lossy();
        let file = dir.join(format!("backends-{tenant}-{token_name}.yaml"));
        let section = |url: &str| format!("  url: {url}\n");
        std::fs::write(
            &file,
            format!(
                "caFile: {}\nall:\n  tokenFile: {}\n  tenant: {tenant}\n\
                 tempo:\n{}prometheus:\n{}loki:\n{}",
                pki.path("ca.pem").display(),
                token_file.display(),
                section(&self.urls.api),
                section(&self.urls.prometheus_api),
                section(&self.urls.loki_api),
            ),
        )
        .unwrap();
        file
    }
}

fn config(prefix: &Path, ports: &[u16], upstreams: &Upstreams, pki: &Pki) -> String {
    let (http, grpc) = (&upstreams.otlp_http, &upstreams.otlp_grpc);
    let cert = |name: &str| {
        format!(
            "ssl_certificate {}; ssl_certificate_key {};",
            pki.path(&format!("{name}.pem")).display(),
            pki.path(&format!("{name}.key")).display()
        )
    };
    let mtls = format!(
        "ssl_client_certificate {}; ssl_verify_client on;",
        pki.path("ca.pem").display()
    );
    let proxy = format!("location / {{ proxy_pass http://{http}; }}");
    let grpc_pass = format!("location / {{ grpc_pass grpc://{grpc}; }}");
    let api_auth = |api: &str| {
        format!(
            "location / {{ \
               if ($http_authorization != \"Bearer {TOKEN}\") {{ return 401; }} \
               if ($http_x_scope_orgid != \"{TENANT}\") {{ return 403; }} \
               proxy_pass http://{api}; }}"
        )
    };
    let server = |port: u16, http2: bool, tls: String, body: &str| {
        let h2 = if http2 { " http2" } else { "" };
        format!("server {{ listen 127.0.0.1:{port} ssl{h2}; {tls} {body} }}\n")
    };
    let p = prefix.display();
    let mut out = format!(
        "daemon off;\nmaster_process off;\nerror_log {p}/error.log info;\npid {p}/nginx.pid;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n\
         access_log {p}/access.log;\n\
         client_body_temp_path {p}/body; proxy_temp_path {p}/proxy;\n\
         fastcgi_temp_path {p}/fastcgi; uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n\
         client_body_buffer_size 1m; client_max_body_size 16m;\n"
    );
    out += &server(ports[0], false, cert("server"), &proxy);
    out += &server(ports[1], true, cert("server"), &grpc_pass);
    out += &server(
        ports[2],
        false,
        format!("{} {mtls}", cert("server")),
        &proxy,
    );
    out += &server(
        ports[3],
        true,
        format!("{} {mtls}", cert("server")),
        &grpc_pass,
    );
    out += &server(ports[4], false, cert("server"), &api_auth(&upstreams.tempo));
    out += &server(ports[5], false, cert("expired"), &proxy);
    out += &server(ports[6], false, cert("wronghost"), &proxy);
    out += &format!("server {{ listen 127.0.0.1:{}; {proxy} }}\n", ports[7]);
    out += &server(
        ports[8],
        false,
        cert("server"),
        &api_auth(&upstreams.prometheus),
    );
    out += &server(ports[9], false, cert("server"), &api_auth(&upstreams.loki));
    out += "}\n";
    out
}
