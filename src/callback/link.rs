//! The re-auth link written to `status.reauth`: where it points, how long it lives, and
//! whether a link already in status still works, so the reconciler rewrites it only when
//! it must.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use url::Url;

use super::state::{self, LinkClaims, Purpose, SigningKeys, StateKey};
use crate::crd::ReauthLink;

/// How long a link in status works by default.
pub const DEFAULT_LINK_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The path of the OAuth callback under the public URL.
pub const CALLBACK_PATH: &str = "/oauth/callback";

/// The path of the form that accepts a login as another Salesforce user than before.
pub const CONFIRM_USER_PATH: &str = "/reauth-confirm-user";

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
    keys: SigningKeys,
    lifetime: Duration,
}

impl Links {
    /// Links under `public_url` (the callback server's address as browsers see it), signed
    /// with the current key of `keys`, valid for `lifetime`.
    pub fn new(
        public_url: &str,
        keys: impl Into<SigningKeys>,
        lifetime: Duration,
    ) -> Result<Self, PublicUrlError> {
        let keys = keys.into();
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
            keys,
            lifetime,
        })
    }

    /// The signing key (also signs the OAuth `state`).
    pub fn key(&self) -> &StateKey {
        self.keys.current()
    }

    /// The keys that verify links and states: the current one and, during a rollover, the
    /// previous one.
    pub fn keys(&self) -> &SigningKeys {
        &self.keys
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

    /// The path of an org's link (its confirmation page) as the server sees it.
    pub fn start_path(&self, ns: &str, name: &str) -> String {
        format!("{}/reauth/{ns}/{name}", self.prefix)
    }

    /// The path of the form that accepts a login as another user.
    pub fn confirm_user_path(&self) -> String {
        format!("{}{CONFIRM_USER_PATH}", self.prefix)
    }

    fn url_for(&self, ns: &str, name: &str) -> String {
        format!("{}/reauth/{ns}/{name}?t=", self.base)
    }

    /// A link for the org at `generation`, valid from `now` for the configured lifetime.
    pub fn issue(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
        generation: i64,
        now: Timestamp,
    ) -> ReauthLink {
        let exp = now
            .as_second()
            .saturating_add(self.lifetime.as_secs() as i64);
        let claims = LinkClaims {
            ns: ns.to_owned(),
            name: name.to_owned(),
            uid: uid.to_owned(),
            generation,
            id: state::new_nonce(),
            exp,
        };
        let token = state::sign(self.keys.current(), Purpose::Link, &claims);
        ReauthLink {
            url: format!("{}{token}", self.url_for(ns, name)),
            expires_at: Time(Timestamp::from_second(exp).unwrap_or(now)),
        }
    }

    /// Whether a link (from status) is one this operator would write now for this org: same
    /// public URL, signed with the current key (a link of the previous key still works during
    /// a rollover, but status gets a new one), same org and generation, not expired, and its
    /// `expiresAt` is the token's.
    pub fn verifies(
        &self,
        link: &ReauthLink,
        ns: &str,
        name: &str,
        uid: &str,
        generation: i64,
        now: Timestamp,
    ) -> bool {
        let Some(token) = link.url.strip_prefix(&self.url_for(ns, name)) else {
            return false;
        };
        match state::verify::<LinkClaims>(
            self.keys.current(),
            Purpose::Link,
            token,
            now.as_second(),
        ) {
            Ok(c) => {
                c.ns == ns
                    && c.name == name
                    && c.uid == uid
                    && c.generation == generation
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
        let link = l.issue("backups", "acme", "uid-1", 4, now());
        assert!(
            link.url
                .starts_with("https://sforg.example.com/reauth/backups/acme?t=")
        );
        assert_eq!(link.expires_at.0.as_second(), now().as_second() + 24 * 3600);
        assert!(l.verifies(&link, "backups", "acme", "uid-1", 4, now()));
        assert!(
            !l.verifies(&link, "backups", "acme", "uid-2", 4, now()),
            "recreated org"
        );
        assert!(!l.verifies(&link, "backups", "other", "uid-1", 4, now()));
        let later = now() + k8s_openapi::jiff::SignedDuration::from_hours(25);
        assert!(
            !l.verifies(&link, "backups", "acme", "uid-1", 4, later),
            "expired"
        );
        let moved = links("https://new.example.com");
        assert!(
            !moved.verifies(&link, "backups", "acme", "uid-1", 4, now()),
            "new URL"
        );
        let rekeyed = Links::new(
            "https://sforg.example.com",
            StateKey::generate(),
            DEFAULT_LINK_LIFETIME,
        )
        .unwrap();
        assert!(
            !rekeyed.verifies(&link, "backups", "acme", "uid-1", 4, now()),
            "new key"
        );
        assert!(
            !l.verifies(&link, "backups", "acme", "uid-1", 5, now()),
            "spec changed"
        );
        assert_ne!(
            link.url,
            l.issue("backups", "acme", "uid-1", 4, now()).url,
            "each link has its own id"
        );
        let old_key = StateKey::from_bytes(&[3; 32]).unwrap();
        let rolled = Links::new(
            "https://sforg.example.com",
            state::SigningKeys::new(StateKey::generate(), Some(old_key)),
            DEFAULT_LINK_LIFETIME,
        )
        .unwrap();
        assert!(
            !rolled.verifies(&link, "backups", "acme", "uid-1", 4, now()),
            "after a rollover status gets a link of the new key"
        );
        let mut edited = link.clone();
        edited.expires_at = Time(later);
        assert!(
            !l.verifies(&edited, "backups", "acme", "uid-1", 4, now()),
            "expiresAt edited"
        );
    }
}
