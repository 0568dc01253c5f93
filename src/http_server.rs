//! Serving the operator's HTTP endpoints (the re-auth callback, and metrics with health)
//! with limits, so slow or idle clients can neither exhaust the process's memory nor delay
//! the controller.
//!
//! `axum::serve` has no header-read timeout, no idle timeout and no connection cap: a few
//! hundred connections trickling headers took the process to the pod's memory limit. Here:
//!
//! - each server runs on its own thread with its own single-threaded runtime
//!   ([`spawn_isolated`]), so a flood keeps at most that thread busy and never delays the
//!   controller's tasks;
//! - at most `max_connections` are open at once; when full, the *oldest* connection is
//!   closed to make room. Whoever holds connections open loses them first, while a person's,
//!   a probe's or Prometheus's request, which completes in milliseconds, is always among the
//!   youngest. Memory is bounded by the cap times one request buffer;
//! - a connection must send its first byte within `idle_timeout`, its whole request head
//!   within `header_read_timeout` and `max_header_bytes`, and is closed after
//!   `connection_timeout` whatever it does. Until its head is complete it is only peeked at:
//!   the bytes wait in the kernel's receive queue, so a slow client costs this process its
//!   socket and a small task, no buffer;
//! - keep-alive is off: each connection serves one request, so none idles between requests
//!   (browsers, kubelet probes and Prometheus open another at no visible cost).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tracing::{error, warn};

/// What one server allows its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; a new one beyond closes the oldest.
    pub max_connections: usize,
    /// Time from accepting a connection to its first byte.
    pub idle_timeout: Duration,
    /// Time from the first byte to the end of the request head.
    pub header_read_timeout: Duration,
    /// Lifetime of a connection, whatever it does.
    pub connection_timeout: Duration,
    /// Size of the request head (and of the read buffer; at least 8 KiB, hyper's minimum).
    pub max_header_bytes: usize,
    /// Number of request headers.
    pub max_headers: usize,
}

impl Limits {
    /// Limits for the operator's servers: generous for browsers, probes and Prometheus, which
    /// send a request of a few hundred bytes at once. A connection waiting for its head costs
    /// a few KiB (its task and socket; the bytes stay in the kernel), so a server full of
    /// them stays around 10 MiB, and the cap is above any flood a single client can sustain
    /// without closing its own connections.
    pub const DEFAULT: Limits = Limits {
        max_connections: 4096,
        idle_timeout: Duration::from_secs(10),
        header_read_timeout: Duration::from_secs(5),
        connection_timeout: Duration::from_secs(30),
        max_header_bytes: 8 * 1024,
        max_headers: 64,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The open connections, oldest first, each with the sender whose drop closes it.
#[derive(Default)]
struct Slots {
    next: u64,
    open: BTreeMap<u64, oneshot::Sender<()>>,
}

/// A connection's place among the open ones; leaving frees it.
struct Slot {
    slots: Arc<Mutex<Slots>>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.open.remove(&self.id);
        }
    }
}

/// Takes a place for a new connection, closing the oldest when all are taken. The receiver
/// resolves when this connection is closed to make room for a newer one.
fn admit(slots: &Arc<Mutex<Slots>>, max: usize) -> (Slot, oneshot::Receiver<()>) {
    let (tx, rx) = oneshot::channel();
    let mut guard = match slots.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    while guard.open.len() >= max.max(1) {
        // Dropping the sender ends that connection's task.
        guard.open.pop_first();
    }
    let id = guard.next;
    guard.next += 1;
    guard.open.insert(id, tx);
    drop(guard);
    (
        Slot {
            slots: slots.clone(),
            id,
        },
        rx,
    )
}

fn builder(limits: &Limits) -> http1::Builder {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(false)
        .max_buf_size(limits.max_header_bytes.max(8 * 1024))
        .max_header_size(limits.max_header_bytes)
        .max_headers(limits.max_headers);
    http
}

/// Serves `router` on `listener` with `limits` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Mutex::new(Slots::default()));
    let http = Arc::new(builder(&limits));
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // wait a moment (connections close meanwhile) instead of spinning.
                    warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (slot, closed) = admit(&slots, limits.max_connections);
        let http = http.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let _slot = slot;
            tokio::select! {
                _ = closed => {}
                () = connection(stream, &http, router, &limits) => {}
            }
        });
    }
}

async fn connection(stream: TcpStream, http: &http1::Builder, router: Router, limits: &Limits) {
    let _ = stream.set_nodelay(true);
    // Wait for the first byte, then for the whole request head, before handing the
    // connection to hyper, which allocates its buffers at once: until then the bytes wait in
    // the kernel's receive queue, so an idle or trickling connection costs this process only
    // its socket and this small task.
    match tokio::time::timeout(limits.idle_timeout, stream.readable()).await {
        Ok(Ok(())) => {}
        _ => return,
    }
    match tokio::time::timeout(limits.header_read_timeout, head_arrived(&stream, limits)).await {
        Ok(true) => {}
        _ => return,
    }
    Box::pin(respond(stream, http, router, limits)).await;
}

/// How often a connection whose head is incomplete is looked at again.
const PEEK_INTERVAL: Duration = Duration::from_millis(250);

/// Whether the request head has arrived (or the head buffer's worth without its end, for
/// hyper to refuse), looking at the receive queue without reading from it; false when the
/// client closed.
async fn head_arrived(stream: &TcpStream, limits: &Limits) -> bool {
    loop {
        if stream.readable().await.is_err() {
            return false;
        }
        let complete = {
            // Transient: freed before waiting, so the allocator hands the same block to the
            // next connection.
            let mut buf = vec![0u8; limits.max_header_bytes];
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n == buf.len() || head_end(&buf[..n]),
            }
        };
        if complete {
            return true;
        }
        // Peeking leaves the socket readable: wait a moment for more instead of spinning.
        tokio::time::sleep(PEEK_INTERVAL).await;
    }
}

/// Whether `bytes` hold the blank line that ends an HTTP/1 request head.
fn head_end(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| w == b"\r\n\r\n") || bytes.windows(2).any(|w| w == b"\n\n")
}

async fn respond(stream: TcpStream, http: &http1::Builder, router: Router, limits: &Limits) {
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut router = router.clone();
        async move { tower::Service::call(&mut router, request).await }
    });
    let conn = http.serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(limits.connection_timeout, conn).await;
}

/// Serves `router` on `listener` from a thread of its own, with its own runtime: whatever
/// clients do to this server, the controller's runtime never waits for it. `name` names the
/// thread and the logs about it.
pub fn spawn_isolated(
    name: &str,
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let listener = listener.into_std()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let server = name.to_owned();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, router, limits, shutdown).await,
                    Err(e) => error!(server, error = %e, "the server could not start"),
                }
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_end_with_a_blank_line() {
        assert!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(head_end(b"GET / HTTP/1.1\nHost: x\n\nbody"));
        assert!(!head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(!head_end(b""));
    }

    #[test]
    fn the_oldest_connection_makes_room() {
        let slots = Arc::new(Mutex::new(Slots::default()));
        let (a, mut ra) = admit(&slots, 2);
        let (b, mut rb) = admit(&slots, 2);
        assert!(
            ra.try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Empty)
        );
        let (_c, mut rc) = admit(&slots, 2);
        assert_eq!(ra.try_recv(), Err(oneshot::error::TryRecvError::Closed));
        assert_eq!(rb.try_recv(), Err(oneshot::error::TryRecvError::Empty));
        assert_eq!(rc.try_recv(), Err(oneshot::error::TryRecvError::Empty));
        drop(b);
        drop(a);
        let open: Vec<u64> = slots
            .lock()
            .map(|s| s.open.keys().copied().collect())
            .unwrap();
        assert_eq!(open, vec![2], "a closed connection frees its place");
    }
}
