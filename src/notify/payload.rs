//! What a notification says: the versioned JSON a webhook receives, the Slack-compatible
//! `{"text": ...}`, and the email's subject and bodies. Built from the record and the org's
//! status; no token or secret is ever part of it (the re-auth link carries only its own
//! signed link token).

use serde::Serialize;

use crate::crd::{NoticeKind, NotificationRecord, SalesforceOrgStatus, TokenState};

/// The payload's version: a receiver checks it before reading the rest.
pub const API_VERSION: &str = "notifications.orgtokens.dev/v1";

/// The JSON body of a webhook in the `json` format (documented in the README).
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    /// Always [`API_VERSION`].
    pub api_version: &'static str,
    /// `Expired`, `Reminder`, `ExpiringSoon`, `Recovered` or `ReauthRefused`.
    pub event: NoticeKind,
    /// The same on every channel and every delivery attempt of this notice: deduplicate on it.
    pub idempotency_key: String,
    /// The SalesforceOrg's namespace.
    pub namespace: String,
    /// The SalesforceOrg's name.
    pub name: String,
    /// The token state at decision time (Valid, Expired, Pending, Unknown).
    pub state: Option<TokenState>,
    /// The condition reason.
    pub reason: Option<String>,
    /// What happened and what to do.
    pub message: Option<String>,
    /// Open to log into Salesforce again (only while a person must log in).
    pub reauth_url: Option<String>,
    /// When that link stops working.
    pub reauth_expires_at: Option<String>,
    /// The Salesforce org id.
    pub org_id: Option<String>,
    /// The Salesforce username the tokens act as.
    pub username: Option<String>,
    /// Who last logged in through the re-auth link.
    pub authorized_by: Option<String>,
    /// When.
    pub authorized_at: Option<String>,
    /// The reminder's number, for reminders.
    pub reminder: Option<u32>,
    /// When the transition happened (RFC 3339).
    pub since: String,
    /// When the operator decided to send this (RFC 3339).
    pub decided_at: String,
}

/// The payload of `record` about `namespace/name` with `status`.
pub fn notice(
    namespace: &str,
    name: &str,
    status: &SalesforceOrgStatus,
    record: &NotificationRecord,
) -> Notice {
    // The link only goes with notices that ask a person to log in.
    let link = match record.kind {
        NoticeKind::Recovered => None,
        _ => status.reauth.as_ref(),
    };
    Notice {
        api_version: API_VERSION,
        event: record.kind,
        idempotency_key: record.key.clone(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        state: status.state,
        reason: record.reason.clone(),
        message: record.message.clone(),
        reauth_url: link.map(|l| l.url.clone()),
        reauth_expires_at: link.map(|l| l.expires_at.0.to_string()),
        org_id: status.org_id.clone(),
        username: status.username.clone(),
        authorized_by: status.authorized_by.clone(),
        authorized_at: status.authorized_at.as_ref().map(|t| t.0.to_string()),
        reminder: record.reminder,
        since: record.since.0.to_string(),
        decided_at: record.decided_at.0.to_string(),
    }
}

impl Notice {
    /// A one-line subject.
    pub fn subject(&self) -> String {
        let org = format!("{}/{}", self.namespace, self.name);
        match self.event {
            NoticeKind::Expired => format!("Salesforce org {org}: token expired, log in again"),
            NoticeKind::Reminder => format!(
                "Reminder {}: Salesforce org {org} is still expired, log in again",
                self.reminder.unwrap_or(1)
            ),
            NoticeKind::ExpiringSoon => {
                format!("Salesforce org {org}: authorization expires soon, log in again")
            }
            NoticeKind::Recovered => match &self.authorized_by {
                Some(by) => format!("Salesforce org {org} is valid again (re-authorized by {by})"),
                None => format!("Salesforce org {org} is valid again"),
            },
            NoticeKind::ReauthRefused => {
                format!("Salesforce org {org}: a login through the re-auth link was refused")
            }
        }
    }

    /// The plain text: subject, what to do, the link, and the facts.
    pub fn text(&self) -> String {
        let mut out = vec![self.subject(), String::new()];
        if let Some(message) = &self.message {
            out.push(message.clone());
        }
        if self.event == NoticeKind::Recovered {
            let by = self.authorized_by.as_deref().unwrap_or("an unknown user");
            let at = self.authorized_at.as_deref().unwrap_or("an unknown time");
            let org = self.org_id.as_deref().unwrap_or("unknown org");
            out.push(format!("Re-authorized by {by} at {at} ({org})."));
        }
        if let Some(url) = &self.reauth_url {
            out.push(String::new());
            out.push(format!("Log in to Salesforce again: {url}"));
        }
        out.push(String::new());
        let facts = [
            ("Reason", self.reason.as_deref()),
            ("Org ID", self.org_id.as_deref()),
            ("Username", self.username.as_deref()),
            ("Last authorized by", self.authorized_by.as_deref()),
            ("Last authorized at", self.authorized_at.as_deref()),
            ("Since", Some(self.since.as_str())),
            ("Notification key", Some(self.idempotency_key.as_str())),
        ];
        for (label, value) in facts {
            if let Some(v) = value {
                out.push(format!("{label}: {v}"));
            }
        }
        out.join("\n")
    }

    /// The Slack/Teams-compatible body: `{"text": ...}` with the link.
    pub fn slack(&self) -> serde_json::Value {
        let mut text = format!("*{}*", self.subject());
        if let Some(message) = &self.message {
            text.push('\n');
            text.push_str(message);
        }
        if let Some(url) = &self.reauth_url {
            text.push_str(&format!("\n<{url}|Log in to Salesforce again>"));
        }
        serde_json::json!({ "text": text })
    }

    /// The HTML body, the link as a button.
    pub fn html(&self) -> String {
        let button = self.reauth_url.as_deref().map(|url| {
            maud::html! {
                p {
                    a href=(url) style="display:inline-block;padding:10px 18px;background:#0b5cab;color:#ffffff;border-radius:4px;text-decoration:none;font-weight:bold" {
                        "Log in to Salesforce again"
                    }
                }
            }
        });
        maud::html! {
            html { body style="font-family:sans-serif" {
                h2 { (self.subject()) }
                @if let Some(m) = &self.message { p { (m) } }
                @if self.event == NoticeKind::Recovered {
                    p { "Re-authorized by " (self.authorized_by.as_deref().unwrap_or("an unknown user"))
                        " at " (self.authorized_at.as_deref().unwrap_or("an unknown time")) "." }
                }
                @if let Some(b) = button { (b) }
                table {
                    @if let Some(r) = &self.reason { tr { td { "Reason" } td { (r) } } }
                    @if let Some(o) = &self.org_id { tr { td { "Org ID" } td { (o) } } }
                    @if let Some(u) = &self.username { tr { td { "Username" } td { (u) } } }
                    tr { td { "Notification key" } td { (self.idempotency_key) } }
                }
            } }
        }
        .into_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{DeliveryState, ReauthLink};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn record(kind: NoticeKind) -> NotificationRecord {
        let t = Time("2026-01-01T00:00:00Z".parse().unwrap());
        NotificationRecord {
            key: "uid-expired-1".into(),
            channel: "hook".into(),
            kind,
            reminder: None,
            reason: Some("RefreshTokenRevoked".into()),
            message: Some("Log in again.".into()),
            since: t.clone(),
            decided_at: t,
            state: DeliveryState::Pending,
            attempts: 0,
            sent_at: None,
            error: None,
        }
    }

    #[test]
    fn carries_the_link_only_when_a_person_must_act() {
        let status = SalesforceOrgStatus {
            state: Some(TokenState::Expired),
            org_id: Some("00D000000000001AAA".into()),
            authorized_by: Some("admin@acme.example".into()),
            reauth: Some(ReauthLink {
                url: "https://sforg.example/reauth/abc".into(),
                expires_at: Time("2026-01-02T00:00:00Z".parse().unwrap()),
            }),
            ..Default::default()
        };
        let n = notice("ns", "acme", &status, &record(NoticeKind::Expired));
        let json = serde_json::to_value(&n).unwrap();
        assert_eq!(json["apiVersion"], API_VERSION);
        assert_eq!(json["event"], "Expired");
        assert_eq!(json["idempotencyKey"], "uid-expired-1");
        assert_eq!(json["reauthUrl"], "https://sforg.example/reauth/abc");
        assert!(n.text().contains("https://sforg.example/reauth/abc"));
        assert!(
            n.html()
                .contains("href=\"https://sforg.example/reauth/abc\"")
        );
        assert!(
            n.slack()["text"]
                .as_str()
                .unwrap()
                .contains("<https://sforg.example/reauth/abc|")
        );
        let recovered = notice("ns", "acme", &status, &record(NoticeKind::Recovered));
        assert_eq!(recovered.reauth_url, None);
        assert!(
            recovered
                .subject()
                .contains("re-authorized by admin@acme.example")
        );
    }
}
