//! Real receivers for the notification tests: a webhook receiver on loopback (plain HTTP,
//! with scripted faults), a TLS endpoint with a certificate for another name, a test CA, and
//! a real SMTP server (aiosmtpd, STARTTLS and AUTH required) run as a process.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};
use tokio::sync::Notify;

/// A test CA and one server certificate it signed.
pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    /// A fresh CA and a server certificate for `names`.
    pub fn new(names: &[&str]) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = DistinguishedName::new();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "notification test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        Pki {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: std::time::SystemTime,
    pub path: String,
    pub key: String,
    pub body: serde_json::Value,
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    /// Requests per path so far (to fail the first ones).
    seen: Mutex<HashMap<String, usize>>,
    in_flight: Mutex<(usize, usize)>,
    release: Notify,
    released: Mutex<bool>,
}

/// A webhook receiver on 127.0.0.1. Paths choose the behaviour:
/// `/ok/..` answers 204; `/flaky/..` answers 500 to the first request; `/slow/..` holds the
/// first request 30 s; `/hang/..` holds every request until [`Receiver::release`];
/// `/busy/..` takes 200 ms (to measure concurrency). Every request is recorded when it
/// arrives; only answered 2xx ones count as delivered (see [`Receiver::delivered`]).
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    shared: Arc<Shared>,
    delivered: Arc<Mutex<Vec<Received>>>,
}

type Log = Arc<Mutex<Vec<Received>>>;

async fn handle(
    State((shared, delivered)): State<(Arc<Shared>, Log)>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let got = Received {
        at: std::time::SystemTime::now(),
        path: path.clone(),
        key,
        body,
    };
    shared.received.lock().unwrap().push(got.clone());
    let kind = path.split('/').next().unwrap_or_default().to_owned();
    let n = {
        let mut seen = shared.seen.lock().unwrap();
        let n = seen.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    let status = match kind.as_str() {
        "flaky" if n == 1 => StatusCode::INTERNAL_SERVER_ERROR,
        "slow" if n == 1 => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::NO_CONTENT
        }
        "hang" => {
            loop {
                let wait = shared.release.notified();
                if *shared.released.lock().unwrap() {
                    break;
                }
                wait.await;
            }
            StatusCode::NO_CONTENT
        }
        "busy" => {
            {
                let mut f = shared.in_flight.lock().unwrap();
                f.0 += 1;
                f.1 = f.1.max(f.0);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            shared.in_flight.lock().unwrap().0 -= 1;
            StatusCode::NO_CONTENT
        }
        _ => StatusCode::NO_CONTENT,
    };
    if status.is_success() {
        delivered.lock().unwrap().push(Received {
            at: std::time::SystemTime::now(),
            ..got
        });
    }
    status
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared::default());
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/{*path}", post(handle))
            .with_state((shared.clone(), delivered.clone()));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url,
            shared,
            delivered,
        }
    }

    /// Every request that arrived.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Requests answered 2xx.
    pub fn delivered(&self) -> Vec<Received> {
        self.delivered.lock().unwrap().clone()
    }

    /// Delivered requests on `path`.
    pub fn delivered_on(&self, path: &str) -> Vec<Received> {
        self.delivered()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// The most requests handled at once on `/busy/..`.
    pub fn max_in_flight(&self) -> usize {
        self.shared.in_flight.lock().unwrap().1
    }

    /// Lets held `/hang/..` requests (and later ones) answer.
    pub fn release(&self) {
        *self.shared.released.lock().unwrap() = true;
        self.shared.release.notify_waiters();
    }
}

/// A TLS endpoint whose certificate names only `wrong.example`: every handshake with a
/// client that checks names fails. Returns its https URL.
pub async fn tls_name_mismatch(pki: &Pki) -> String {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs = vec![CertificateDer::from_pem_slice(pki.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://localhost:{}/hook",
        listener.local_addr().unwrap().port()
    );
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(stream).await;
            });
        }
    });
    url
}

/// The Python with aiosmtpd (Debian's python3-aiosmtpd, installed by scripts/test.sh).
fn python() -> String {
    for candidate in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(candidate)
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return candidate.to_owned();
        }
    }
    panic!("no python3 with aiosmtpd: run scripts/test.sh, which installs python3-aiosmtpd");
}

/// A real SMTP server on 127.0.0.1 (host name localhost in its certificate): STARTTLS and
/// AUTH required.
pub struct Smtp {
    pub port: u16,
    pub ca_pem: String,
    pub user: String,
    pub password: String,
    out: PathBuf,
    dir: PathBuf,
    child: Child,
}

/// One accepted message.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Mail {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub data: String,
    pub tls: bool,
    pub auth: bool,
    /// When it was accepted (seconds since the Unix epoch).
    pub at: f64,
}

impl Smtp {
    pub async fn start() -> Self {
        let pki = Pki::new(&["localhost"]);
        let dir = std::env::temp_dir().join(format!(
            "sforg-smtp-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.pem"), &pki.cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), &pki.key_pem).unwrap();
        let out = dir.join("mail.jsonl");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/notify/smtp_server.py");
        let mut child = Command::new(python())
            .arg(script)
            .args(["--port", &port.to_string()])
            .arg("--cert")
            .arg(dir.join("cert.pem"))
            .arg("--key")
            .arg(dir.join("key.pem"))
            .args(["--user", "sforg", "--password", "s3cret"])
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the SMTP server");
        let stdout = child.stdout.take().unwrap();
        let ready = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok);
            // Keep draining so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines.by_ref() {});
            first
        });
        let line = tokio::time::timeout(Duration::from_secs(20), ready)
            .await
            .expect("the SMTP server starts")
            .unwrap();
        assert!(
            line.as_deref().is_some_and(|l| l.starts_with("READY")),
            "{line:?}"
        );
        Smtp {
            port,
            ca_pem: pki.ca_pem,
            user: "sforg".into(),
            password: "s3cret".into(),
            out,
            dir,
            child,
        }
    }

    /// Messages accepted so far.
    pub fn mails(&self) -> Vec<Mail> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// YAML of a channels Secret entry, indented for a map value.
pub fn indent(pem: &str) -> String {
    pem.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
