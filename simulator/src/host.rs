//! Which Salesforce host a request addressed. Behind the proxy every host lands on the
//! same listener, so the `Host` header is what tells login, test and My Domain apart.

use axum::http::{HeaderMap, Uri, header};

use crate::state::Org;

/// The kind of host a request was sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SfHost {
    /// `login.salesforce.com` (`sandbox: false`) or `test.salesforce.com` (`sandbox: true`).
    Login { sandbox: bool },
    /// A My Domain host such as `acme.my.salesforce.com`.
    MyDomain(String),
    /// Anything else (the plain HTTP port reached as `127.0.0.1:PORT`): accepts every org.
    Other(String),
}

impl SfHost {
    pub fn classify(host: &str) -> SfHost {
        let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
        match host.as_str() {
            "login.salesforce.com" => SfHost::Login { sandbox: false },
            "test.salesforce.com" => SfHost::Login { sandbox: true },
            h if h.ends_with(".my.salesforce.com") => SfHost::MyDomain(host),
            _ => SfHost::Other(host),
        }
    }

    /// The host named by the request: `Host` header, else the URI authority; port removed.
    pub fn from_request(headers: &HeaderMap, uri: &Uri) -> SfHost {
        let raw = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| uri.authority().map(|a| a.as_str().to_string()))
            .unwrap_or_default();
        SfHost::classify(strip_port(&raw))
    }

    /// Whether an org's users and tokens are served on this host (login vs test, or the
    /// org's own My Domain).
    pub(crate) fn admits(&self, org: &Org) -> bool {
        match self {
            SfHost::Login { sandbox } => org.kind.is_sandbox() == *sandbox,
            SfHost::MyDomain(h) => *h == org.my_domain_host,
            SfHost::Other(_) => true,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            SfHost::Login { sandbox: false } => "login.salesforce.com",
            SfHost::Login { sandbox: true } => "test.salesforce.com",
            SfHost::MyDomain(h) | SfHost::Other(h) => h,
        }
    }

    /// `https://host` for Salesforce hosts, `http://host` otherwise (plain port).
    pub fn base_url(&self, raw_host_with_port: &str) -> String {
        match self {
            SfHost::Other(_) => format!("http://{raw_host_with_port}"),
            _ => format!("https://{}", self.name()),
        }
    }
}

/// Removes a `:port` suffix (IPv6 literals in brackets are kept whole).
pub fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Hosts the proxy tunnels to the simulator.
pub fn is_simulated_host(host: &str) -> bool {
    let h = host.to_ascii_lowercase();
    h == "salesforce.com" || h.ends_with(".salesforce.com") || h == "localhost" || h == "127.0.0.1"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_hosts() {
        assert_eq!(
            SfHost::classify("login.salesforce.com"),
            SfHost::Login { sandbox: false }
        );
        assert_eq!(
            SfHost::classify("TEST.salesforce.com"),
            SfHost::Login { sandbox: true }
        );
        assert_eq!(
            SfHost::classify("acme--uat.sandbox.my.salesforce.com"),
            SfHost::MyDomain("acme--uat.sandbox.my.salesforce.com".into())
        );
        assert!(matches!(SfHost::classify("127.0.0.1"), SfHost::Other(_)));
        assert_eq!(
            strip_port("login.salesforce.com:443"),
            "login.salesforce.com"
        );
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert!(is_simulated_host("acme.my.salesforce.com"));
        assert!(!is_simulated_host("evil-salesforce.com"));
    }
}
