//! Talking to Salesforce: which hosts may receive credentials, and (later) the OAuth client.

pub mod allowlist;
