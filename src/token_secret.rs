//! The token Secret: its keys, how to read it without trusting it, and how to write it.
//!
//! Tokens live only here. Reading never panics on what a person or another tool put in the
//! Secret: missing keys, binary garbage and oversized values become a [`TokenFile::Malformed`]
//! that names the key (never the value), and the operator then leaves the Secret untouched.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Resource, ResourceExt};

use crate::crd::SalesforceOrg;
use crate::salesforce::TokenResponse;
use crate::secret::SecretString;

/// Key: the current access token.
pub const ACCESS_TOKEN: &str = "access_token";
/// Key: the refresh token (web server flow only).
pub const REFRESH_TOKEN: &str = "refresh_token";
/// Key: the API host.
pub const INSTANCE_URL: &str = "instance_url";
/// Key: when the access token was issued, milliseconds since the epoch.
pub const ISSUED_AT: &str = "issued_at";
/// Key: the identity URL (org and user ids).
pub const IDENTITY: &str = "id";
/// Key: the Salesforce CLI's auth URL, so existing backup images use the Secret unchanged.
pub const SFDX_URL: &str = "sfdx-url";

/// Label on every Secret the operator manages; the operator watches only these.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "sforg-operator";
/// Label naming the SalesforceOrg a token Secret belongs to.
pub const ORG_LABEL: &str = "orgtokens.dev/org";

/// Tokens are a few hundred bytes; anything far larger is not a token.
const MAX_VALUE_BYTES: usize = 8 * 1024;

/// What the token Secret holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenFile {
    /// No Secret, or a Secret without any token yet.
    Missing,
    /// Unusable contents; the string names the problem, never a value.
    Malformed(String),
    /// Usable tokens.
    Present(StoredTokens),
}

/// The tokens as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredTokens {
    /// The access token, when one was obtained.
    pub access_token: Option<SecretString>,
    /// The refresh token (web server flow).
    pub refresh_token: Option<SecretString>,
    /// The API host for the access token.
    pub instance_url: Option<String>,
    /// When the access token was issued (milliseconds since the epoch).
    pub issued_at_ms: Option<i64>,
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> Result<Option<String>, String> {
    let Some(ByteString(bytes)) = data.get(key) else {
        return Ok(None);
    };
    if bytes.is_empty() {
        return Ok(None);
    }
    if bytes.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "key {key} holds {} bytes, more than any Salesforce token ({MAX_VALUE_BYTES})",
            bytes.len()
        ));
    }
    let s = std::str::from_utf8(bytes).map_err(|_| format!("key {key} is not UTF-8 text"))?;
    let s = s.trim();
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "key {key} contains whitespace or control characters"
        ));
    }
    Ok(Some(s.to_owned()))
}

/// Reads a token Secret without trusting it.
pub fn read(secret: Option<&Secret>) -> TokenFile {
    let Some(secret) = secret else {
        return TokenFile::Missing;
    };
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let parsed = (|| {
        let access_token = text(data, ACCESS_TOKEN)?.map(SecretString::new);
        let refresh_token = text(data, REFRESH_TOKEN)?.map(SecretString::new);
        let instance_url = text(data, INSTANCE_URL)?;
        if let Some(url) = &instance_url
            && url::Url::parse(url)
                .map(|u| u.scheme() != "https")
                .unwrap_or(true)
        {
            return Err(format!("key {INSTANCE_URL} is not an https URL"));
        }
        let issued_at_ms = match text(data, ISSUED_AT)? {
            Some(v) => Some(
                v.parse::<i64>()
                    .map_err(|_| format!("key {ISSUED_AT} is not milliseconds since the epoch"))?,
            ),
            None => None,
        };
        if access_token.is_some() && instance_url.is_none() {
            return Err(format!(
                "key {ACCESS_TOKEN} is set but {INSTANCE_URL} is missing"
            ));
        }
        Ok(StoredTokens {
            access_token,
            refresh_token,
            instance_url,
            issued_at_ms,
        })
    })();
    match parsed {
        Ok(t) if t.access_token.is_none() && t.refresh_token.is_none() => TokenFile::Missing,
        Ok(t) => TokenFile::Present(t),
        Err(problem) => TokenFile::Malformed(problem),
    }
}

/// The Secret data after a token response: keeps the refresh token unless Salesforce rotated
/// it, and keeps unrelated keys a person added.
pub fn data_after(
    current: Option<&BTreeMap<String, ByteString>>,
    response: &TokenResponse,
    client_id: &str,
    client_secret: Option<&SecretString>,
) -> BTreeMap<String, ByteString> {
    let mut data = current.cloned().unwrap_or_default();
    let put = |data: &mut BTreeMap<String, ByteString>, k: &str, v: &str| {
        data.insert(k.to_owned(), ByteString(v.as_bytes().to_vec()));
    };
    put(&mut data, ACCESS_TOKEN, response.access_token.expose());
    put(&mut data, INSTANCE_URL, &response.instance_url);
    put(&mut data, IDENTITY, &response.id);
    match &response.issued_at {
        Some(at) => put(&mut data, ISSUED_AT, at),
        None => {
            data.remove(ISSUED_AT);
        }
    }
    if let Some(rt) = &response.refresh_token {
        put(&mut data, REFRESH_TOKEN, rt.expose());
    }
    let refresh = data
        .get(REFRESH_TOKEN)
        .and_then(|b| std::str::from_utf8(&b.0).ok())
        .map(str::to_owned);
    match refresh {
        Some(rt) => {
            let host = response
                .instance_url
                .trim_start_matches("https://")
                .trim_end_matches('/');
            let secret = client_secret.map(SecretString::expose).unwrap_or_default();
            put(
                &mut data,
                SFDX_URL,
                &format!("force://{client_id}:{secret}:{rt}@{host}"),
            );
        }
        None => {
            data.remove(SFDX_URL);
        }
    }
    data
}

/// Whose a token Secret is, as far as the operator may write it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// There is no Secret: the operator creates it.
    Missing,
    /// Owned by this org (owner reference with its uid), or handed over by a person with the
    /// label `orgtokens.dev/org=<org name>` (how tokens brought by hand are documented).
    Ours,
    /// Anything else: the operator neither reads nor writes it.
    NotOurs,
}

/// Whose `secret` is for the org `org_name` with uid `org_uid`.
pub fn ownership(secret: Option<&Secret>, org_name: &str, org_uid: &str) -> Ownership {
    let Some(secret) = secret else {
        return Ownership::Missing;
    };
    let owned = secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == org_uid);
    let handed_over = secret.labels().get(ORG_LABEL).map(String::as_str) == Some(org_name);
    if owned || handed_over {
        Ownership::Ours
    } else {
        Ownership::NotOurs
    }
}

/// The labels of an org's token Secret.
pub fn labels(org: &SalesforceOrg) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
        (ORG_LABEL.to_owned(), org.name_any()),
    ])
}

/// The token Secret to write with `data`: `current` with our labels added (its
/// resourceVersion kept, as the write's precondition), or a new Secret owned by the org.
pub fn prepared(
    org: &SalesforceOrg,
    ns: &str,
    current: Option<&Secret>,
    data: BTreeMap<String, ByteString>,
) -> Secret {
    match current {
        None => Secret {
            metadata: ObjectMeta {
                name: Some(org.spec.token_secret_ref.name.clone()),
                namespace: Some(ns.to_owned()),
                labels: Some(labels(org)),
                owner_references: org.controller_owner_ref(&()).map(|o| vec![o]),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(data),
            ..Default::default()
        },
        Some(existing) => {
            let mut secret = existing.clone();
            let mut l = secret.metadata.labels.take().unwrap_or_default();
            l.extend(labels(org));
            secret.metadata.labels = Some(l);
            secret.metadata.managed_fields = None;
            secret.data = Some(data);
            secret.string_data = None;
            secret
        }
    }
}

/// Creates a [`prepared`] Secret, or replaces it under its resourceVersion: a 409 means
/// someone else wrote (or created) it first.
pub async fn save(api: &Api<Secret>, secret: &Secret) -> Result<Secret, kube::Error> {
    if secret.metadata.resource_version.is_some() {
        api.replace(&secret.name_any(), &PostParams::default(), secret)
            .await
    } else {
        api.create(&PostParams::default(), secret).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(pairs: &[(&str, &[u8])]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn reading_untrusted_secrets() {
        let huge = vec![b'a'; 1024 * 1024];
        let cases: Vec<(Option<Secret>, &str)> = vec![
            (None, "missing"),
            (Some(Secret::default()), "missing"),
            (Some(secret(&[("unrelated", b"x")])), "missing"),
            (Some(secret(&[(REFRESH_TOKEN, b"5Aep861")])), "present"),
            (
                Some(secret(&[
                    (ACCESS_TOKEN, b"00D!AQ"),
                    (INSTANCE_URL, b"https://acme.my.salesforce.com"),
                    (ISSUED_AT, b"1700000000000"),
                ])),
                "present",
            ),
            (
                Some(secret(&[(ACCESS_TOKEN, b"00D!AQ")])),
                "instance_url is missing",
            ),
            (
                Some(secret(&[(REFRESH_TOKEN, &[0xff, 0xfe, 0x00])])),
                "not UTF-8",
            ),
            (
                Some(secret(&[(REFRESH_TOKEN, &huge)])),
                "more than any Salesforce token",
            ),
            (Some(secret(&[(REFRESH_TOKEN, b"two words")])), "whitespace"),
            (
                Some(secret(&[
                    (REFRESH_TOKEN, b"x"),
                    (INSTANCE_URL, b"http://evil"),
                ])),
                "not an https URL",
            ),
            (
                Some(secret(&[(REFRESH_TOKEN, b"x"), (ISSUED_AT, b"yesterday")])),
                "milliseconds",
            ),
        ];
        for (s, want) in cases {
            let got = read(s.as_ref());
            let ok = match (&got, want) {
                (TokenFile::Missing, "missing") => true,
                (TokenFile::Present(_), "present") => true,
                (TokenFile::Malformed(m), w) => m.contains(w),
                _ => false,
            };
            assert!(ok, "want {want}, got {got:?}");
            if let TokenFile::Malformed(m) = got {
                assert!(!m.contains("5Aep") && !m.contains("00D!AQ"), "{m}");
            }
        }
    }

    #[test]
    fn only_our_secrets_are_ours() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let owned_by = |uid: &str| {
            let mut s = Secret::default();
            s.metadata.owner_references = Some(vec![OwnerReference {
                uid: uid.into(),
                ..Default::default()
            }]);
            s
        };
        let labelled = |org: &str| {
            let mut s = Secret::default();
            s.labels_mut().insert(ORG_LABEL.into(), org.into());
            s
        };
        // (what, Secret, ownership)
        let cases = [
            ("none yet", None, Ownership::Missing),
            (
                "created for this org",
                Some(owned_by("uid-1")),
                Ownership::Ours,
            ),
            (
                "owned by another org",
                Some(owned_by("uid-2")),
                Ownership::NotOurs,
            ),
            (
                "handed over by label",
                Some(labelled("acme")),
                Ownership::Ours,
            ),
            (
                "labelled for another org",
                Some(labelled("beta")),
                Ownership::NotOurs,
            ),
            (
                "someone else's Secret",
                Some(Secret::default()),
                Ownership::NotOurs,
            ),
        ];
        for (what, secret, want) in cases {
            assert_eq!(ownership(secret.as_ref(), "acme", "uid-1"), want, "{what}");
        }
    }

    #[test]
    fn refresh_keeps_the_refresh_token_unless_rotated() {
        let current = secret(&[(REFRESH_TOKEN, b"old-rt"), ("note", b"kept")])
            .data
            .unwrap_or_default();
        let mut response = TokenResponse {
            access_token: SecretString::new("new-at"),
            refresh_token: None,
            instance_url: "https://acme.my.salesforce.com".into(),
            id: "https://login.salesforce.com/id/00D000000000001AAA/005000000000001AAA".into(),
            issued_at: Some("1700000000000".into()),
        };
        let data = data_after(Some(&current), &response, "cid", None);
        assert_eq!(data[REFRESH_TOKEN].0, b"old-rt");
        assert_eq!(data["note"].0, b"kept");
        assert_eq!(
            data[SFDX_URL].0,
            b"force://cid::old-rt@acme.my.salesforce.com"
        );
        response.refresh_token = Some(SecretString::new("new-rt"));
        let data = data_after(
            Some(&current),
            &response,
            "cid",
            Some(&SecretString::new("s")),
        );
        assert_eq!(data[REFRESH_TOKEN].0, b"new-rt");
        assert_eq!(
            data[SFDX_URL].0,
            b"force://cid:s:new-rt@acme.my.salesforce.com"
        );
    }
}
