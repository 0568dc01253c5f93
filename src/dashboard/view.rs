//! What the dashboard shows, as pure functions from SalesforceOrgs (and their Events and
//! CronJobs) to HTML. Every page and fragment is built with `maud`, which escapes every
//! interpolated value: org names, reasons, Salesforce messages and Event notes are user data.
//! Nothing here reads the token Secret, so no token can reach a page.

use crate::conditions::Condition;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use maud::{DOCTYPE, Markup, html};

use crate::cli;
use crate::conditions;
use crate::crd::{SalesforceOrg, TokenState};

/// The badge of an org, like a backup product's Organizations page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Badge {
    /// Salesforce accepted the token at the last check.
    Valid,
    /// A person must log in again.
    Expired,
    /// Waiting for the first login (or for the operator's first look).
    Pending,
    /// Salesforce could not be asked, or a configuration problem.
    Unknown,
}

impl Badge {
    /// The badge's text, readable without colour.
    pub fn text(self) -> &'static str {
        match self {
            Badge::Valid => "Token Valid",
            Badge::Expired => "Token Expired",
            Badge::Pending => "Pending",
            Badge::Unknown => "Unknown",
        }
    }

    /// A symbol that tells the states apart without colour.
    fn symbol(self) -> &'static str {
        match self {
            Badge::Valid => "\u{2714}",
            Badge::Expired => "\u{2716}",
            Badge::Pending => "\u{2026}",
            Badge::Unknown => "?",
        }
    }

    /// The CSS class and `data-state` value.
    pub fn class(self) -> &'static str {
        match self {
            Badge::Valid => "valid",
            Badge::Expired => "expired",
            Badge::Pending => "pending",
            Badge::Unknown => "unknown",
        }
    }
}

/// One row of the Organizations list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// `namespace/name`: the row's key in the page and in its URLs.
    pub key: String,
    /// The org's namespace.
    pub namespace: String,
    /// The org's name.
    pub name: String,
    /// The badge.
    pub badge: Badge,
    /// The Ready condition's reason.
    pub reason: String,
    /// What happened and what to do.
    pub message: String,
    /// `status.orgId`.
    pub org_id: Option<String>,
    /// `status.username`.
    pub username: Option<String>,
    /// When the operator last asked Salesforce.
    pub last_checked: Option<Timestamp>,
    /// Who authorized the working tokens, and since when, where known.
    pub authorized: Option<(String, Option<Timestamp>)>,
    /// CronJobs the org holds suspended.
    pub held: Vec<String>,
    /// The re-auth link, or why there is none.
    pub reauth: Result<String, String>,
    /// Why a check cannot help now, if so.
    pub no_check: Option<String>,
}

fn time(t: &Option<Time>) -> Option<Timestamp> {
    t.as_ref().map(|t| t.0)
}

/// Only web links may become an `href`: status is data, and a `javascript:` URL written there
/// by whoever may patch status must never run in a person's browser.
fn safe_link(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "https" | "http"))
}

impl Row {
    /// The row for `org`, as of `now`.
    pub fn of(org: &SalesforceOrg, now: Timestamp) -> Row {
        let namespace = org.namespace().unwrap_or_default();
        let name = org.name_any();
        let status = org.status.as_ref();
        let badge = match status.and_then(|s| s.state) {
            Some(TokenState::Valid) => Badge::Valid,
            Some(TokenState::Expired) => Badge::Expired,
            Some(TokenState::Unknown) => Badge::Unknown,
            Some(TokenState::Pending) | None => Badge::Pending,
        };
        let ready = status.and_then(|s| conditions::get(&s.conditions, conditions::READY));
        let (reason, message) = match ready {
            Some(c) => (c.reason.to_string(), c.message.to_string()),
            None => (
                "NotCheckedYet".to_owned(),
                "The operator has not looked at this org yet: is it running, and does it \
                 watch this namespace?"
                    .to_owned(),
            ),
        };
        let token_valid =
            status.and_then(|s| conditions::get(&s.conditions, conditions::TOKEN_VALID));
        let authorized = status.and_then(|s| s.username.clone()).map(|user| {
            let since = token_valid
                .filter(|c| c.status == "True")
                .map(|c| c.last_transition_time.0);
            (user, since)
        });
        let reauth = match cli::reauth_link(org, now) {
            Ok(url) if safe_link(&url) => Ok(url),
            Ok(_) => Err(format!(
                "{namespace}/{name}'s status.reauth.url is not an http(s) link, so it is not \
                 offered here; look at it with kubectl"
            )),
            Err(why) => Err(why),
        };
        let pending_web = org.spec.auth.web_server.is_some() && badge == Badge::Pending;
        let no_check = pending_web.then(|| {
            format!(
                "{namespace}/{name} is Pending: there is nothing to check until a person logs \
                 in (Update Token)."
            )
        });
        Row {
            key: format!("{namespace}/{name}"),
            org_id: status.and_then(|s| s.org_id.clone()),
            username: status.and_then(|s| s.username.clone()),
            last_checked: status.and_then(|s| time(&s.last_checked_at)),
            held: status
                .map(|s| s.suspended_cron_jobs.clone())
                .unwrap_or_default(),
            namespace,
            name,
            badge,
            reason,
            message,
            authorized,
            reauth,
            no_check,
        }
    }
}

fn when(t: Timestamp) -> Markup {
    let text = t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string();
    html! { time datetime=(t.to_string()) { (text) } }
}

fn dash(v: Option<&str>) -> Markup {
    html! {
        @match v.filter(|s| !s.is_empty()) {
            Some(v) => (v),
            None => span.none { "\u{2014}" },
        }
    }
}

fn badge(b: Badge) -> Markup {
    html! {
        span class={ "badge " (b.class()) } {
            span.symbol aria-hidden="true" { (b.symbol()) } " " (b.text())
        }
    }
}

/// The row menu: Update Token, Check now, Details.
fn actions(row: &Row) -> Markup {
    let details = format!("/orgs/{}", row.key);
    html! {
        details.menu {
            summary { "Actions" }
            div.items {
                @match &row.reauth {
                    Ok(url) => a.update-token href=(url) target="_blank" rel="noopener noreferrer" { "Update Token" },
                    Err(why) => button.update-token type="button" data-action="why" data-why=(why) { "Update Token" },
                }
                @match &row.no_check {
                    None => button.check-now type="button" data-action="check" { "Check now" },
                    Some(why) => button.check-now type="button" data-action="why" data-why=(why) { "Check now" },
                }
                a.details href=(details) { "Details" }
            }
        }
    }
}

/// One `<tr>`: the unit the page replaces when the org changes.
pub fn row(row: &Row) -> Markup {
    let row_id = format!("org/{}", row.key);
    html! {
        tr id=(row_id) data-key=(row.key) data-namespace=(row.namespace) data-name=(row.name) data-state=(row.badge.class()) {
            td.namespace { (row.namespace) }
            td.name { a href={ "/orgs/" (row.key) } { (row.name) } }
            td.token { (badge(row.badge)) }
            td.reason {
                strong.reason-code { (row.reason) }
                @if !row.message.is_empty() { div.message { (row.message) } }
            }
            td.org-id { (dash(row.org_id.as_deref())) }
            td.username { (dash(row.username.as_deref())) }
            td.checked {
                @match row.last_checked { Some(t) => (when(t)), None => (dash(None)) }
            }
            td.authorized {
                @match &row.authorized {
                    Some((user, Some(since))) => { (user) br; "since " (when(*since)) },
                    Some((user, None)) => (user),
                    None => (dash(None)),
                }
            }
            td.held {
                @if row.held.is_empty() { "0" } @else {
                    (row.held.len()) ": " (row.held.join(", "))
                }
            }
            td.actions {
                (actions(row))
                p.notice aria-live="polite" hidden {}
            }
        }
    }
}

/// The `<tbody>` content for `orgs` (already in order).
pub fn rows<'a>(orgs: impl Iterator<Item = &'a SalesforceOrg>, now: Timestamp) -> Markup {
    html! {
        @for org in orgs { (row(&Row::of(org, now))) }
    }
}

/// What the page knows about where it looks.
#[derive(Clone, Debug)]
pub struct PageContext {
    /// The kubeconfig context's name, when known.
    pub context: Option<String>,
    /// The one namespace shown, or `None` for all namespaces.
    pub namespace: Option<String>,
    /// The token every action must carry.
    pub csrf: String,
}

fn head(title: &str, csrf: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="csrf-token" content=(csrf);
            title { (title) " | sforg-operator" }
            link rel="stylesheet" href="/static/app.css";
            script src="/static/app.js" defer {}
        }
    }
}

/// `namespace` (one namespace: its column and filter are hidden) or `all`.
fn scope_name(ctx: &PageContext) -> &'static str {
    if ctx.namespace.is_some() {
        "namespace"
    } else {
        "all"
    }
}

fn scope_line(ctx: &PageContext) -> Markup {
    html! {
        p.scope {
            @if let Some(c) = &ctx.context { "Context " strong { (c) } " \u{b7} " }
            @match &ctx.namespace {
                Some(ns) => { "namespace " strong { (ns) } },
                None => "all namespaces",
            }
            " \u{b7} " span #live aria-live="polite" { "connecting\u{2026}" }
        }
    }
}

fn banner(problem: Option<&str>) -> Markup {
    html! {
        @match problem {
            Some(p) => div #banner role="alert" { (p) },
            None => div #banner role="alert" hidden {},
        }
    }
}

/// The heading row of the orgs table, on the list and on the details page.
fn orgs_head() -> Markup {
    html! {
        thead {
            tr {
                th.namespace { "Namespace" } th { "Name" } th { "Token" } th { "Reason" }
                th { "Org ID" } th { "Username" } th { "Last checked" }
                th { "Last authorized" } th { "Backups held" } th { "Actions" }
            }
        }
    }
}

/// The Organizations page.
pub fn list_page(
    ctx: &PageContext,
    orgs: &[&SalesforceOrg],
    seq: u64,
    problem: Option<&str>,
    now: Timestamp,
) -> Markup {
    let mut namespaces: Vec<String> = orgs.iter().filter_map(|o| o.namespace()).collect();
    namespaces.dedup();
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Organizations", &ctx.csrf))
            body data-seq=(seq) data-page="list" data-scope=(scope_name(ctx)) {
                header {
                    h1 { "Organizations" }
                    (scope_line(ctx))
                    label.filter {
                        "Namespace "
                        select #namespace-filter {
                            option value="" { "All" }
                            @for ns in &namespaces { option value=(ns) { (ns) } }
                        }
                    }
                }
                (banner(problem))
                table #orgs {
                    (orgs_head())
                    tbody #rows { (rows(orgs.iter().copied(), now)) }
                }
                p #empty hidden[!orgs.is_empty()] { "No SalesforceOrgs here yet." }
            }
        }
    }
}

/// A held CronJob as the details page shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldCronJob {
    /// Name.
    pub name: String,
    /// `spec.schedule`, when the CronJob could be read.
    pub schedule: Option<String>,
    /// `spec.suspend`, when it could be read.
    pub suspended: Option<bool>,
    /// Every org recorded as holding it.
    pub holders: String,
}

impl HeldCronJob {
    /// From a CronJob read from the API.
    pub fn of(cj: &CronJob) -> HeldCronJob {
        HeldCronJob {
            name: cj.name_any(),
            schedule: cj.spec.as_ref().map(|s| s.schedule.clone()),
            suspended: Some(cj.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false)),
            holders: crate::dependents::holders(cj)
                .into_iter()
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// When an Event last happened: its series' last observation, else its time.
pub fn event_time(e: &Event) -> Option<Timestamp> {
    e.series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Sorts Events oldest first.
pub fn in_order(events: &mut [Event]) {
    events.sort_by_key(|e| (event_time(e), e.name_any()));
}

/// A section that may have been refused by RBAC.
pub type Section<T> = Result<Vec<T>, String>;

/// The details page of one org.
pub fn details_page(
    ctx: &PageContext,
    org: &SalesforceOrg,
    events: &Section<Event>,
    held: &Section<HeldCronJob>,
    seq: u64,
    now: Timestamp,
) -> Markup {
    let r = Row::of(org, now);
    let conditions = org
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(&format!("{} details", r.key), &ctx.csrf))
            body data-seq=(seq) data-page="details" data-key=(r.key) data-scope=(scope_name(ctx)) {
                header {
                    p { a #back href="/" { "\u{2190} Organizations" } }
                    h1 { (r.name) " " small { "in " (r.namespace) } }
                    (scope_line(ctx))
                }
                (banner(None))
                table #orgs {
                    (orgs_head())
                    tbody #rows { (row(&r)) }
                }
                (conditions_section(&conditions))
                (events_section(events))
                (cronjobs_section(held))
            }
        }
    }
}

/// The org's conditions as a table.
fn conditions_section(conditions: &[Condition]) -> Markup {
    html! {
    section #conditions {
        h2 { "Conditions" }
        @if conditions.is_empty() { p { "No conditions yet." } } @else {
            table {
                thead { tr { th { "Type" } th { "Status" } th { "Reason" } th { "Message" } th { "Since" } } }
                tbody {
                    @for c in conditions {
                        tr data-type=(c.type_) {
                            td { (c.type_) } td { (c.status) } td { (c.reason) }
                            td { (c.message) } td { (when(c.last_transition_time.0)) }
                        }
                    }
                }
            }
        }
    }
    }
}

/// The org's Events, oldest first.
fn events_section(events: &Section<Event>) -> Markup {
    html! {
    section #events {
        h2 { "Events" }
        @match events {
            Err(why) => p.refused { (why) },
            Ok(list) if list.is_empty() => p { "No Events (Kubernetes keeps them for an hour)." },
            Ok(list) => table {
                thead { tr { th { "Time" } th { "Type" } th { "Reason" } th { "Message" } th { "Count" } } }
                tbody {
                    @for e in list {
                        tr {
                            td { @match event_time(e) { Some(t) => (when(t)), None => (dash(None)) } }
                            td { (dash(e.type_.as_deref())) }
                            td.event-reason { (dash(e.reason.as_deref())) }
                            td { (dash(e.note.as_deref())) }
                            td { (e.series.as_ref().map_or(1, |s| s.count)) }
                        }
                    }
                }
            },
        }
    }
    }
}

/// The CronJobs the org holds, with schedule and suspend state.
fn cronjobs_section(held: &Section<HeldCronJob>) -> Markup {
    html! {
    section #cronjobs {
        h2 { "Held CronJobs" }
        @match held {
            Err(why) => p.refused { (why) },
            Ok(list) if list.is_empty() => p { "This org holds no CronJob suspended." },
            Ok(list) => table {
                thead { tr { th { "CronJob" } th { "Schedule" } th { "Suspended" } th { "Held by" } } }
                tbody {
                    @for cj in list {
                        tr data-cronjob=(cj.name) {
                            td { (cj.name) }
                            td { code { (dash(cj.schedule.as_deref())) } }
                            td.suspend {
                                @match cj.suspended { Some(true) => "yes", Some(false) => "no", None => (dash(None)) }
                            }
                            td { (dash(Some(&cj.holders))) }
                        }
                    }
                }
            },
        }
    }
    }
}

/// A page that says why a request was refused, or what went wrong.
pub fn message_page(title: &str, message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " | sforg-operator" }
                link rel="stylesheet" href="/static/app.css";
            }
            body {
                main #outcome {
                    h1 #title { (title) }
                    p #message { (message) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::Condition;
    use crate::crd::{ReauthLink, SalesforceOrgStatus};
    use serde_json::json;

    fn org(name: &str, status: Option<SalesforceOrgStatus>) -> SalesforceOrg {
        let mut org: SalesforceOrg = serde_json::from_value(json!({
            "apiVersion": "orgtokens.dev/v1alpha1", "kind": "SalesforceOrg",
            "metadata": {"name": name, "namespace": "backups"},
            "spec": {"loginUrl": "https://login.salesforce.com",
                "auth": {"webServer": {"clientId": "x"}}, "tokenSecretRef": {"name": "t"}}
        }))
        .unwrap();
        org.status = status;
        org
    }

    fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.to_owned().into(),
            status: status.to_owned().into(),
            reason: reason.to_owned().into(),
            message: message.into(),
            last_transition_time: Time(Timestamp::from_second(1_700_000_000).unwrap()),
            observed_generation: None,
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    #[test]
    fn each_state_gets_its_badge_and_text() {
        let cases = [
            (Some(TokenState::Valid), Badge::Valid, "Token Valid"),
            (Some(TokenState::Expired), Badge::Expired, "Token Expired"),
            (Some(TokenState::Pending), Badge::Pending, "Pending"),
            (Some(TokenState::Unknown), Badge::Unknown, "Unknown"),
            (None, Badge::Pending, "Pending"),
        ];
        for (state, want, text) in cases {
            let status = state.map(|s| SalesforceOrgStatus {
                state: Some(s),
                ..Default::default()
            });
            let r = Row::of(&org("a", status), now());
            assert_eq!(r.badge, want);
            let html = row(&r).into_string();
            assert!(html.contains(text), "{html}");
            assert!(html.contains(&format!("data-state=\"{}\"", want.class())));
        }
    }

    #[test]
    fn user_data_is_escaped_everywhere() {
        let evil = "<script>alert(1)</script>\"'&";
        let status = SalesforceOrgStatus {
            state: Some(TokenState::Expired),
            username: Some(evil.into()),
            org_id: Some(evil.into()),
            conditions: vec![condition("Ready", "False", evil, evil)],
            suspended_cron_jobs: vec![evil.into()],
            ..Default::default()
        };
        let o = org("a", Some(status));
        let ctx = PageContext {
            context: Some(evil.into()),
            namespace: Some(evil.into()),
            csrf: "c".into(),
        };
        let list = list_page(&ctx, &[&o], 1, Some(evil), now()).into_string();
        let event: Event = serde_json::from_value(json!({
            "metadata": {"name": "e"}, "eventTime": null, "reason": evil, "note": evil
        }))
        .unwrap();
        let held = HeldCronJob {
            name: evil.into(),
            schedule: Some(evil.into()),
            suspended: Some(true),
            holders: evil.into(),
        };
        let details =
            details_page(&ctx, &o, &Ok(vec![event]), &Ok(vec![held]), 1, now()).into_string();
        for html in [list, details] {
            assert!(!html.contains("<script>alert"), "{html}");
            assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;"));
        }
    }

    #[test]
    fn update_token_opens_the_link_or_says_why() {
        let link = |url: &str| SalesforceOrgStatus {
            state: Some(TokenState::Expired),
            reauth: Some(ReauthLink {
                url: url.into(),
                expires_at: Time(Timestamp::from_second(4_000_000_000).unwrap()),
            }),
            ..Default::default()
        };
        let r = Row::of(&org("a", Some(link("https://op.example/r/1"))), now());
        assert_eq!(r.reauth, Ok("https://op.example/r/1".into()));
        let html = row(&r).into_string();
        assert!(html.contains("href=\"https://op.example/r/1\" target=\"_blank\""));
        // A script URL in status is never a link.
        let r = Row::of(&org("a", Some(link("javascript:alert(1)"))), now());
        assert!(r.reauth.unwrap_err().contains("not an http(s) link"));
        // No link: the reason, from the same words as `sforg-operator reauth`.
        let status = SalesforceOrgStatus {
            state: Some(TokenState::Expired),
            conditions: vec![condition("Ready", "False", "RefreshTokenRevoked", "log in")],
            ..Default::default()
        };
        let r = Row::of(&org("a", Some(status)), now());
        assert!(r.reauth.as_ref().unwrap_err().contains("--public-url"));
        let html = row(&r).into_string();
        assert!(html.contains("data-action=\"why\""), "{html}");
    }

    #[test]
    fn pending_web_orgs_explain_that_a_check_cannot_help() {
        let r = Row::of(&org("a", None), now());
        assert!(r.no_check.unwrap().contains("Pending"));
        let valid = SalesforceOrgStatus {
            state: Some(TokenState::Valid),
            username: Some("u@example.com".into()),
            conditions: vec![condition("TokenValid", "True", "TokenValid", "ok")],
            ..Default::default()
        };
        let r = Row::of(&org("a", Some(valid)), now());
        assert_eq!(r.no_check, None);
        assert_eq!(
            r.authorized,
            Some((
                "u@example.com".into(),
                Some(Timestamp::from_second(1_700_000_000).unwrap())
            ))
        );
    }

    #[test]
    fn events_are_shown_oldest_first() {
        let at = |name: &str, secs: i64| -> Event {
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "eventTime": Timestamp::from_second(secs).unwrap().to_string(),
            }))
            .unwrap()
        };
        let mut events = vec![at("c", 30), at("a", 10), at("b", 20)];
        in_order(&mut events);
        let names: Vec<String> = events.iter().map(|e| e.name_any()).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }
}
