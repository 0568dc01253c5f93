//! Writing tokens to the token Secret: one path for the reconciler's renewals and for the
//! callback's logins.
//!
//! Every write carries the Secret's resourceVersion as a precondition. On a conflict the
//! Secret is read again and the write's own rule decides whether it still applies:
//! - a renewal made from a refresh token is dropped when the Secret now holds another one
//!   (someone stored newer tokens; with rotation, ours must never replace them), so the same
//!   refresh token is never presented twice;
//! - a login is refused when its single-use `state` is already recorded (another replica, or
//!   a reloaded page, finished it first).
//!
//! Nothing here decides what to do about a failure: the caller gets a typed [`Stored`] and
//! keeps the tokens (reconciler) or revokes them (callback).

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, PostParams};

use crate::crd::SalesforceOrg;
use crate::reauth_record::{
    AUTHORIZED_AT_ANNOTATION, AUTHORIZED_BY_ANNOTATION, USED_LINKS_ANNOTATION,
    USED_STATES_ANNOTATION, used_entries, used_states, with_used_state,
};
use crate::salesforce::TokenResponse;
use crate::salesforce::allowlist::{HostAllowlist, HostError};
use crate::secret::SecretString;
use crate::token_secret::{self, Ownership, TokenFile};

/// Writes made before giving up on a Secret that keeps changing.
const ATTEMPTS: usize = 3;
/// The longest API server text kept in a message.
const MAX_ERROR_CHARS: usize = 300;

/// Tokens to store, and where they come from.
pub struct TokenWrite<'a> {
    /// What Salesforce returned.
    pub response: &'a TokenResponse,
    /// The consumer key (for `sfdx-url`).
    pub client_id: &'a str,
    /// The consumer secret, if any (for `sfdx-url`).
    pub client_secret: Option<&'a SecretString>,
    /// Why they are written.
    pub origin: Origin<'a>,
    /// Hosts that may receive credentials: a backup job reading the Secret sends its token to
    /// the stored `instance_url`, so one outside the allowlist is never stored.
    pub allowlist: &'a HostAllowlist,
}

/// Where tokens come from, which decides when a concurrent write wins over them.
#[derive(Clone, Copy, Debug)]
pub enum Origin<'a> {
    /// A refresh or a mint. `replaces` is the refresh token it was made with (web server
    /// flow); `None` for headless flows, whose tokens never supersede each other.
    Renewal {
        /// The refresh token presented.
        replaces: Option<&'a SecretString>,
    },
    /// A person's login through a re-auth link, with its single-use state nonce.
    Login {
        /// The state's nonce.
        nonce: &'a str,
        /// When the state expires (seconds since the epoch).
        expires: i64,
        /// The link the login started from (its id and expiry): used up by this write.
        link: (&'a str, i64),
        /// The Salesforce username that logged in.
        authorized_by: &'a str,
        /// Now (seconds since the epoch), to prune expired nonces.
        now: i64,
    },
}

/// What became of a write.
#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    /// The Secret holds the tokens now.
    Written {
        /// Its resourceVersion after the write.
        version: Option<String>,
        /// The refresh token the Secret held before (a login may revoke it).
        replaced: Option<SecretString>,
    },
    /// Another writer won: newer tokens (a renewal) or this very login (a replayed state).
    /// Nothing was written.
    Superseded,
    /// The Secret belongs to something else; nothing was written.
    NotOwned,
    /// Salesforce named an API host outside the allowlist; nothing was written.
    HostNotAllowed(HostError),
    /// The API server refused the write (its words, bounded; never a token).
    Failed(String),
}

/// Whether `origin` still applies to the Secret as it is now. `reread`: the Secret was read
/// again after a conflict (a renewal is checked only then: the first write goes to the very
/// Secret its refresh token came from).
pub fn still_applies(origin: &Origin<'_>, current: Option<&Secret>, reread: bool) -> bool {
    match origin {
        Origin::Renewal { replaces: None } => true,
        Origin::Renewal {
            replaces: Some(used),
        } => {
            if !reread {
                return true;
            }
            let stored = match token_secret::read(current) {
                TokenFile::Present(t) => t.refresh_token,
                _ => None,
            };
            stored.as_ref() == Some(*used)
        }
        Origin::Login { nonce, now, .. } => {
            let annotations = current.map(|s| s.annotations().clone()).unwrap_or_default();
            !used_states(&annotations, *now)
                .iter()
                .any(|(n, _)| n == nonce)
        }
    }
}

/// Writes the tokens under the Secret's resourceVersion, re-reading it after a conflict.
/// `current` is the Secret as the caller read it.
pub async fn store(
    secrets: &Api<Secret>,
    org: &SalesforceOrg,
    mut current: Option<Secret>,
    write: &TokenWrite<'_>,
) -> Stored {
    if let Err(e) = write.allowlist.check(&write.response.instance_url) {
        return Stored::HostNotAllowed(e);
    }
    let ns = org.namespace().unwrap_or_default();
    let name = &org.spec.token_secret_ref.name;
    let uid = org.uid().unwrap_or_default();
    for attempt in 0..ATTEMPTS {
        if token_secret::ownership(current.as_ref(), &org.name_any(), &uid) == Ownership::NotOurs {
            return Stored::NotOwned;
        }
        if !still_applies(&write.origin, current.as_ref(), attempt > 0) {
            return Stored::Superseded;
        }
        let replaced = match token_secret::read(current.as_ref()) {
            TokenFile::Present(t) => t.refresh_token,
            _ => None,
        };
        let secret = composed(org, &ns, current.as_ref(), write);
        match save(secrets, &secret).await {
            Ok(written) => {
                return Stored::Written {
                    version: written.metadata.resource_version,
                    replaced,
                };
            }
            // Conflict or AlreadyExists: someone wrote first; look again.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                current = match secrets.get_opt(name).await {
                    Ok(now) => now,
                    Err(e) => return Stored::Failed(describe(&e)),
                };
            }
            Err(e) => return Stored::Failed(describe(&e)),
        }
    }
    Stored::Failed(
        "HTTP 409 Conflict: another writer changed the token Secret during each of three \
         writes in a row"
            .into(),
    )
}

/// The Secret one write attempt sends: the tokens over what `current` holds, and for a login
/// the used state and link and who authorized, so they land together or not at all.
fn composed(
    org: &SalesforceOrg,
    ns: &str,
    current: Option<&Secret>,
    write: &TokenWrite<'_>,
) -> Secret {
    let data = token_secret::data_after(
        current.and_then(|s| s.data.as_ref()),
        write.response,
        write.client_id,
        write.client_secret,
    );
    let mut secret = token_secret::prepared(org, ns, current, data);
    if let Origin::Login {
        nonce,
        expires,
        link: (link, link_expires),
        authorized_by,
        now,
    } = write.origin
    {
        let used = used_states(secret.annotations(), now);
        let used_links = used_entries(secret.annotations(), USED_LINKS_ANNOTATION, now);
        let at = k8s_openapi::jiff::Timestamp::from_second(now).unwrap_or_default();
        let annotations = secret.annotations_mut();
        annotations.insert(
            USED_STATES_ANNOTATION.to_owned(),
            with_used_state(&used, nonce, expires),
        );
        annotations.insert(
            USED_LINKS_ANNOTATION.to_owned(),
            with_used_state(&used_links, link, link_expires),
        );
        annotations.insert(
            AUTHORIZED_BY_ANNOTATION.to_owned(),
            authorized_by.to_owned(),
        );
        annotations.insert(AUTHORIZED_AT_ANNOTATION.to_owned(), at.to_string());
    }
    secret
}

/// Creates a [`token_secret::prepared`] Secret, or replaces it under its resourceVersion: a
/// 409 means someone else wrote (or created) it first.
async fn save(api: &Api<Secret>, secret: &Secret) -> Result<Secret, kube::Error> {
    if secret.metadata.resource_version.is_some() {
        api.replace(&secret.name_any(), &PostParams::default(), secret)
            .await
    } else {
        api.create(&PostParams::default(), secret).await
    }
}

/// A failed write as a message says it: the API server's own words, bounded.
pub fn describe(error: &kube::Error) -> String {
    let text = match error {
        kube::Error::Api(s) => format!("HTTP {} {}: {}", s.code, s.reason, s.message),
        other => other.to_string(),
    };
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(refresh: &str, used: Option<&str>) -> Secret {
        let mut s = Secret {
            data: Some(BTreeMap::from([(
                token_secret::REFRESH_TOKEN.to_owned(),
                ByteString(refresh.as_bytes().to_vec()),
            )])),
            ..Default::default()
        };
        if let Some(used) = used {
            s.annotations_mut()
                .insert(USED_STATES_ANNOTATION.to_owned(), used.to_owned());
        }
        s
    }

    #[test]
    fn who_wins_a_conflict() {
        let rt1 = SecretString::new("rt-1");
        let renewal = Origin::Renewal {
            replaces: Some(&rt1),
        };
        let headless = Origin::Renewal { replaces: None };
        let login = Origin::Login {
            nonce: "n1",
            expires: 2000,
            link: ("l1", 3000),
            authorized_by: "admin@acme.example",
            now: 1000,
        };
        let same = secret("rt-1", None);
        let newer = secret("rt-9", None);
        let used = secret("rt-9", Some("n1:2000"));
        let used_long_ago = secret("rt-9", Some("n1:900"));
        // (what, origin, Secret now, re-read after a conflict, still applies)
        let cases: Vec<(&str, Origin, Option<&Secret>, bool, bool)> = vec![
            ("renewal, first write", renewal, Some(&newer), false, true),
            (
                "renewal, same token after conflict",
                renewal,
                Some(&same),
                true,
                true,
            ),
            (
                "renewal, newer tokens stored",
                renewal,
                Some(&newer),
                true,
                false,
            ),
            (
                "renewal, Secret deleted meanwhile",
                renewal,
                None,
                true,
                false,
            ),
            (
                "headless never superseded",
                headless,
                Some(&newer),
                true,
                true,
            ),
            ("login, fresh state", login, Some(&newer), false, true),
            ("login, state used", login, Some(&used), false, false),
            (
                "login, state used after conflict",
                login,
                Some(&used),
                true,
                false,
            ),
            (
                "login, only an expired record",
                login,
                Some(&used_long_ago),
                true,
                true,
            ),
            ("login, no Secret yet", login, None, false, true),
        ];
        for (what, origin, current, reread, want) in cases {
            assert_eq!(still_applies(&origin, current, reread), want, "{what}");
        }
    }
}
