//! Which hosts may receive credentials.
//!
//! Anyone who can create a SalesforceOrg chooses its `loginUrl`, and Salesforce chooses its
//! `instance_url`. Neither may make the operator send a client secret, refresh token or access
//! token elsewhere: every outgoing request is checked against domains the cluster administrator
//! allows (Salesforce's own by default, custom domains by configuration).

use url::Url;

/// The domains Salesforce serves OAuth and APIs from.
pub const DEFAULT_DOMAINS: &[&str] = &["salesforce.com", "force.com"];

/// Why a URL may not receive credentials.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum HostError {
    /// Not a URL at all.
    #[error("{0:?} is not a valid URL")]
    Invalid(String),
    /// Not HTTPS.
    #[error("{0:?} is not https; Salesforce credentials are only ever sent over https")]
    NotHttps(String),
    /// A host outside the allowlist.
    #[error(
        "host {host:?} is not an allowed Salesforce login domain; a cluster administrator can allow it with --allowed-login-domain {host}"
    )]
    NotAllowed {
        /// The refused host.
        host: String,
    },
}

/// Domains (and their subdomains) that may receive credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostAllowlist {
    domains: Vec<String>,
}

impl Default for HostAllowlist {
    fn default() -> Self {
        Self::new(DEFAULT_DOMAINS.iter().copied())
    }
}

impl HostAllowlist {
    /// An allowlist of the given domains; each also allows its subdomains. Case, a leading dot
    /// and a trailing dot are ignored.
    pub fn new<I, S>(domains: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let domains = domains
            .into_iter()
            .map(|d| d.as_ref().trim().trim_matches('.').to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .collect();
        Self { domains }
    }

    /// The normalized domains.
    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    /// Whether the host is one of the domains or below one.
    pub fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.domains.iter().any(|d| {
            host == *d
                || (host.len() > d.len()
                    && host.ends_with(d.as_str())
                    && host.as_bytes()[host.len() - d.len() - 1] == b'.')
        })
    }

    /// Checks a URL before anything secret is sent to it.
    pub fn check(&self, url: &str) -> Result<Url, HostError> {
        let parsed = Url::parse(url).map_err(|_| HostError::Invalid(url.to_owned()))?;
        if parsed.scheme() != "https" {
            return Err(HostError::NotHttps(url.to_owned()));
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            // An IP literal is never a Salesforce host.
            Some(other) => {
                return Err(HostError::NotAllowed {
                    host: other.to_string(),
                });
            }
            None => return Err(HostError::Invalid(url.to_owned())),
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(HostError::Invalid(url.to_owned()));
        }
        if self.allows_host(&host) {
            Ok(parsed)
        } else {
            Err(HostError::NotAllowed { host })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_allowlist_table() {
        let allow = HostAllowlist::default();
        let cases: &[(&str, bool)] = &[
            ("https://login.salesforce.com", true),
            ("https://test.salesforce.com/", true),
            ("https://acme.my.salesforce.com", true),
            ("https://acme--dev.sandbox.my.salesforce.com", true),
            ("https://na1.salesforce.com", true),
            ("https://acme.lightning.force.com", true),
            ("https://LOGIN.SALESFORCE.COM", true),
            ("https://salesforce.com.evil.example", false),
            ("https://evilsalesforce.com", false),
            ("https://login.salesforce.com.", true),
            ("http://login.salesforce.com", false),
            ("https://127.0.0.1", false),
            ("https://[::1]", false),
            ("https://user:pw@login.salesforce.com", false),
            ("not a url", false),
        ];
        for (url, ok) in cases {
            assert_eq!(allow.check(url).is_ok(), *ok, "{url}");
        }
    }

    #[test]
    fn custom_domains_extend_and_normalize() {
        let allow = HostAllowlist::new([".Example.COM.", "", "salesforce.com"]);
        assert_eq!(allow.domains(), ["example.com", "salesforce.com"]);
        assert!(allow.allows_host("login.example.com"));
        assert!(!allow.allows_host("example.org"));
        assert_eq!(
            allow.check("https://evil.test").unwrap_err(),
            HostError::NotAllowed {
                host: "evil.test".into()
            }
        );
    }
}
