//! Signed tokens for the re-auth flow: the link token in `status.reauth.url` and the OAuth
//! `state` that travels through Salesforce and back.
//!
//! Both are `base64url(json claims) "." base64url(HMAC-SHA256)` under one operator-wide key,
//! with the purpose mixed into the MAC so a link token can never pass as a `state` or the
//! reverse. Nothing is kept in memory between the start of a login and its callback: the
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

/// What a token is for; part of what is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// The link in `status.reauth.url`.
    Link,
    /// The OAuth `state` parameter.
    State,
}

impl Purpose {
    fn tag(self) -> &'static str {
        match self {
            Purpose::Link => "sforg-reauth-link-v1",
            Purpose::State => "sforg-oauth-state-v1",
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
    /// Random, single use; the PKCE verifier is derived from it.
    pub nonce: String,
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
    let payload = URL_SAFE_NO_PAD.encode(json);
    let tag = key.mac(purpose, &payload).finalize().into_bytes();
    format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// Checks a token's signature (in constant time) and expiry against `now` (seconds since the
/// epoch), and returns its claims.
pub fn verify<T: DeserializeOwned + Expiring>(
    key: &StateKey,
    purpose: Purpose,
    token: &str,
    now: i64,
) -> Result<T, TokenError> {
    if token.len() > MAX_TOKEN_CHARS {
        return Err(TokenError::Malformed);
    }
    let (payload, signature) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    key.mac(purpose, payload)
        .verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed)?;
    let claims: T = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    if claims.exp() <= now {
        return Err(TokenError::Expired);
    }
    Ok(claims)
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
            nonce: "n0nce".into(),
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
        let dot = good.find('.').unwrap_or_default();
        let forged_payload = {
            let mut other = claims(NOW + 600);
            other.name = "other-org".into();
            let body = sign(&k, Purpose::State, &other);
            let (p, _) = body.split_once('.').unwrap_or_default();
            let (_, s) = good.split_once('.').unwrap_or_default();
            format!("{p}.{s}")
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
