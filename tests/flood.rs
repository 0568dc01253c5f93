//! The operator under a connection flood, as a separate process (so its memory can be read
//! from /proc): 2,000 slow-loris connections (a request head trickled a line a second,
//! reopened whenever the server closes it) plus 500 idle ones, against the callback server
//! and against the metrics/health server at once. Meanwhile the process stays under 40 MiB
//! (its anonymous memory; the figures printed include the whole RSS),
//! `/healthz` answers, a person's re-auth through the link succeeds, and the controller
//! keeps reconciling: an expiry suspends its CronJob within 2 s.

// A test (or benchmark) fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::operator::{CONVERGE, Operator};
use common::{eventually, kubeconfig_path};
use sforg_operator::callback::CALLBACK_PATH;
use sforg_operator::crd::TokenState;
use sforg_simulator::DemoOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SLOW_LORIS: usize = 2000;
const IDLE: usize = 500;
/// The process's own memory (anonymous RSS: heap and stacks) stays under this.
const RSS_LIMIT_KIB: u64 = 40 * 1024;
/// What the flood may add to the whole RSS.
const FLOOD_GROWTH_LIMIT_KIB: u64 = 32 * 1024;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A directory removed when dropped, whatever the test's outcome.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The operator binary, killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Raises this process's open-file limit to its hard limit: the flood needs thousands of
/// sockets, and the operator (a child) inherits the limit.
fn raise_file_limit() {
    // A safe wrapper: the project forbids unsafe code, tests included.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

#[derive(Default)]
struct FloodStats {
    /// Connections the server closed (each reopened).
    closed: AtomicU64,
    /// Connections open now.
    open: AtomicU64,
}

/// One slow-loris client: sends a request line and a header line a second, never the blank
/// line that ends the head; reconnects when the server closes the connection.
async fn slow_loris(addr: SocketAddr, stop: Arc<AtomicBool>, stats: Arc<FloodStats>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        stats.open.fetch_add(1, Ordering::Relaxed);
        let mut ok = stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: flood\r\n")
            .await
            .is_ok();
        let mut n = 0u32;
        let mut buf = [0u8; 256];
        while ok && !stop.load(Ordering::Relaxed) {
            tokio::select! {
                read = stream.read(&mut buf) => ok = matches!(read, Ok(r) if r > 0),
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    n += 1;
                    let line = format!("X-Slow-{n}: {}\r\n", "a".repeat(200));
                    ok = stream.write_all(line.as_bytes()).await.is_ok();
                }
            }
        }
        stats.open.fetch_sub(1, Ordering::Relaxed);
        if !stop.load(Ordering::Relaxed) {
            stats.closed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One idle client: connects and sends nothing; reconnects when closed.
async fn idle(addr: SocketAddr, stop: Arc<AtomicBool>, stats: Arc<FloodStats>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        stats.open.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 64];
        loop {
            tokio::select! {
                read = stream.read(&mut buf) => if !matches!(read, Ok(r) if r > 0) { break },
                () = tokio::time::sleep(Duration::from_millis(500)) => {
                    if stop.load(Ordering::Relaxed) { break }
                }
            }
        }
        stats.open.fetch_sub(1, Ordering::Relaxed);
        if !stop.load(Ordering::Relaxed) {
            stats.closed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn flood(addr: SocketAddr, stop: &Arc<AtomicBool>) -> Arc<FloodStats> {
    let stats = Arc::new(FloodStats::default());
    for _ in 0..SLOW_LORIS {
        tokio::spawn(slow_loris(addr, stop.clone(), stats.clone()));
    }
    for _ in 0..IDLE {
        tokio::spawn(idle(addr, stop.clone(), stats.clone()));
    }
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_both_servers_stops_neither_reauth_nor_reconciling() {
    raise_file_limit();
    let callback_port = free_port();
    let metrics_port = free_port();
    let public_url = format!("http://127.0.0.1:{callback_port}");
    let op = Operator::prepare_with(
        "flood",
        DemoOptions {
            redirect_uris: vec![format!("{public_url}{CALLBACK_PATH}")],
            rotation: true,
            ..DemoOptions::default()
        },
    )
    .await;
    let dir = std::env::temp_dir().join(format!("sforg-flood-{}", op.ns));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let _cleanup = TempDir(dir.clone());
    let ca = dir.join("sim-ca.pem");
    std::fs::write(&ca, op.sim.ca_pem()).expect("write CA");
    let log = std::fs::File::create(dir.join("operator.log")).expect("log file");
    // SFORG_OPERATOR_BIN runs another build (a release one) for the figures.
    let binary = std::env::var("SFORG_OPERATOR_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_sforg-operator").to_owned());
    let child = Command::new(binary)
        .args(["run", "--namespace", &op.ns, "--no-leader-election"])
        .args(["--salesforce-proxy", op.sim.proxy_url()])
        .arg("--extra-ca-file")
        .arg(&ca)
        .args(["--public-url", &public_url])
        .args(["--callback-listen", &format!("127.0.0.1:{callback_port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .args([
            "--state-key-secret",
            &format!("{}/sforg-operator-state-key", op.ns),
        ])
        .env("KUBECONFIG", kubeconfig_path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the operator");
    let operator = Process(child);
    let pid = operator.0.id();
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let healthz = format!("http://127.0.0.1:{metrics_port}/healthz");
    eventually("the operator to serve /healthz", CONVERGE, || async {
        let r = http.get(&healthz).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;

    // beta: connected, with a backup; acme: new, waiting for a person.
    op.create_web_org_with(
        "beta",
        serde_json::json!({"cronJobSelector": {"matchLabels": {"orgtokens.dev/org": "beta"}}}),
    )
    .await;
    op.seed_tokens("beta-token", "beta").await;
    op.create_cronjob("nightly", &[("orgtokens.dev/org", "beta")], false)
        .await;
    op.wait_state("beta", TokenState::Valid, None).await;
    op.create_web_org("acme").await;
    op.wait_state("acme", TokenState::Pending, None).await;
    let link = eventually("acme's link", CONVERGE, || async {
        op.orgs()
            .get("acme")
            .await
            .ok()?
            .status?
            .reauth
            .map(|r| r.url)
    })
    .await;
    let rss_before = proc_kib(pid, "VmRSS");

    // The flood, on both servers at once.
    let stop = Arc::new(AtomicBool::new(false));
    let callback_addr: SocketAddr = format!("127.0.0.1:{callback_port}").parse().expect("addr");
    let metrics_addr: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().expect("addr");
    let on_callback = flood(callback_addr, &stop);
    let on_metrics = flood(metrics_addr, &stop);
    let sampling = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut peak, mut peak_anon) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(proc_kib(pid, "VmRSS"));
                peak_anon = peak_anon.max(proc_kib(pid, "RssAnon"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (peak, peak_anon)
        })
    };
    // Let every connection open and the first slow ones reach their timeouts.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let opened = on_callback.open.load(Ordering::Relaxed) + on_metrics.open.load(Ordering::Relaxed);
    println!(
        "flood: {opened} connections open from the client's side after 8 s; operator RSS {} KiB \
         (anonymous {} KiB), {} KiB before the flood",
        proc_kib(pid, "VmRSS"),
        proc_kib(pid, "RssAnon"),
        rss_before
    );

    // /healthz answers.
    let mut health = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let response = http
            .get(&healthz)
            .send()
            .await
            .expect("/healthz during the flood");
        assert!(response.status().is_success(), "{}", response.status());
        health.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The controller keeps reconciling: beta's token is revoked, a check finds out, and its
    // backup is suspended.
    op.sim
        .control()
        .revoke_user_tokens(&op.demo.user.username, None)
        .expect("revoke");
    let expiry_started = Instant::now();
    op.request_check("beta").await;
    eventually("nightly suspended during the flood", CONVERGE, || async {
        op.cronjob_hold("nightly").await.0.then_some(())
    })
    .await;
    let expiry = expiry_started.elapsed();

    // A person's re-auth through the link, in a scripted browser.
    let reauth_started = Instant::now();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lib/open-link.py");
    let args = [
        link.clone(),
        op.sim.proxy_url().to_owned(),
        ca.display().to_string(),
        op.demo.user.username.clone(),
        op.demo.password.clone(),
    ];
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3").arg(script).args(args).output()
    })
    .await
    .expect("join")
    .expect("run the scripted browser");
    let page = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        page.contains("Token valid"),
        "{page}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reauth_page = reauth_started.elapsed();
    op.wait_state("acme", TokenState::Valid, Some("TokenValid"))
        .await;
    let reauth = reauth_started.elapsed();

    let rss_now = proc_kib(pid, "VmRSS");
    let anon = proc_kib(pid, "RssAnon");
    let file = proc_kib(pid, "RssFile");
    stop.store(true, Ordering::Relaxed);
    let (peak, peak_anon) = sampling.await.expect("sampler");
    let hwm = proc_kib(pid, "VmHWM");
    let closed =
        on_callback.closed.load(Ordering::Relaxed) + on_metrics.closed.load(Ordering::Relaxed);
    println!(
        "flood figures: RSS before {rss_before} KiB, peak during {peak} KiB (anonymous \
         {peak_anon} KiB), at the end \
         {rss_now} KiB (anonymous {anon} KiB, binary and libraries {file} KiB), high-water \
         mark {hwm} KiB (limit {RSS_LIMIT_KIB} KiB); /healthz {health:?}; \
         expiry -> CronJob suspended {expiry:?}; re-auth: page {reauth_page:?}, org Valid \
         {reauth:?}; connections closed by the servers {closed}"
    );
    assert!(
        closed as usize >= SLOW_LORIS + IDLE,
        "the servers close slow and idle connections ({closed})"
    );
    // The mapped binary is most of the RSS of a debug build (about 30 MiB, against a few MiB
    // for the release binary), and does not grow: the limit is on the process's own memory,
    // and on what the flood adds.
    assert!(
        peak_anon < RSS_LIMIT_KIB,
        "the operator's memory stays under 40 MiB: anonymous RSS peaked at {peak_anon} KiB"
    );
    assert!(
        peak.max(hwm).saturating_sub(rss_before) < FLOOD_GROWTH_LIMIT_KIB,
        "the flood added {} KiB to the RSS",
        peak.max(hwm).saturating_sub(rss_before)
    );
    assert!(
        expiry < Duration::from_secs(2),
        "an expiry during the flood suspends the CronJob within 2 s: {expiry:?}"
    );
}
