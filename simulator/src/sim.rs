//! Starting and stopping the simulator: binds the four loopback listeners (CONNECT
//! proxy, HTTPS, plain HTTP, control), generates the CA, and hands back a [`Simulator`]
//! handle that dereferences to [`Control`].

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::control::{Control, Shared};
use crate::error::SimError;
use crate::{control_http, proxy, router, server, tls};

/// Ports to listen on (all on 127.0.0.1); 0 picks a free port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimConfig {
    pub proxy_port: u16,
    pub https_port: u16,
    pub http_port: u16,
    /// `None`: no control HTTP listener (the Rust API is always available).
    pub control_port: Option<u16>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            proxy_port: 0,
            https_port: 0,
            http_port: 0,
            control_port: Some(0),
        }
    }
}

/// Where the simulator listens; also the binary's "ready" line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyInfo {
    /// `http://127.0.0.1:PORT`: give it to the HTTP client as its HTTPS proxy.
    pub proxy_url: String,
    pub proxy_port: u16,
    /// The TLS listener the proxy tunnels to.
    pub https_port: u16,
    pub http_port: u16,
    /// `http://127.0.0.1:PORT`: the same Salesforce endpoints over plain HTTP.
    pub http_url: String,
    pub control_port: Option<u16>,
    /// `http://127.0.0.1:PORT` (routes under `/_sim/`).
    pub control_url: Option<String>,
}

/// A running simulator. Dropping it stops the listeners.
pub struct Simulator {
    control: Control,
    info: Arc<ReadyInfo>,
    ca_pem: Arc<String>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(port: u16) -> Result<TcpListener, SimError> {
    Ok(TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?)
}

impl Simulator {
    /// Starts on random ports with an empty Salesforce (see [`Control::seed_demo`]).
    pub async fn start() -> Result<Simulator, SimError> {
        Self::start_with(SimConfig::default()).await
    }

    pub async fn start_with(config: SimConfig) -> Result<Simulator, SimError> {
        let pki = tls::generate()?;
        let shared = Shared::new();
        let control = Control::new(shared.clone());

        let proxy_listener = bind(config.proxy_port).await?;
        let https_listener = bind(config.https_port).await?;
        let http_listener = bind(config.http_port).await?;
        let control_listener = match config.control_port {
            Some(port) => Some(bind(port).await?),
            None => None,
        };
        let https_addr = https_listener.local_addr()?;
        let proxy_port = proxy_listener.local_addr()?.port();
        let http_port = http_listener.local_addr()?.port();
        let control_port = control_listener
            .as_ref()
            .map(|l| l.local_addr().map(|a| a.port()))
            .transpose()?;
        let info = Arc::new(ReadyInfo {
            proxy_url: format!("http://127.0.0.1:{proxy_port}"),
            proxy_port,
            https_port: https_addr.port(),
            http_port,
            http_url: format!("http://127.0.0.1:{http_port}"),
            control_port,
            control_url: control_port.map(|p| format!("http://127.0.0.1:{p}")),
        });
        let ca_pem = Arc::new(pki.ca_pem);

        let (shutdown, watcher) = watch::channel(false);
        let salesforce = router::salesforce_router(shared.clone());
        let acceptor = TlsAcceptor::from(pki.server_config);
        let mut tasks = vec![
            tokio::spawn(server::serve(
                https_listener,
                salesforce.clone(),
                Some(acceptor),
                watcher.clone(),
            )),
            tokio::spawn(server::serve(
                http_listener,
                salesforce,
                None,
                watcher.clone(),
            )),
            tokio::spawn(proxy::run(
                proxy_listener,
                https_addr,
                shared.clone(),
                watcher.clone(),
            )),
        ];
        if let Some(listener) = control_listener {
            let routes = control_http::router(control.clone(), info.clone(), ca_pem.clone());
            tasks.push(tokio::spawn(server::serve(listener, routes, None, watcher)));
        }
        tracing::info!(
            proxy = %info.proxy_url,
            https_port = info.https_port,
            http = %info.http_url,
            control = ?info.control_url,
            "simulator listening"
        );
        Ok(Simulator {
            control,
            info,
            ca_pem,
            shutdown,
            tasks,
        })
    }

    /// `http://127.0.0.1:PORT`, for `reqwest::Proxy::https(...)`.
    pub fn proxy_url(&self) -> &str {
        &self.info.proxy_url
    }

    pub fn https_port(&self) -> u16 {
        self.info.https_port
    }

    /// `http://127.0.0.1:PORT`: the Salesforce endpoints over plain HTTP.
    pub fn http_url(&self) -> &str {
        &self.info.http_url
    }

    /// `http://127.0.0.1:PORT` of the control routes (`/_sim/...`), when enabled.
    pub fn control_url(&self) -> Option<&str> {
        self.info.control_url.as_deref()
    }

    pub fn ready_info(&self) -> &ReadyInfo {
        &self.info
    }

    /// The CA certificate (PEM) to trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn write_ca_pem(&self, path: impl AsRef<Path>) -> Result<(), SimError> {
        std::fs::write(path, self.ca_pem.as_bytes())?;
        Ok(())
    }

    /// The control surface (also reachable through `Deref`).
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Stops the listeners and waits for them.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Deref for Simulator {
    type Target = Control;

    fn deref(&self) -> &Control {
        &self.control
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}
