//! No token value ever appears in a log line, an Event or the status. This binary captures
//! every log line of the process (at debug level) while an org goes through first tokens,
//! a rotated refresh and a revocation, then searches everything for every token it saw.

// A test (or benchmark) fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use common::eventually;
use common::operator::{CONVERGE, Operator};
use sforg_operator::crd::TokenState;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        let writer = capture.clone();
        tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        capture
    })
}

#[tokio::test]
async fn tokens_never_reach_logs_events_or_status() {
    let logs = capture();
    let (op, seeded) = Operator::with_valid_org("leaks", true).await;
    let mut tokens = vec![seeded.access_token.clone()];
    tokens.extend(seeded.refresh_token.clone());
    op.expire_sessions_and_check("acme").await;
    let data = eventually("a rotated token", CONVERGE, || async {
        let data = op.secret_data("acme-token").await;
        (data.get("refresh_token") != seeded.refresh_token.as_ref()).then_some(data)
    })
    .await;
    tokens.extend(data.get("access_token").cloned());
    tokens.extend(data.get("refresh_token").cloned());
    op.wait_state("acme", TokenState::Valid, None).await;

    op.sim
        .control()
        .revoke_user_tokens(&op.demo.user.username, None)
        .expect("revoke");
    op.request_check("acme").await;
    op.wait_state("acme", TokenState::Expired, None).await;

    let org = op.orgs().get("acme").await.expect("org");
    let status = serde_json::to_string(&org.status).expect("status json");
    let events = serde_json::to_string(&op.events_for("acme").await).expect("events json");
    let logs = String::from_utf8_lossy(&logs.0.lock().expect("logs")).into_owned();
    assert!(
        logs.contains("stored a new access token"),
        "the capture works: {logs}"
    );
    assert_eq!(tokens.len(), 4);
    for token in &tokens {
        assert!(token.len() > 20, "a real token");
        for (what, text) in [("logs", &logs), ("events", &events), ("status", &status)] {
            assert!(
                !text.contains(token.as_str()),
                "a token appeared in the {what}"
            );
        }
    }
}
