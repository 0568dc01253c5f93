//! Which Salesforce org a SalesforceOrg may hold tokens for.
//!
//! `spec.expectedOrgId` pins the org deliberately; otherwise the first org seen (recorded in
//! `status.orgId`) is pinned. A check that finds another org's tokens and a login through the
//! link that reaches another org are refused by this one rule.

/// The org id tokens must belong to, if any is pinned yet.
pub fn pinned<'a>(expected: Option<&'a str>, seen_first: Option<&'a str>) -> Option<&'a str> {
    expected.or(seen_first)
}

/// 15- and 18-character ids name the same org when the first 15 characters match.
pub fn same_org_id(a: &str, b: &str) -> bool {
    a.get(..15).unwrap_or(a) == b.get(..15).unwrap_or(b)
}

/// Tokens of org `got` where another org is pinned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrongOrg {
    /// The org the tokens belong to.
    pub got: String,
    /// The pinned org.
    pub want: String,
    /// The pin is `spec.expectedOrgId` (not only the first org seen).
    pub expected_set: bool,
}

/// Whether tokens of org `got` may be kept.
pub fn check(expected: Option<&str>, seen_first: Option<&str>, got: &str) -> Result<(), WrongOrg> {
    match pinned(expected, seen_first) {
        Some(want) if !same_org_id(want, got) => Err(WrongOrg {
            got: got.to_owned(),
            want: want.to_owned(),
            expected_set: expected.is_some(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_table() {
        let a18 = "00D000000000001AAA";
        let a15 = "00D000000000001";
        let b18 = "00D000000000002AAA";
        // (what, expectedOrgId, status.orgId, got, accepted)
        let cases = [
            ("nothing pinned", None, None, b18, true),
            ("first org seen", None, Some(a18), a18, true),
            ("15 vs 18 characters", None, Some(a15), a18, true),
            ("another org", None, Some(a18), b18, false),
            ("expected wins over seen", Some(b18), Some(a18), b18, true),
            (
                "expected refuses the old org",
                Some(b18),
                Some(a18),
                a18,
                false,
            ),
        ];
        for (what, expected, seen, got, want) in cases {
            assert_eq!(check(expected, seen, got).is_ok(), want, "{what}");
        }
        assert_eq!(
            check(Some(b18), None, a18),
            Err(WrongOrg {
                got: a18.into(),
                want: b18.into(),
                expected_set: true
            })
        );
    }
}
