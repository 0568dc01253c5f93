//! Delivering a notice to a webhook: one POST with a timeout, the idempotency key also in
//! the `Idempotency-Key` header.

use std::time::Duration;

use super::DeliveryError;
use super::config::{Webhook, WebhookFormat};
use super::payload::Notice;

/// The header that repeats the idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// A client for `hook`: its timeout, its extra CA, no redirects (a redirect could take the
/// message to a host the administrator never named), no proxy from the environment.
pub fn client(hook: &Webhook) -> Result<reqwest::Client, DeliveryError> {
    let mut builder = reqwest::Client::builder()
        .timeout(hook.timeout)
        .connect_timeout(hook.timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("sforg-operator/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = &hook.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
            DeliveryError::permanent(format!("the channel's ca does not parse: {e}"))
        })?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| DeliveryError::permanent(format!("cannot build an HTTP client: {e}")))
}

/// POSTs `notice` to `hook`.
pub async fn send(hook: &Webhook, notice: &Notice) -> Result<(), DeliveryError> {
    let client = client(hook)?;
    let body = match hook.format {
        WebhookFormat::Json => serde_json::to_value(notice).unwrap_or_default(),
        WebhookFormat::Slack => notice.slack(),
    };
    let mut request = client
        .post(hook.url.clone())
        .header(IDEMPOTENCY_HEADER, &notice.idempotency_key)
        .json(&body);
    for (name, value) in &hook.headers {
        request = request.header(name.as_str(), value.expose());
    }
    let response = request.send().await.map_err(|e| {
        // reqwest's message names the host, never the headers.
        let what = if e.is_timeout() {
            format!("no answer within {:?}", hook.timeout)
        } else if e.is_connect() {
            format!("cannot connect (or TLS failed): {}", source_chain(&e))
        } else {
            source_chain(&e)
        };
        DeliveryError::transient(format!("POST {}: {what}", redacted(&hook.url)))
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let message = format!("POST {} answered {status}", redacted(&hook.url));
    // 408, 429 and 5xx may pass later; other 4xx will not.
    if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
        Err(DeliveryError::transient(message))
    } else {
        Err(DeliveryError::permanent(message))
    }
}

/// The URL without its path and query, which often hold the webhook's secret (Slack's do).
fn redacted(url: &url::Url) -> String {
    format!("{}://{}", url.scheme(), url.host_str().unwrap_or("?"))
        + &url.port().map(|p| format!(":{p}")).unwrap_or_default()
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let out = super::error_chain(e);
    // reqwest prints the full URL; keep only the host part.
    match out.find("for url (") {
        Some(i) => {
            let end = out[i..].find(')').map_or(out.len(), |j| i + j + 1);
            format!("{}{}", &out[..i], &out[end..])
        }
        None => out,
    }
}
