//! JWT bearer support: verifying assertions against an app's registered key, and a
//! fixed RSA test key pair (generating 2048-bit RSA in debug builds is slow) so tests
//! and the demo can sign assertions the way the operator will.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::SimError;

const TEST_PRIVATE_KEY_PEM: &str = include_str!("keys/test_key.pem");
const TEST_PUBLIC_KEY_PEM: &str = include_str!("keys/test_key.pub.pem");
const OTHER_PRIVATE_KEY_PEM: &str = include_str!("keys/other_key.pem");
const OTHER_PUBLIC_KEY_PEM: &str = include_str!("keys/other_key.pub.pem");

/// Tolerance on `exp`, as Salesforce allows for clock skew.
pub const EXP_LEEWAY: Duration = Duration::from_secs(180);

/// A PKCS#8 RSA private key and its SPKI public key, both PEM. Test material only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtKeyPair {
    pub private_key_pem: String,
    pub public_key_pem: String,
}

impl std::fmt::Debug for JwtKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeyPair").finish_non_exhaustive()
    }
}

/// The claims Salesforce reads from a JWT bearer assertion.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssertionClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
}

impl JwtKeyPair {
    /// The embedded test key pair.
    pub fn test_key() -> Self {
        Self {
            private_key_pem: TEST_PRIVATE_KEY_PEM.to_string(),
            public_key_pem: TEST_PUBLIC_KEY_PEM.to_string(),
        }
    }

    /// A second embedded key pair, for "signed with the wrong key" cases.
    pub fn other_test_key() -> Self {
        Self {
            private_key_pem: OTHER_PRIVATE_KEY_PEM.to_string(),
            public_key_pem: OTHER_PUBLIC_KEY_PEM.to_string(),
        }
    }

    /// A self-signed X.509 certificate for this key, as uploaded to a connected app.
    pub fn certificate_pem(&self) -> Result<String, SimError> {
        let key = rcgen::KeyPair::from_pem(&self.private_key_pem)?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sforg-simulator jwt test key");
        Ok(params.self_signed(&key)?.pem())
    }

    /// Signs an RS256 assertion with these claims.
    pub fn sign(&self, claims: &AssertionClaims) -> Result<String, SimError> {
        let key = EncodingKey::from_rsa_pem(self.private_key_pem.as_bytes())?;
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            claims,
            &key,
        )?)
    }

    /// Signs an assertion for `client_id` / `username` / `audience` that expires
    /// `valid_for` from now (wall clock, as the operator's would be).
    pub fn assertion(
        &self,
        client_id: &str,
        username: &str,
        audience: &str,
        valid_for: Duration,
    ) -> Result<String, SimError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.sign(&AssertionClaims {
            iss: client_id.to_string(),
            sub: username.to_string(),
            aud: audience.to_string(),
            exp: (now + valid_for).as_secs(),
        })
    }
}

/// Accepts an RSA public key (`PUBLIC KEY` / `RSA PUBLIC KEY`) or an X.509 `CERTIFICATE`.
pub(crate) fn check_public_key(pem: &str) -> Result<(), SimError> {
    DecodingKey::from_rsa_pem(pem.as_bytes())
        .map(|_| ())
        .map_err(|e| SimError::Invalid(format!("not an RSA public key or certificate: {e}")))
}

/// Claims read before any verification (to find the app by `iss`).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct UnverifiedClaims {
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub aud: Option<Audience>,
    #[serde(default)]
    pub exp: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, wanted: &str) -> bool {
        let same = |a: &String| a.trim_end_matches('/') == wanted;
        match self {
            Audience::One(a) => same(a),
            Audience::Many(all) => all.iter().any(same),
        }
    }
}

/// Why an assertion was refused before its claims were looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AssertionFailure {
    Malformed,
    BadSignature,
}

/// Decodes the header and claims; only RS256 is accepted, as by Salesforce.
pub(crate) fn peek(assertion: &str) -> Result<UnverifiedClaims, AssertionFailure> {
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| AssertionFailure::Malformed)?;
    if header.alg != Algorithm::RS256 {
        return Err(AssertionFailure::Malformed);
    }
    jsonwebtoken::dangerous::insecure_decode_claims(assertion)
        .map_err(|_| AssertionFailure::Malformed)
}

/// Verifies the RS256 signature with the app's key; claims are checked by the caller.
pub(crate) fn verify_signature(
    assertion: &str,
    public_key_pem: &str,
) -> Result<(), AssertionFailure> {
    let key = DecodingKey::from_rsa_pem(public_key_pem.as_bytes())
        .map_err(|_| AssertionFailure::BadSignature)?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<serde_json::Value>(assertion, &key, &validation)
        .map(|_| ())
        .map_err(|_| AssertionFailure::BadSignature)
}

/// Seconds since the epoch on the wall clock (assertions are made with real clocks).
pub(crate) fn wall_clock_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_with_key_and_certificate() {
        let key = JwtKeyPair::test_key();
        let jwt = key
            .assertion(
                "client",
                "user@example.com",
                "https://login.salesforce.com",
                Duration::from_secs(60),
            )
            .expect("sign");
        verify_signature(&jwt, &key.public_key_pem).expect("verify with public key");
        let cert = key.certificate_pem().expect("certificate");
        check_public_key(&cert).expect("certificate accepted");
        verify_signature(&jwt, &cert).expect("verify with certificate");
        assert_eq!(
            verify_signature(&jwt, &JwtKeyPair::other_test_key().public_key_pem),
            Err(AssertionFailure::BadSignature)
        );
        let claims = peek(&jwt).expect("peek");
        assert_eq!(claims.iss.as_deref(), Some("client"));
        assert!(
            claims
                .aud
                .expect("aud")
                .contains("https://login.salesforce.com")
        );
    }
}
