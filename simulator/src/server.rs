//! Accept loops that serve an axum router over plain TCP or TLS with hyper (HTTP/1.1),
//! so that a "connection reset" fault can close the socket without any response.

use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::faults::DropConnection;

#[derive(Debug, thiserror::Error)]
#[error("connection dropped by fault injection")]
struct ConnectionDropped;

/// Serves `router` on `listener` until `shutdown` flips; open connections are then closed.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(handle(stream, router.clone(), tls.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.abort_all();
}

async fn handle(stream: TcpStream, router: Router, tls: Option<TlsAcceptor>) {
    let _ = stream.set_nodelay(true);
    match tls {
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(stream) => serve_connection(stream, router).await,
            Err(error) => tracing::debug!(%error, "tls handshake failed"),
        },
        None => serve_connection(stream, router).await,
    }
}

async fn serve_connection<S>(io: S, router: Router)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let router = router.clone();
        async move {
            let response = match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            if response.extensions().get::<DropConnection>().is_some() {
                Err(ConnectionDropped)
            } else {
                Ok::<_, ConnectionDropped>(response)
            }
        }
    });
    if let Err(error) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await
    {
        tracing::debug!(%error, "connection ended with an error");
    }
}
