//! Signed tokens for the re-auth flow: the link token in `status.reauth.url` and the OAuth
//! `state` that travels through Salesforce and back.
//!
//! All are `key id "." base64url(json claims) "." base64url(HMAC-SHA256)` under the
//! operator-wide key, with the purpose mixed into the MAC so a link token can never pass as a
//! `state` or the reverse. The key id names the key that signed: during a key rollover the
//! previous key still verifies what it signed (links mailed out the day before), while
//! everything new is signed with the current key ([`SigningKeys`]). Nothing is kept in memory between the start of a login and its callback: the
//! `state` carries the org it is for, and the PKCE verifier is derived from the key and the
//! state's nonce, so whichever replica receives the callback can finish the login, and the
//! verifier never leaves the operator.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::secret::SecretString;

/// Length of the signing key.
pub const KEY_LEN: usize = 32;

/// Longest token accepted, far above what the claims need, so nobody makes us decode megabytes.
const MAX_TOKEN_CHARS: usize = 2048;

/// The operator-wide HMAC key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct StateKey([u8; KEY_LEN]);

impl fmt::Debug for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateKey([redacted])")
    }
}

/// A key of the wrong length.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "the state signing key must be {KEY_LEN} bytes, found {0}: delete the key Secret and let the operator create a new one"
)]
pub struct KeyLengthError(pub usize);

impl StateKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rand::fill(&mut bytes);
        Self(bytes)
    }

    /// A key from stored bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyLengthError> {
        <[u8; KEY_LEN]>::try_from(bytes)
            .map(Self)
            .map_err(|_| KeyLengthError(bytes.len()))
    }

    /// The key bytes, for storing them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key's id: 8 characters derived from the key, so nothing but the key is stored
    /// and every replica names it alike.
    pub fn id(&self) -> String {
        let mut mac = self.hmac();
        mac.update(b"sforg-key-id");
        let digest = mac.finalize().into_bytes();
        URL_SAFE_NO_PAD.encode(&digest[..6])
    }

    fn hmac(&self) -> Hmac<Sha256> {
        // HMAC zero-pads a key shorter than the hash's block, so padding it here gives the
        // same MAC as `new_from_slice`, without a constructor that can fail.
        let mut block = [0u8; 64];
        block[..KEY_LEN].copy_from_slice(&self.0);
        <Hmac<Sha256> as KeyInit>::new(&block.into())
    }

    fn mac(&self, purpose: Purpose, payload: &str) -> Hmac<Sha256> {
        let mut mac = self.hmac();
        mac.update(purpose.tag().as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        mac
    }
}

/// The keys that verify tokens: the current one, which signs, and during a rollover the
/// previous one. `Debug` never shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKeys {
    current: StateKey,
    previous: Option<StateKey>,
}

impl SigningKeys {
    /// The current key and, during a rollover, the previous one.
    pub fn new(current: StateKey, previous: Option<StateKey>) -> Self {
        Self { current, previous }
    }

    /// The key that signs.
    pub fn current(&self) -> &StateKey {
        &self.current
    }

    /// The previous key, while a rollover lasts.
    pub fn previous(&self) -> Option<&StateKey> {
        self.previous.as_ref()
    }
}

impl From<StateKey> for SigningKeys {
    fn from(current: StateKey) -> Self {
        Self::new(current, None)
    }
}

/// Keys a token may be verified with, by key id.
pub trait VerifyingKeys {
    /// The key with this id.
    fn by_id(&self, id: &str) -> Option<&StateKey>;
}

impl VerifyingKeys for StateKey {
    fn by_id(&self, id: &str) -> Option<&StateKey> {
        (self.id() == id).then_some(self)
    }
}

impl VerifyingKeys for SigningKeys {
    fn by_id(&self, id: &str) -> Option<&StateKey> {
        self.current
            .by_id(id)
            .or_else(|| self.previous.as_ref().and_then(|k| k.by_id(id)))
    }
}

/// What a token is for; part of what is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// The link in `status.reauth.url`.
    Link,
    /// The OAuth `state` parameter.
    State,
    /// The CSRF token of the confirmation page's form.
    Csrf,
    /// The form that accepts a login as another Salesforce user than before.
    ConfirmUser,
}

impl Purpose {
    fn tag(self) -> &'static str {
        match self {
            Purpose::Link => "sforg-reauth-link-v2",
            Purpose::State => "sforg-oauth-state-v2",
            Purpose::Csrf => "sforg-reauth-csrf-v1",
            Purpose::ConfirmUser => "sforg-reauth-confirm-user-v1",
        }
    }
}

/// What the re-auth link grants: starting a login for one org, until `exp`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkClaims {
    /// The org's namespace.
    pub ns: String,
    /// The org's name.
    pub name: String,
    /// The org's uid: a link dies with its org, even if one of the same name replaces it.
    pub uid: String,
    /// The org's generation it was issued for: a link dies when the spec changes.
    pub generation: i64,
    /// Random: once a login through the link succeeded, this id is recorded and the link
    /// is dead.
    pub id: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
}

/// What the OAuth `state` carries through Salesforce and back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateClaims {
    /// The org's namespace.
    pub ns: String,
    /// The org's name.
    pub name: String,
    /// The org's uid.
    pub uid: String,
    /// The link this login was started from.
    pub link: LinkRef,
    /// Random, single use; the PKCE verifier is derived from it, and the browser-binding
    /// cookie is named after it.
    pub nonce: String,
    /// `base64url(SHA-256)` of the browser-binding cookie's random value: only the browser
    /// that started the login can finish it, and the state (which travels through URLs)
    /// never reveals the cookie.
    pub bind: String,
    /// The Salesforce username a person confirmed connecting instead of the previous one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_user: Option<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
}

/// The link a login was started from: what must still hold of it when the login ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRef {
    /// The link's id.
    pub id: String,
    /// The org generation it was issued for.
    pub generation: i64,
    /// The link's expiry (how long its id must be remembered once used).
    pub exp: i64,
}

impl LinkClaims {
    /// What a login started from this link carries of it.
    pub fn reference(&self) -> LinkRef {
        LinkRef {
            id: self.id.clone(),
            generation: self.generation,
            exp: self.exp,
        }
    }
}

/// The confirmation page's CSRF token: good for one link, in the browser holding the CSRF
/// cookie whose hash it carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsrfClaims {
    /// The link's id.
    pub link: String,
    /// `base64url(SHA-256)` of the CSRF cookie's value.
    pub bind: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
}

/// A login as another user than the org was connected as, waiting for the person to
/// confirm. It carries no token: those were revoked, and confirming logs in again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmUserClaims {
    /// The org's namespace.
    pub ns: String,
    /// The org's name.
    pub name: String,
    /// The org's uid.
    pub uid: String,
    /// The link the login was started from.
    pub link: LinkRef,
    /// The username to accept.
    pub user: String,
    /// The nonce of the login that ended here (names its browser-binding cookie).
    pub nonce: String,
    /// The binding of the browser that logged in (see [`StateClaims::bind`]).
    pub bind: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
}

/// Claims with an expiry.
pub trait Expiring {
    /// Expiry, seconds since the epoch.
    fn exp(&self) -> i64;
}

impl Expiring for LinkClaims {
    fn exp(&self) -> i64 {
        self.exp
    }
}

impl Expiring for StateClaims {
    fn exp(&self) -> i64 {
        self.exp
    }
}

impl Expiring for CsrfClaims {
    fn exp(&self) -> i64 {
        self.exp
    }
}

impl Expiring for ConfirmUserClaims {
    fn exp(&self) -> i64 {
        self.exp
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token of ours at all (truncated when copied, or made up).
    #[error("the token is malformed (was the link copied completely?)")]
    Malformed,
    /// The signature does not match: forged, altered, or signed with another key.
    #[error("the token's signature does not match (forged, altered, or from another operator)")]
    BadSignature,
    /// Valid, but too old.
    #[error("the token has expired")]
    Expired,
}

/// Signs claims for one purpose.
pub fn sign<T: Serialize>(key: &StateKey, purpose: Purpose, claims: &T) -> String {
    // Serializing plain structs of strings and integers cannot fail.
    let json = serde_json::to_vec(claims).unwrap_or_default();
    let signed = format!("{}.{}", key.id(), URL_SAFE_NO_PAD.encode(json));
    let tag = key.mac(purpose, &signed).finalize().into_bytes();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// Checks a token's signature (in constant time) and expiry against `now` (seconds since the
/// epoch), and returns its claims.
pub fn verify<T: DeserializeOwned + Expiring>(
    keys: &impl VerifyingKeys,
    purpose: Purpose,
    token: &str,
    now: i64,
) -> Result<T, TokenError> {
    verify_with(keys, purpose, token, now).map(|(claims, _)| claims)
}

/// [`verify`], also returning the key that signed (the PKCE verifier of a state is derived
/// from it).
pub fn verify_with<'k, T: DeserializeOwned + Expiring>(
    keys: &'k impl VerifyingKeys,
    purpose: Purpose,
    token: &str,
    now: i64,
) -> Result<(T, &'k StateKey), TokenError> {
    if token.len() > MAX_TOKEN_CHARS {
        return Err(TokenError::Malformed);
    }
    let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let (key_id, payload) = signed.split_once('.').ok_or(TokenError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    // A key id we do not hold: signed with a key retired since, or by another operator.
    let key = keys.by_id(key_id).ok_or(TokenError::BadSignature)?;
    key.mac(purpose, signed)
        .verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed)?;
    let claims: T = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    if claims.exp() <= now {
        return Err(TokenError::Expired);
    }
    Ok((claims, key))
}

/// `base64url(SHA-256(value))`: how a token names a cookie's value without revealing it.
pub fn binding(value: &str) -> String {
    use sha2::Digest;
    URL_SAFE_NO_PAD.encode(Sha256::digest(value.as_bytes()))
}

/// Whether `value` (a cookie's) hashes to `bind`, compared in constant time.
pub fn binds(value: &str, bind: &str) -> bool {
    let ours = binding(value);
    ours.len() == bind.len()
        && ours
            .bytes()
            .zip(bind.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// A fresh nonce: 128 random bits, base64url.
pub fn new_nonce() -> String {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The PKCE verifier for a nonce: `base64url(HMAC(key, "pkce:" + nonce))`, 43 characters,
/// recomputable by any replica and never sent anywhere but the token endpoint.
pub fn pkce_verifier(key: &StateKey, nonce: &str) -> SecretString {
    let mut mac = key.hmac();
    mac.update(b"pkce:");
    mac.update(nonce.as_bytes());
    SecretString::new(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn key(byte: u8) -> StateKey {
        StateKey([byte; KEY_LEN])
    }

    fn claims(exp: i64) -> StateClaims {
        StateClaims {
            ns: "backups".into(),
            name: "acme".into(),
            uid: "0b5c-uid".into(),
            link: LinkRef {
                id: "l1nk".into(),
                generation: 1,
                exp: exp + 3600,
            },
            nonce: "n0nce".into(),
            bind: binding("cookie-value"),
            accept_user: None,
            exp,
        }
    }

    /// Replaces one character of `s` at `at` with another base64url character.
    fn flip(s: &str, at: usize) -> String {
        let mut chars: Vec<char> = s.chars().collect();
        chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect()
    }

    #[test]
    fn state_signing_table() {
        let k = key(7);
        let good = sign(&k, Purpose::State, &claims(NOW + 600));
        let dot = good.rfind('.').unwrap_or_default();
        let forged_payload = {
            let mut other = claims(NOW + 600);
            other.name = "other-org".into();
            let body = sign(&k, Purpose::State, &other);
            let (p, _) = body.rsplit_once('.').unwrap_or_default();
            let (_, s) = good.rsplit_once('.').unwrap_or_default();
            format!("{p}.{s}")
        };
        let other_key_id = {
            let (_, rest) = good.split_once('.').unwrap_or_default();
            format!("{}.{rest}", key(8).id())
        };
        type Case = (
            &'static str,
            String,
            StateKey,
            Purpose,
            Result<(), TokenError>,
        );
        let cases: Vec<Case> = vec![
            ("valid", good.clone(), k.clone(), Purpose::State, Ok(())),
            (
                "tampered payload",
                flip(&good, 3),
                k.clone(),
                Purpose::State,
                Err(TokenError::BadSignature),
            ),
            (
                "payload of another org with this signature",
                forged_payload,
                k.clone(),
                Purpose::State,
                Err(TokenError::BadSignature),
            ),
            (
                "another key's id",
                other_key_id,
                k.clone(),
                Purpose::State,
                Err(TokenError::BadSignature),
            ),
            (
                "tampered signature",
                flip(&good, dot + 2),
                k.clone(),
                Purpose::State,
                Err(TokenError::BadSignature),
            ),
            (
                "expired",
                sign(&k, Purpose::State, &claims(NOW - 1)),
                k.clone(),
                Purpose::State,
                Err(TokenError::Expired),
            ),
            (
                "expires exactly now",
                sign(&k, Purpose::State, &claims(NOW)),
                k.clone(),
                Purpose::State,
                Err(TokenError::Expired),
            ),
            (
                "wrong key",
                good.clone(),
                key(8),
                Purpose::State,
                Err(TokenError::BadSignature),
            ),
            (
                "a link token is not a state",
                good.clone(),
                k.clone(),
                Purpose::Link,
                Err(TokenError::BadSignature),
            ),
            (
                "no dot",
                good.replace('.', ""),
                k.clone(),
                Purpose::State,
                Err(TokenError::Malformed),
            ),
            (
                "garbage",
                "not a token".into(),
                k.clone(),
                Purpose::State,
                Err(TokenError::Malformed),
            ),
            (
                "oversized",
                "a".repeat(MAX_TOKEN_CHARS + 1),
                k.clone(),
                Purpose::State,
                Err(TokenError::Malformed),
            ),
        ];
        for (what, token, k, purpose, want) in cases {
            let got = verify::<StateClaims>(&k, purpose, &token, NOW).map(|_| ());
            assert_eq!(got, want, "{what}");
        }
        let back: StateClaims = verify(&k, Purpose::State, &good, NOW).unwrap_or(claims(0));
        assert_eq!(back, claims(NOW + 600));
    }

    #[test]
    fn signed_claims_of_another_shape_do_not_parse() {
        let k = key(1);
        let link = LinkClaims {
            ns: "a".into(),
            name: "b".into(),
            uid: "c".into(),
            generation: 3,
            id: "d".into(),
            exp: NOW + 60,
        };
        // Even signed for the right purpose, a link's claims lack the nonce of a state.
        let token = sign(&k, Purpose::State, &link);
        assert_eq!(
            verify::<StateClaims>(&k, Purpose::State, &token, NOW),
            Err(TokenError::Malformed)
        );
        let token = sign(&k, Purpose::Link, &link);
        assert_eq!(verify(&k, Purpose::Link, &token, NOW), Ok(link));
    }

    #[test]
    fn a_rollover_accepts_the_previous_key_and_signs_with_the_new() {
        let (old, new) = (key(1), key(2));
        assert_ne!(old.id(), new.id());
        assert_eq!(old.id(), key(1).id(), "derived from the key alone");
        assert_eq!(old.id().len(), 8);
        let by_old = sign(&old, Purpose::State, &claims(NOW + 600));
        assert!(by_old.starts_with(&format!("{}.", old.id())));
        let rollover = SigningKeys::new(new.clone(), Some(old.clone()));
        let (back, signer) =
            verify_with::<StateClaims>(&rollover, Purpose::State, &by_old, NOW).unwrap();
        assert_eq!(back, claims(NOW + 600));
        assert_eq!(signer, &old, "the PKCE verifier is derived from the signer");
        let by_new = sign(rollover.current(), Purpose::State, &claims(NOW + 600));
        assert!(verify::<StateClaims>(&rollover, Purpose::State, &by_new, NOW).is_ok());
        let after = SigningKeys::from(new);
        assert_eq!(
            verify::<StateClaims>(&after, Purpose::State, &by_old, NOW),
            Err(TokenError::BadSignature),
            "the previous key retired"
        );
        assert!(!format!("{rollover:?}").contains("[1, 1"));
    }

    #[test]
    fn cookie_bindings() {
        let bind = binding("random-value");
        assert!(binds("random-value", &bind));
        assert!(!binds("random-valuf", &bind));
        assert!(!binds("", &bind));
        assert!(!bind.contains("random"));
    }

    #[test]
    fn pkce_verifier_is_stable_well_formed_and_keyed() {
        let a = pkce_verifier(&key(1), "nonce-1");
        assert_eq!(a, pkce_verifier(&key(1), "nonce-1"));
        assert_ne!(a, pkce_verifier(&key(2), "nonce-1"));
        assert_ne!(a, pkce_verifier(&key(1), "nonce-2"));
        let v = a.expose();
        assert!((43..=128).contains(&v.len()), "{}", v.len());
        assert!(
            v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(format!("{a:?}"), "[redacted]");
    }

    #[test]
    fn padded_key_is_plain_hmac() {
        let k = key(9);
        let mut ours = k.hmac();
        ours.update(b"x");
        let mut plain = <Hmac<Sha256> as KeyInit>::new_from_slice(k.as_bytes()).expect("key");
        plain.update(b"x");
        assert_eq!(ours.finalize().into_bytes(), plain.finalize().into_bytes());
    }

    #[test]
    fn keys_and_nonces() {
        assert_ne!(StateKey::generate(), StateKey::generate());
        assert_ne!(new_nonce(), new_nonce());
        assert_eq!(new_nonce().len(), 22);
        assert_eq!(StateKey::from_bytes(&[0; 31]), Err(KeyLengthError(31)));
        assert!(StateKey::from_bytes(&[0; 32]).is_ok());
        assert!(!format!("{:?}", key(0x41)).contains("65"));
    }
}
