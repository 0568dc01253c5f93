//! Salesforce-looking identifiers and unguessable token strings.
//!
//! Ids follow Salesforce's shape (15 case-sensitive characters plus the 3-character
//! case-safe suffix) so code that parses or validates them sees realistic values.

use rand::RngExt;

const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const TOKEN_CHARS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz._";
const SUFFIX_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// `len` characters drawn uniformly from `alphabet` with the thread-local CSPRNG.
pub fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}

/// The case-safe 3-character suffix Salesforce appends to a 15-character id.
pub fn case_safe_suffix(id15: &str) -> String {
    let bytes = id15.as_bytes();
    let mut suffix = String::with_capacity(3);
    for chunk in bytes.chunks(5).take(3) {
        let mut bits = 0usize;
        for (i, b) in chunk.iter().enumerate() {
            if b.is_ascii_uppercase() {
                bits |= 1 << i;
            }
        }
        suffix.push(char::from(SUFFIX_CHARS[bits]));
    }
    suffix
}

/// An 18-character Salesforce id with the given 3-character key prefix (`00D`, `005`, ...).
pub fn salesforce_id(prefix: &str) -> String {
    let id15 = format!("{prefix}{}{}", "0", random_string(ALNUM, 14 - prefix.len()));
    let suffix = case_safe_suffix(&id15);
    format!("{id15}{suffix}")
}

/// An access token shaped like Salesforce's: `<15-char org id>!AQ...`.
pub fn access_token(org_id: &str) -> String {
    let prefix = org_id.get(..15).unwrap_or(org_id);
    format!("{prefix}!AQ{}", random_string(TOKEN_CHARS, 94))
}

pub fn refresh_token() -> String {
    format!("5Aep861{}", random_string(TOKEN_CHARS, 80))
}

pub fn authorization_code() -> String {
    format!("aPrx{}==", random_string(TOKEN_CHARS, 72))
}

pub fn client_id() -> String {
    format!("3MVG9{}", random_string(TOKEN_CHARS, 80))
}

pub fn client_secret() -> String {
    random_string(b"0123456789ABCDEF", 64)
}

/// An opaque random handle (login tickets and the like).
pub fn opaque(len: usize) -> String {
    random_string(ALNUM, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_safe_suffix_matches_salesforce() {
        // Known pair: 001A0000006Vm9r -> 001A0000006Vm9rIAC
        assert_eq!(case_safe_suffix("001A0000006Vm9r"), "IAC");
    }

    #[test]
    fn ids_have_salesforce_shape() {
        let id = salesforce_id("00D");
        assert_eq!(id.len(), 18);
        assert!(id.starts_with("00D"));
        assert_eq!(&id[15..], case_safe_suffix(&id[..15]));
        let token = access_token(&id);
        assert!(token.starts_with(&format!("{}!AQ", &id[..15])));
        assert_ne!(refresh_token(), refresh_token());
    }
}
