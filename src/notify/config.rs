//! The administrator's notification channels: a Secret holding `channels.yaml`, read by name
//! and watched, so a change is picked up without a restart. An invalid Secret keeps the last
//! good channels and says why (a log line and `sforg_notification_config_valid 0`).
//!
//! ```yaml
//! team-webhook:
//!   kind: webhook
//!   url: https://hooks.example.com/sforg
//!   format: json            # or slack: {"text": ...} for Slack/Teams incoming webhooks
//!   headers: {Authorization: Bearer abc}
//!   timeout: 10s
//! admins-mail:
//!   kind: email
//!   host: smtp.example.com
//!   port: 587
//!   tls: starttls           # or implicit (port 465)
//!   username: sforg
//!   password: secret
//!   from: sforg-operator@example.com
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde::Deserialize;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::secret::SecretString;

/// The key of the channels Secret that holds the channel definitions.
pub const CHANNELS_KEY: &str = "channels.yaml";
/// The default timeout of one delivery attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A channels Secret that cannot be used, naming the field at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The Secret lacks the key.
    #[error("the channels Secret has no key {CHANNELS_KEY:?}: put the channel definitions there")]
    MissingKey,
    /// The YAML does not parse.
    #[error("{CHANNELS_KEY} is not a YAML map of channel names to channels: {0}")]
    Yaml(String),
    /// A channel is wrong.
    #[error("channel {channel:?}, field {field}: {problem}")]
    Field {
        /// The channel's name.
        channel: String,
        /// The field at fault.
        field: String,
        /// What is wrong and what to write.
        problem: String,
    },
}

/// How a webhook's body looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WebhookFormat {
    /// The documented, versioned payload (see [`super::payload`]).
    #[default]
    Json,
    /// `{"text": ...}` with the link, for Slack or Teams incoming webhooks.
    Slack,
}

/// How to reach an SMTP server securely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required; port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Implicit,
}

/// One webhook channel.
#[derive(Clone, Debug)]
pub struct Webhook {
    /// Where to POST.
    pub url: url::Url,
    /// Extra headers (for example Authorization).
    pub headers: BTreeMap<String, SecretString>,
    /// Body format.
    pub format: WebhookFormat,
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// Extra CA certificates (PEM) to trust.
    pub ca_pem: Option<String>,
}

/// One email channel.
#[derive(Clone, Debug)]
pub struct Email {
    /// SMTP host (also the name the certificate must carry).
    pub host: String,
    /// SMTP port.
    pub port: u16,
    /// STARTTLS or implicit TLS.
    pub tls: SmtpTls,
    /// Login, when the server wants AUTH.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<SecretString>,
    /// The From address.
    pub from: String,
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// Extra CA certificates (PEM) to trust.
    pub ca_pem: Option<String>,
}

/// A channel by kind.
#[derive(Clone, Debug)]
pub enum Channel {
    /// POST JSON.
    Webhook(Webhook),
    /// Send mail.
    Email(Email),
}

impl Channel {
    /// The kind's name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Webhook(_) => "webhook",
            Channel::Email(_) => "email",
        }
    }
}

/// Every channel, by name.
#[derive(Clone, Debug, Default)]
pub struct Channels(pub BTreeMap<String, Channel>);

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
enum RawChannel {
    Webhook {
        url: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        format: Option<String>,
        #[serde(default)]
        timeout: Option<String>,
        #[serde(default)]
        ca: Option<String>,
    },
    Email {
        host: String,
        port: u16,
        tls: String,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<String>,
        from: String,
        #[serde(default)]
        timeout: Option<String>,
        #[serde(default)]
        ca: Option<String>,
    },
}

fn field(channel: &str, field: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        channel: channel.to_owned(),
        field: field.to_owned(),
        problem: problem.into(),
    }
}

fn timeout(name: &str, text: Option<String>) -> Result<Duration, ConfigError> {
    match text {
        None => Ok(DEFAULT_TIMEOUT),
        Some(t) => crate::cli::parse_duration(&t)
            .ok()
            .filter(|d| !d.is_zero() && *d <= Duration::from_secs(300))
            .ok_or_else(|| {
                field(
                    name,
                    "timeout",
                    format!("{t:?} is not a duration between 1ms and 5m, for example 10s"),
                )
            }),
    }
}

fn ca(name: &str, pem: Option<String>) -> Result<Option<String>, ConfigError> {
    match pem {
        Some(p) if !p.contains("-----BEGIN CERTIFICATE-----") => Err(field(
            name,
            "ca",
            "must hold PEM certificates (-----BEGIN CERTIFICATE-----)",
        )),
        other => Ok(other),
    }
}

fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn check(name: &str, raw: RawChannel) -> Result<Channel, ConfigError> {
    match raw {
        RawChannel::Webhook {
            url,
            headers,
            format,
            timeout: t,
            ca: c,
        } => {
            let parsed = url::Url::parse(&url)
                .ok()
                .filter(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some())
                .ok_or_else(|| {
                    field(
                        name,
                        "url",
                        "must be an http(s) URL, for example https://hooks.example.com/sforg",
                    )
                })?;
            if !parsed.username().is_empty() || parsed.password().is_some() {
                return Err(field(
                    name,
                    "url",
                    "must not carry a user or password; use headers",
                ));
            }
            for header in headers.keys() {
                if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                    return Err(field(
                        name,
                        &format!("headers.{header}"),
                        "is not a valid HTTP header name",
                    ));
                }
            }
            let format = match format.as_deref() {
                None | Some("json") => WebhookFormat::Json,
                Some("slack") => WebhookFormat::Slack,
                Some(other) => {
                    return Err(field(
                        name,
                        "format",
                        format!("{other:?} is not json or slack"),
                    ));
                }
            };
            Ok(Channel::Webhook(Webhook {
                url: parsed,
                headers: headers
                    .into_iter()
                    .map(|(k, v)| (k, SecretString::from(v)))
                    .collect(),
                format,
                timeout: timeout(name, t)?,
                ca_pem: ca(name, c)?,
            }))
        }
        RawChannel::Email {
            host,
            port,
            tls,
            username,
            password,
            from,
            timeout: t,
            ca: c,
        } => {
            if host.is_empty() || host.contains(['/', ':', ' ']) {
                return Err(field(
                    name,
                    "host",
                    "must be a host name, for example smtp.example.com",
                ));
            }
            if port == 0 {
                return Err(field(
                    name,
                    "port",
                    "must be a port number, for example 587",
                ));
            }
            let tls = match tls.as_str() {
                "starttls" => SmtpTls::StartTls,
                "implicit" => SmtpTls::Implicit,
                other => {
                    return Err(field(
                        name,
                        "tls",
                        format!("{other:?} is not starttls or implicit"),
                    ));
                }
            };
            if password.is_some() != username.is_some() {
                return Err(field(name, "password", "username and password go together"));
            }
            if from.parse::<lettre::message::Mailbox>().is_err() {
                return Err(field(
                    name,
                    "from",
                    format!("{from:?} is not an email address"),
                ));
            }
            Ok(Channel::Email(Email {
                host,
                port,
                tls,
                username,
                password: password.map(SecretString::from),
                from,
                timeout: timeout(name, t)?,
                ca_pem: ca(name, c)?,
            }))
        }
    }
}

/// Parses `channels.yaml`.
pub fn parse(yaml: &str) -> Result<Channels, ConfigError> {
    let raw: BTreeMap<String, serde_json::Value> = if yaml.trim().is_empty() {
        BTreeMap::new()
    } else {
        serde_saphyr::from_str(yaml).map_err(|e| ConfigError::Yaml(e.to_string()))?
    };
    let mut channels = BTreeMap::new();
    for (name, value) in raw {
        if !name_ok(&name) {
            return Err(field(
                &name,
                "name",
                "must be lowercase letters, digits and '-', at most 63",
            ));
        }
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .map(str::to_owned);
        let raw: RawChannel = serde_json::from_value(value).map_err(|e| match kind.as_deref() {
            Some("webhook" | "email") => {
                field(&name, &missing_field(&e.to_string()), e.to_string())
            }
            Some(other) => field(&name, "kind", format!("{other:?} is not webhook or email")),
            None => field(&name, "kind", "missing: set kind: webhook or kind: email"),
        })?;
        channels.insert(name.clone(), check(&name, raw)?);
    }
    Ok(Channels(channels))
}

/// The field a serde message is about (`missing field `url``, `unknown field `x``).
fn missing_field(message: &str) -> String {
    message
        .split('`')
        .nth(1)
        .map_or_else(|| "(channel)".to_owned(), str::to_owned)
}

/// Parses a channels Secret.
pub fn from_secret(secret: &Secret) -> Result<Channels, ConfigError> {
    let data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(CHANNELS_KEY))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(CHANNELS_KEY).cloned())
        })
        .ok_or(ConfigError::MissingKey)?;
    parse(&data)
}

/// The channels in force, shared with the delivery worker.
#[derive(Clone, Debug, Default)]
pub struct Store(Arc<RwLock<Channels>>);

impl Store {
    /// A store holding `channels` (tests and start-up).
    pub fn with(channels: Channels) -> Self {
        Self(Arc::new(RwLock::new(channels)))
    }

    /// The channel named `name`.
    pub fn get(&self, name: &str) -> Option<Channel> {
        self.0.read().ok()?.0.get(name).cloned()
    }

    /// Replaces the channels.
    pub fn set(&self, channels: Channels) {
        if let Ok(mut slot) = self.0.write() {
            *slot = channels;
        }
    }
}

/// Watches the channels Secret `namespace/name` (that one object) and keeps `store` current
/// until the task is dropped. An invalid version keeps the last good channels.
pub async fn watch(api: Api<Secret>, name: String, store: Store, metrics: Option<Arc<Metrics>>) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api, config)
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(secret) => match from_secret(&secret) {
                Ok(channels) => {
                    info!(secret = %name, channels = ?channels.0.keys().collect::<Vec<_>>(), "notification channels loaded");
                    store.set(channels);
                    if let Some(m) = &metrics {
                        m.set_notification_config_valid(true);
                    }
                }
                Err(e) => {
                    warn!(secret = %name, error = %e, "the notification channels Secret is invalid; keeping the last good channels");
                    if let Some(m) = &metrics {
                        m.set_notification_config_valid(false);
                    }
                }
            },
            Err(e) => {
                warn!(secret = %name, error = %e, "watching the notification channels Secret failed; retrying")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_kinds() {
        let yaml = r#"
team-hook:
  kind: webhook
  url: https://hooks.example.com/x
  format: slack
  headers: {Authorization: Bearer abc}
  timeout: 2s
mail:
  kind: email
  host: smtp.example.com
  port: 587
  tls: starttls
  username: u
  password: p
  from: sforg@example.com
"#;
        let got = parse(yaml).unwrap();
        match got.0.get("team-hook").unwrap() {
            Channel::Webhook(w) => {
                assert_eq!(w.format, WebhookFormat::Slack);
                assert_eq!(w.timeout, Duration::from_secs(2));
                assert_eq!(w.headers.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        match got.0.get("mail").unwrap() {
            Channel::Email(e) => {
                assert_eq!(e.tls, SmtpTls::StartTls);
                assert_eq!(e.port, 587);
                assert_eq!(e.timeout, DEFAULT_TIMEOUT);
            }
            other => panic!("{other:?}"),
        }
        // Debug never shows secrets.
        assert!(!format!("{got:?}").contains("Bearer abc"));
        assert_eq!(parse("").unwrap().0.len(), 0);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("h: {kind: webhook}", "channel \"h\", field url"),
            (
                "h: {kind: webhook, url: 'ftp://x'}",
                "channel \"h\", field url",
            ),
            (
                "h: {kind: webhook, url: 'https://x', format: xml}",
                "field format",
            ),
            (
                "h: {kind: webhook, url: 'https://x', timeout: soon}",
                "field timeout",
            ),
            (
                "h: {kind: webhook, url: 'https://x', colour: red}",
                "field colour",
            ),
            ("h: {kind: pigeon}", "field kind"),
            ("h: {url: 'https://x'}", "field kind"),
            ("Bad_Name: {kind: webhook, url: 'https://x'}", "field name"),
            (
                "m: {kind: email, host: h, port: 25, tls: none, from: a@b.c}",
                "field tls",
            ),
            (
                "m: {kind: email, host: h, port: 25, tls: starttls, from: nobody}",
                "field from",
            ),
            (
                "m: {kind: email, port: 25, tls: starttls, from: a@b.c}",
                "field host",
            ),
            (
                "m: {kind: email, host: h, port: 25, tls: starttls, from: a@b.c, username: u}",
                "field password",
            ),
            (
                "m: {kind: email, host: h, port: 25, tls: starttls, from: a@b.c, ca: nope}",
                "field ca",
            ),
            ("[1, 2]", "not a YAML map"),
        ];
        for (yaml, want) in cases {
            let got = parse(yaml).map(|_| ()).unwrap_err().to_string();
            assert!(got.contains(want), "{yaml}: {got}");
        }
    }
}
