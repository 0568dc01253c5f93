//! Which hosts may receive credentials.
//!
//! Anyone who can create a SalesforceOrg chooses its `loginUrl`, and Salesforce chooses its
//! `instance_url`. Neither may make the operator send a client secret, refresh token or access
//! token elsewhere: every outgoing request is checked against domains the cluster administrator
//! allows (Salesforce's own by default, custom domains by configuration).

use url::Url;

/// The domains Salesforce serves OAuth and APIs from.
pub const DEFAULT_DOMAINS: &[&str] = &["salesforce.com", "force.com"];

/// The port Salesforce serves HTTPS on; others only when an administrator allows them.
pub const HTTPS_PORT: u16 = 443;

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
    /// A port other than 443 that the administrator did not allow.
    #[error(
        "port {port} of {host:?} is not allowed: Salesforce serves https on 443 only; a cluster administrator can allow it with --allowed-login-port {port}"
    )]
    PortNotAllowed {
        /// The host.
        host: String,
        /// The refused port.
        port: u16,
    },
}

/// Why an administrator's `--allowed-login-domain` entry is refused at start.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DomainError {
    /// Not a domain name.
    #[error(
        "--allowed-login-domain {entry:?} is not a domain name ({why}); give a domain such as login.acme.example"
    )]
    Malformed {
        /// The entry as given.
        entry: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A public suffix: anyone can register a host below it.
    #[error(
        "--allowed-login-domain {entry:?} is a public suffix: anyone can register a host under {suffix:?}, so allowing it would let credentials go to hosts nobody here controls; give your organization's own domain, for example acme.{suffix}"
    )]
    PublicSuffix {
        /// The entry as given.
        entry: String,
        /// The normalized suffix.
        suffix: String,
    },
}

/// Checks and normalizes one `--allowed-login-domain` entry: a DNS name (lower case, no
/// leading or trailing dot), never a URL, a port, a wildcard, an IP address or a public
/// suffix (`com`, `co.uk`, `herokuapp.com`: a domain anyone can register names under).
pub fn validate_domain(entry: &str) -> Result<String, DomainError> {
    let malformed = |why| DomainError::Malformed {
        entry: entry.to_owned(),
        why,
    };
    let trimmed = entry.trim();
    if trimmed.contains("://") || trimmed.contains('/') {
        return Err(malformed("a URL: give only its host name"));
    }
    if trimmed.contains('*') {
        return Err(malformed(
            "wildcards are not needed: a domain already allows all its subdomains",
        ));
    }
    if trimmed.contains(':') {
        return Err(malformed(
            "a port does not belong here: allow one with --allowed-login-port",
        ));
    }
    if !trimmed.is_ascii() {
        return Err(malformed(
            "not ASCII: give an internationalized name in its xn-- form",
        ));
    }
    let domain = trimmed.strip_prefix('.').unwrap_or(trimmed);
    let domain = domain
        .strip_suffix('.')
        .unwrap_or(domain)
        .to_ascii_lowercase();
    if domain.is_empty() {
        return Err(malformed("empty"));
    }
    if domain.len() > 253 {
        return Err(malformed("longer than 253 characters"));
    }
    if domain.parse::<std::net::IpAddr>().is_ok() {
        return Err(malformed("an IP address is never a Salesforce host"));
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Err(malformed("an empty label (two dots in a row)"));
        }
        if label.len() > 63 {
            return Err(malformed("a label longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(malformed(
                "only letters, digits, hyphens and dots are allowed",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(malformed("a label starts or ends with a hyphen"));
        }
    }
    // Single labels count too: an unlisted top-level domain is a suffix by the list's rule.
    if psl::suffix_str(&domain) == Some(domain.as_str()) {
        return Err(DomainError::PublicSuffix {
            entry: entry.to_owned(),
            suffix: domain,
        });
    }
    Ok(domain)
}

/// Domains (and their subdomains) that may receive credentials, and on which ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostAllowlist {
    domains: Vec<String>,
    /// Ports besides 443.
    extra_ports: Vec<u16>,
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
        Self {
            domains,
            extra_ports: Vec::new(),
        }
    }

    /// Salesforce's domains plus an administrator's entries, each checked by
    /// [`validate_domain`]; the first bad entry is the error.
    pub fn from_admin<S: AsRef<str>>(extra: &[S]) -> Result<Self, DomainError> {
        let extra = extra
            .iter()
            .map(|d| validate_domain(d.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(
            DEFAULT_DOMAINS.iter().map(|d| d.to_string()).chain(extra),
        ))
    }

    /// Also allows these ports (443 always is).
    pub fn with_ports(mut self, ports: impl IntoIterator<Item = u16>) -> Self {
        self.extra_ports
            .extend(ports.into_iter().filter(|p| *p != HTTPS_PORT));
        self.extra_ports.sort_unstable();
        self.extra_ports.dedup();
        self
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
        if !self.allows_host(&host) {
            return Err(HostError::NotAllowed { host });
        }
        // One spelling per host: `url` already lower-cases it and drops an explicit :443; a
        // trailing dot (the same DNS name) goes too, so TLS names and comparisons match.
        let mut parsed = parsed;
        if let Some(bare) = host.strip_suffix('.')
            && parsed.set_host(Some(bare)).is_err()
        {
            return Err(HostError::Invalid(url.to_owned()));
        }
        let host = host.trim_end_matches('.').to_owned();
        // `port()` is `None` for https's default, whichever way the URL spelled it.
        match parsed.port() {
            Some(port) if !self.extra_ports.contains(&port) => {
                Err(HostError::PortNotAllowed { host, port })
            }
            _ => Ok(parsed),
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
            ("https://login.salesforce.com:443", true),
            ("https://login.salesforce.com:8443", false),
            ("https://acme.my.salesforce.com:444/", false),
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

    #[test]
    fn every_spelling_of_a_login_url_is_one_url() {
        let allow = HostAllowlist::default();
        for url in [
            "https://login.salesforce.com",
            "https://LOGIN.Salesforce.COM/",
            "https://login.salesforce.com:443",
            "https://login.salesforce.com.",
            "HTTPS://Login.Salesforce.Com.:443/",
        ] {
            let parsed = allow.check(url).unwrap();
            assert_eq!(parsed.as_str(), "https://login.salesforce.com/", "{url}");
        }
    }

    #[test]
    fn ports_other_than_443_need_an_opt_in() {
        let allow = HostAllowlist::default();
        assert_eq!(
            allow
                .check("https://login.salesforce.com:8443")
                .unwrap_err(),
            HostError::PortNotAllowed {
                host: "login.salesforce.com".into(),
                port: 8443
            }
        );
        let allow = allow.with_ports([8443, 443]);
        assert!(allow.check("https://login.salesforce.com:8443").is_ok());
        assert!(allow.check("https://login.salesforce.com:443").is_ok());
        assert!(allow.check("https://login.salesforce.com:9443").is_err());
    }

    #[test]
    fn administrator_domains_table() {
        // (entry, Ok(normalized) or Err(a word of the message))
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("acme-login.example.com", Ok("acme-login.example.com")),
            ("Login.ACME.example.", Ok("login.acme.example")),
            (".acme.example", Ok("acme.example")),
            (" sso.acme.co.uk ", Ok("sso.acme.co.uk")),
            ("acme.internal", Ok("acme.internal")),
            ("com", Err("public suffix")),
            ("COM.", Err("public suffix")),
            ("co.uk", Err("public suffix")),
            ("herokuapp.com", Err("public suffix")),
            ("github.io", Err("public suffix")),
            ("corp", Err("public suffix")),
            ("", Err("empty")),
            (".", Err("empty")),
            ("https://login.acme.example", Err("URL")),
            ("login.acme.example/path", Err("URL")),
            ("*.acme.example", Err("wildcards")),
            ("login.acme.example:8443", Err("port")),
            ("10.0.0.1", Err("IP address")),
            ("::1", Err("port")),
            ("acme..example", Err("empty label")),
            ("-acme.example", Err("hyphen")),
            ("acme_sso.example", Err("letters, digits")),
            ("bücher.example", Err("xn--")),
            (&"a".repeat(64), Err("63")),
        ];
        for (entry, want) in cases {
            let got = validate_domain(entry);
            match (want, &got) {
                (Ok(want), Ok(got)) => assert_eq!(got, want, "{entry:?}"),
                (Err(word), Err(e)) => {
                    let text = e.to_string();
                    assert!(text.contains(word), "{entry:?}: {text}");
                    assert!(text.contains("--allowed-login-domain"), "{text}");
                }
                _ => panic!("{entry:?}: want {want:?}, got {got:?}"),
            }
        }
        let long = format!("{}.example", ["abcdefghij"; 23].join("."));
        assert!(validate_domain(&long).is_err());
    }

    #[test]
    fn administrator_entries_extend_the_defaults() {
        let allow = HostAllowlist::from_admin(&["SSO.acme.example."]).unwrap();
        assert_eq!(
            allow.domains(),
            ["salesforce.com", "force.com", "sso.acme.example"]
        );
        assert!(HostAllowlist::from_admin(&["acme.example", "com"]).is_err());
        assert_eq!(
            HostAllowlist::from_admin::<&str>(&[]).unwrap(),
            HostAllowlist::default()
        );
    }
}
