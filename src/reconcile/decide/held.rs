//! Tokens held in memory because the token Secret refused them: write them, or drop them when
//! the Secret moved on.

use crate::secret::SecretString;
use crate::token_secret::TokenFile;

/// What to do with tokens held in memory because the token Secret refused them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeldPlan {
    /// Write them: the Secret still holds what they replace, is gone, or is unreadable.
    Write,
    /// The Secret already holds them (a write that looked failed went through).
    AlreadyStored,
    /// Someone stored other tokens since (a person logged in again): ours are dropped unused.
    Superseded,
}

/// Decides what to do with held tokens (`held_refresh` / `held_access`, replacing
/// `replaced`, the refresh token that was in the Secret; `None` for headless flows) given what
/// the Secret holds now.
pub fn plan(
    stored: &TokenFile,
    replaced: Option<&SecretString>,
    held_refresh: Option<&SecretString>,
    held_access: &SecretString,
) -> HeldPlan {
    let TokenFile::Present(t) = stored else {
        return HeldPlan::Write;
    };
    let ours = match held_refresh {
        Some(rt) => t.refresh_token.as_ref() == Some(rt),
        None => t.access_token.as_ref() == Some(held_access),
    };
    if ours {
        HeldPlan::AlreadyStored
    } else if replaced.is_some() && t.refresh_token.as_ref() != replaced {
        HeldPlan::Superseded
    } else {
        HeldPlan::Write
    }
}
