//! The re-auth link written to `status.reauth`: where it points, how long it lives, and
//! whether a link already in status still works, so the reconciler rewrites it only when
//! it must.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use url::Url;

use super::state::{self, LinkClaims, Purpose, StateKey};
use crate::crd::ReauthLink;

/// How long a link in status works by default.
pub const DEFAULT_LINK_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The path of the OAuth callback under the public URL.
pub const CALLBACK_PATH: &str = "/oauth/callback";

/// A public URL that cannot serve links.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "the public URL {0:?} is not usable: give the http(s) base URL at which browsers reach the operator's callback server, without query or fragment, for example https://sforg.example.com"
)]
pub struct PublicUrlError(pub String);

/// Issues and checks re-auth links. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Links {
    /// The public base URL, without a trailing slash.
    base: String,
    /// Its path, without a trailing slash ("" at the root).
    prefix: String,
    secure: bool,
    key: StateKey,
    lifetime: Duration,
}

impl Links {
    /// Links under `public_url` (the callback server's address as browsers see it), signed
    /// with `key`, valid for `lifetime`.
    pub fn new(
        public_url: &str,
        key: StateKey,
        lifetime: Duration,
    ) -> Result<Self, PublicUrlError> {
        let err = || PublicUrlError(public_url.to_owned());
        let url = Url::parse(public_url).map_err(|_| err())?;
        let ok = matches!(url.scheme(), "http" | "https")
            && url.host_str().is_some()
            && url.query().is_none()
            && url.fragment().is_none()
            && url.username().is_empty()
            && url.password().is_none();
        if !ok {
            return Err(err());
        }
        let base = url.as_str().trim_end_matches('/').to_owned();
        let prefix = url.path().trim_end_matches('/').to_owned();
        Ok(Self {
            base,
            prefix,
            secure: url.scheme() == "https",
            key,
            lifetime,
        })
    }

    /// The signing key (also signs the OAuth `state`).
    pub fn key(&self) -> &StateKey {
        &self.key
    }

    /// The `redirect_uri` to configure in the Connected App or External Client App.
    pub fn callback_url(&self) -> String {
        format!("{}{CALLBACK_PATH}", self.base)
    }

    /// The callback's path as the server sees it.
    pub fn callback_path(&self) -> String {
        format!("{}{CALLBACK_PATH}", self.prefix)
    }

    /// The path prefix under which the server answers ("" at the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether browsers reach the server over https (cookies are then `Secure`).
    pub fn secure(&self) -> bool {
        self.secure
    }

    fn url_for(&self, ns: &str, name: &str) -> String {
        format!("{}/reauth/{ns}/{name}?t=", self.base)
    }

    /// A link for the org, valid from `now` for the configured lifetime.
    pub fn issue(&self, ns: &str, name: &str, uid: &str, now: Timestamp) -> ReauthLink {
        let exp = now
            .as_second()
            .saturating_add(self.lifetime.as_secs() as i64);
        let claims = LinkClaims {
            ns: ns.to_owned(),
            name: name.to_owned(),
            uid: uid.to_owned(),
            exp,
        };
        let token = state::sign(&self.key, Purpose::Link, &claims);
        ReauthLink {
            url: format!("{}{token}", self.url_for(ns, name)),
            expires_at: Time(Timestamp::from_second(exp).unwrap_or(now)),
        }
    }

    /// Whether a link (from status) is one this operator would accept now for this org: same
    /// public URL, same key, same org, not expired, and its `expiresAt` is the token's.
    pub fn verifies(
        &self,
        link: &ReauthLink,
        ns: &str,
        name: &str,
        uid: &str,
        now: Timestamp,
    ) -> bool {
        let Some(token) = link.url.strip_prefix(&self.url_for(ns, name)) else {
            return false;
        };
        match state::verify::<LinkClaims>(&self.key, Purpose::Link, token, now.as_second()) {
            Ok(c) => {
                c.ns == ns
                    && c.name == name
                    && c.uid == uid
                    && c.exp == link.expires_at.0.as_second()
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap_or_default()
    }

    fn links(url: &str) -> Links {
        Links::new(
            url,
            StateKey::from_bytes(&[3; 32]).unwrap(),
            DEFAULT_LINK_LIFETIME,
        )
        .unwrap()
    }

    #[test]
    fn public_urls() {
        let l = links("https://sforg.example.com/");
        assert_eq!(l.callback_url(), "https://sforg.example.com/oauth/callback");
        assert_eq!(l.callback_path(), "/oauth/callback");
        assert!(l.secure());
        let l = links("http://127.0.0.1:8080/ops/sforg");
        assert_eq!(
            l.callback_url(),
            "http://127.0.0.1:8080/ops/sforg/oauth/callback"
        );
        assert_eq!(l.prefix(), "/ops/sforg");
        assert!(!l.secure());
        let key = StateKey::generate();
        for bad in [
            "sforg.example.com",
            "ftp://x",
            "https://x/?a=1",
            "https://x/#f",
            "https://u:p@x/",
        ] {
            assert!(
                Links::new(bad, key.clone(), DEFAULT_LINK_LIFETIME).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn issued_links_verify_for_their_org_only() {
        let l = links("https://sforg.example.com");
        let link = l.issue("backups", "acme", "uid-1", now());
        assert!(
            link.url
                .starts_with("https://sforg.example.com/reauth/backups/acme?t=")
        );
        assert_eq!(link.expires_at.0.as_second(), now().as_second() + 24 * 3600);
        assert!(l.verifies(&link, "backups", "acme", "uid-1", now()));
        assert!(
            !l.verifies(&link, "backups", "acme", "uid-2", now()),
            "recreated org"
        );
        assert!(!l.verifies(&link, "backups", "other", "uid-1", now()));
        let later = now() + k8s_openapi::jiff::SignedDuration::from_hours(25);
        assert!(
            !l.verifies(&link, "backups", "acme", "uid-1", later),
            "expired"
        );
        let moved = links("https://new.example.com");
        assert!(
            !moved.verifies(&link, "backups", "acme", "uid-1", now()),
            "new URL"
        );
        let rekeyed = Links::new(
            "https://sforg.example.com",
            StateKey::generate(),
            DEFAULT_LINK_LIFETIME,
        )
        .unwrap();
        assert!(
            !rekeyed.verifies(&link, "backups", "acme", "uid-1", now()),
            "new key"
        );
        let mut edited = link.clone();
        edited.expires_at = Time(later);
        assert!(
            !l.verifies(&edited, "backups", "acme", "uid-1", now()),
            "expiresAt edited"
        );
    }
}
