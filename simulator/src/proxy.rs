//! A minimal HTTP CONNECT proxy. The operator's HTTP client uses it as its HTTPS proxy:
//! Salesforce hosts are tunnelled to the simulator's TLS listener, anything else is
//! refused. Every requested host is recorded so tests can see which hosts were used.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::control::Shared;
use crate::host::{SfHost, is_simulated_host, strip_port};

const MAX_HEAD: usize = 16 * 1024;

pub(crate) async fn run(
    listener: TcpListener,
    upstream: SocketAddr,
    shared: Shared,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tunnels = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    tunnels.spawn(async move {
                        if let Err(error) = handle(stream, upstream, shared).await {
                            tracing::debug!(%error, "proxy connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = tunnels.join_next(), if !tunnels.is_empty() => {}
        }
    }
    tunnels.abort_all();
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

async fn respond(client: &mut TcpStream, status: &str) -> std::io::Result<()> {
    let response = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    client.write_all(response.as_bytes()).await?;
    client.shutdown().await
}

async fn handle(
    mut client: TcpStream,
    upstream: SocketAddr,
    shared: Shared,
) -> std::io::Result<()> {
    let _ = client.set_nodelay(true);
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if client.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return respond(&mut client, "431 Request Header Fields Too Large").await;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut request_line = head.lines().next().unwrap_or_default().split_whitespace();
    let method = request_line.next().unwrap_or_default();
    let target = request_line.next().unwrap_or_default();
    if !method.eq_ignore_ascii_case("CONNECT") {
        return respond(&mut client, "405 Method Not Allowed").await;
    }
    let host = strip_port(target).to_ascii_lowercase();
    shared.proxy_log().push(host.clone());
    if !is_simulated_host(&host) {
        tracing::info!(host, "proxy refused a non-Salesforce host");
        return respond(&mut client, "403 Forbidden").await;
    }
    if let SfHost::MyDomain(domain) = SfHost::classify(&host)
        && shared.state().org_by_host(&domain).is_none()
    {
        tracing::info!(host, "proxy refused an unknown My Domain");
        return respond(&mut client, "502 Bad Gateway").await;
    }
    let mut server = TcpStream::connect(upstream).await?;
    let _ = server.set_nodelay(true);
    client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await?;
    let early = &buf[head_end + 4..];
    if !early.is_empty() {
        server.write_all(early).await?;
    }
    tracing::debug!(host, "tunnel open");
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}
