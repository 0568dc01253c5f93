//! `check-setup`: one run of an org's OAuth flow against Salesforce, read back as a checklist
//! of the Connected App's or External Client App's settings and policies.
//!
//! The operator cannot tell the two kinds of app apart (they share Salesforce's endpoints
//! and error bodies), so every item names where the setting lives in both. Nothing here
//! touches the org's own grant: the web server flow is probed with a login nobody completes,
//! a made-up authorization code and a made-up refresh token, so Salesforce judges the app's
//! client authentication without a refresh that could rotate (and so race) the operator's
//! refresh token. The headless flows mint one access token, read whose it is, and revoke it.

use std::fmt::Write as _;

use crate::crd::{AuthFlow, ClientCredentialsAuth, JwtBearerAuth, WebServerAuth};
use crate::reasons::Reason;
use crate::salesforce::classify::{AuthorizeAnswer, SecretFlow};
use crate::salesforce::client::AuthorizeRequest;
use crate::salesforce::{
    AppCredentials, HttpSalesforce, LostReason, Salesforce, SfError, TokenResponse, TransientReason,
};
use crate::secret::SecretString;

/// How one item ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// Salesforce accepted this part of the setup.
    Ok,
    /// Salesforce refused: the item says what to change.
    Fail,
    /// Not checked (the reason is given).
    Skip,
    /// Worth knowing; neither right nor wrong.
    Info,
}

impl Mark {
    fn label(self) -> &'static str {
        match self {
            Mark::Ok => "[ok]  ",
            Mark::Fail => "[FAIL]",
            Mark::Skip => "[skip]",
            Mark::Info => "[info]",
        }
    }
}

/// One line of the checklist, with what to do when it failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// How it ended.
    pub mark: Mark,
    /// What was checked.
    pub what: String,
    /// What Salesforce said, or what to change.
    pub detail: String,
}

impl Item {
    fn new(mark: Mark, what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            mark,
            what: what.into(),
            detail: detail.into(),
        }
    }
}

/// The whole checklist of one org.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checklist {
    /// `namespace/name`.
    pub org: String,
    /// The flow, in words.
    pub flow: &'static str,
    /// The items, in the order they were checked.
    pub items: Vec<Item>,
}

impl Checklist {
    /// How many items failed.
    pub fn failures(&self) -> usize {
        self.items.iter().filter(|i| i.mark == Mark::Fail).count()
    }

    /// The checklist as a person reads it.
    pub fn render(&self) -> String {
        let mut out = format!("Setup of {} ({}):\n", self.org, self.flow);
        for item in &self.items {
            let _ = writeln!(out, "{} {}", item.mark.label(), item.what);
            if !item.detail.is_empty() {
                let _ = writeln!(out, "       {}", item.detail);
            }
        }
        let failures = self.failures();
        if failures == 0 {
            out.push_str("Nothing to change: Salesforce accepts this setup.\n");
        } else {
            let _ = writeln!(
                out,
                "{failures} thing(s) to change in Salesforce or in the SalesforceOrg, listed above."
            );
        }
        out
    }
}

/// What to change when Salesforce refuses for `reason`, for either kind of app.
pub fn fix(reason: LostReason) -> &'static str {
    match reason {
        LostReason::RefreshTokenRevoked => {
            "Salesforce no longer accepts the refresh token (the app's refresh token policy, a \
             revocation from its OAuth Usage page, or reuse after rotation): a person logs in \
             again through the re-auth link (sforg-operator reauth NAME)."
        }
        LostReason::UserInactive => {
            "The Salesforce user is deactivated: reactivate it in Setup > Users."
        }
        LostReason::UserLocked => "The Salesforce user is locked out: unlock it in Setup > Users.",
        LostReason::ConnectedAppNotInstalled => {
            "Connected App: install it in the org (Setup > Connected Apps OAuth Usage > Install), \
             or give the user \"Approve Uninstalled Connected Apps\". An External Client App needs \
             no installation: create it in the org itself."
        }
        LostReason::ConnectedAppBlocked => {
            "The app is blocked in the org: unblock it (Setup > Connected Apps OAuth Usage)."
        }
        LostReason::InvalidClientId => {
            "Salesforce does not know spec.auth.*.clientId: copy the consumer key again \
             (External Client App: External Client App Manager > the app > Settings > OAuth \
             Settings > Consumer Key and Secret; Connected App: App Manager > View > Manage \
             Consumer Details). A new app can take minutes to become usable."
        }
        LostReason::InvalidClientSecret => {
            "The consumer secret in clientSecretRef is not the app's: copy it again from the \
             same place as the consumer key, into the Secret named by clientSecretRef."
        }
        LostReason::UserNotApproved => {
            "The user is not approved for the app. With Permitted Users \"Admin approved users \
             are pre-authorized\": External Client App: Policies tab > OAuth Policies, select the \
             user's profile or a permission set and assign that permission set to the user; \
             Connected App: Manage > Profiles or Permission Sets. For JWT bearer, that \
             pre-authorization is required."
        }
        LostReason::IpRestricted => {
            "Salesforce refuses this network: relax IP restrictions in the app's OAuth policies \
             (IP Relaxation), or add the operator's egress IPs to the org's trusted IP ranges."
        }
        LostReason::InvalidAudience => {
            "The JWT audience does not match the org: use loginUrl https://test.salesforce.com \
             for a sandbox and https://login.salesforce.com for production."
        }
        LostReason::NoClientCredentialsUser => {
            "No run-as user for the client credentials flow: External Client App: Settings > \
             OAuth Settings > Flow Enablement > Enable Client Credentials Flow, then Policies \
             tab > OAuth Policies > Run As; Connected App: Manage > Edit Policies > Client \
             Credentials Flow > Run As."
        }
        LostReason::RefreshSecretRequired => {
            "The app requires its consumer secret to refresh tokens and the spec has none: add \
             clientSecretRef to spec.auth.webServer, or clear \"Require secret for Refresh Token \
             Flow\" (External Client App: Settings > OAuth Settings > Security; Connected App: \
             Edit > API (Enable OAuth Settings))."
        }
        LostReason::WebServerSecretRequired => {
            "The app requires its consumer secret to finish a login and the spec has none: add \
             clientSecretRef to spec.auth.webServer, or clear \"Require secret for Web Server \
             Flow\" (External Client App: Settings > OAuth Settings > Security; Connected App: \
             Edit > API (Enable OAuth Settings))."
        }
        LostReason::Refused => {
            "Salesforce refused for a reason it did not name: compare the app's settings and \
             policies with docs/salesforce-setup.md."
        }
    }
}

/// An answer of the authorize endpoint, as a checklist item.
pub fn authorize_item(
    answer: &AuthorizeAnswer,
    callback_url: &str,
    scopes: &[std::borrow::Cow<'static, str>],
) -> Item {
    const WHAT: &str = "Consumer key, callback URL, scopes and PKCE (Salesforce's login page)";
    let scopes = scopes.join(" ");
    match answer {
        AuthorizeAnswer::LoginPage => Item::new(
            Mark::Ok,
            WHAT,
            format!(
                "Salesforce offers its login page for callback URL {callback_url} and scopes \
                 \"{scopes}\" with a PKCE challenge."
            ),
        ),
        AuthorizeAnswer::Refused { error, description } => {
            let said = format!("Salesforce said {error}: {description}.");
            let code = error.to_ascii_lowercase();
            let detail = if code == "redirect_uri_mismatch" {
                format!(
                    "{said} Add the callback URL {callback_url} to the app (External Client App: \
                     Settings > OAuth Settings > Callback URL; Connected App: Edit > API (Enable \
                     OAuth Settings) > Callback URL)."
                )
            } else if code == "invalid_scope" {
                format!(
                    "{said} Select the OAuth scopes \"Manage user data via APIs (api)\" and \
                     \"Perform requests at any time (refresh_token, offline_access)\" in the \
                     app's OAuth settings, or request only selected scopes in spec.auth.webServer.scopes."
                )
            } else if description.to_ascii_lowercase().contains("code challenge") {
                format!(
                    "{said} The operator always sends a PKCE (S256) challenge; check the app's \
                     \"Require Proof Key for Code Exchange (PKCE)\" setting."
                )
            } else {
                match crate::salesforce::classify::token_error(error, description) {
                    SfError::AuthorizationLost { reason, .. } if reason != LostReason::Refused => {
                        format!("{said} {}", fix(reason))
                    }
                    _ => format!("{said} {}", fix(LostReason::Refused)),
                }
            };
            Item::new(Mark::Fail, WHAT, detail)
        }
        AuthorizeAnswer::Unexpected(what) => Item::new(
            Mark::Fail,
            WHAT,
            format!("Salesforce answered {what}: check spec.loginUrl."),
        ),
    }
}

/// A token-endpoint probe with a made-up code or refresh token, as a checklist item: a
/// refusal of the made-up grant means Salesforce accepted the client first.
pub fn probe_item(result: &Result<TokenResponse, SfError>, flow: SecretFlow) -> Item {
    let what = match flow {
        SecretFlow::WebServer => {
            "Login completion: client authentication (\"Require secret for Web Server Flow\")"
        }
        SecretFlow::Refresh => {
            "Refresh: client authentication (\"Require secret for Refresh Token Flow\")"
        }
    };
    let accepted = match flow {
        SecretFlow::WebServer => {
            "Salesforce accepted the client and refused only the check's made-up authorization code."
        }
        SecretFlow::Refresh => {
            "Salesforce accepted the client and refused only the check's made-up refresh token."
        }
    };
    match result {
        Ok(_) => Item::new(Mark::Ok, what, accepted),
        Err(SfError::AuthorizationLost { reason, .. })
            if matches!(
                (flow, reason),
                (SecretFlow::WebServer, LostReason::Refused)
                    | (SecretFlow::Refresh, LostReason::RefreshTokenRevoked)
            ) =>
        {
            Item::new(Mark::Ok, what, accepted)
        }
        Err(SfError::AuthorizationLost {
            reason,
            description,
        }) => Item::new(
            Mark::Fail,
            what,
            format!("Salesforce said: {description}. {}", fix(*reason)),
        ),
        Err(SfError::Transient {
            reason: TransientReason::UnexpectedResponse,
            detail,
        }) if flow == SecretFlow::WebServer => Item::new(
            // An OAuth error that names no client problem: the client passed.
            Mark::Ok,
            what,
            format!("{accepted} ({detail})"),
        ),
        Err(other) => unreachable_item(what, other),
    }
}

/// A grant the operator runs itself (JWT bearer, client credentials), as a checklist item.
pub fn grant_item(what: &str, result: &Result<TokenResponse, SfError>) -> Item {
    match result {
        Ok(_) => Item::new(Mark::Ok, what, "Salesforce issued an access token."),
        Err(SfError::AuthorizationLost {
            reason,
            description,
        }) => Item::new(
            Mark::Fail,
            what,
            format!(
                "Salesforce refused ({}: {description}). {}",
                Reason::from(*reason).as_str(),
                fix(*reason)
            ),
        ),
        Err(SfError::BadPrivateKey(e)) => Item::new(
            Mark::Fail,
            what,
            format!(
                "The private key in privateKeyRef is not a usable PEM RSA key ({e}): store the \
                 key whose certificate is uploaded to the app."
            ),
        ),
        Err(other) => unreachable_item(what, other),
    }
}

fn unreachable_item(what: &str, error: &SfError) -> Item {
    match error {
        SfError::HostNotAllowed(e) => Item::new(Mark::Fail, what, format!("spec.loginUrl: {e}")),
        SfError::Transient {
            reason: TransientReason::ClockSkew,
            detail,
        } => Item::new(
            Mark::Fail,
            what,
            format!("{detail}: fix the time synchronization (NTP) of this machine."),
        ),
        other => Item::new(
            Mark::Fail,
            what,
            format!("Could not get an answer from Salesforce ({other}); try again later."),
        ),
    }
}

/// Whose token it is, against the org the resource is pinned to.
pub fn identity_item(
    identity: &Result<crate::salesforce::Identity, SfError>,
    pinned: Option<&str>,
) -> Item {
    const WHAT: &str = "Whose token it is (userinfo)";
    match identity {
        Ok(who) => match pinned {
            Some(want) if !crate::pinning::same_org_id(want, &who.org_id) => Item::new(
                Mark::Fail,
                WHAT,
                format!(
                    "The token belongs to org {} but the resource is pinned to {want}: use the \
                     right org's login URL and user, or change spec.expectedOrgId.",
                    who.org_id
                ),
            ),
            _ => Item::new(
                Mark::Ok,
                WHAT,
                format!("{} in org {}.", who.username, who.org_id),
            ),
        },
        Err(SfError::AccessTokenInvalid) => Item::new(
            Mark::Info,
            WHAT,
            "The stored access token's session has ended; the operator refreshes it at its next \
             check.",
        ),
        Err(other) => unreachable_item(WHAT, other),
    }
}

/// What `check-setup` reads from the cluster before talking to Salesforce.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// `namespace/name`.
    pub org: String,
    /// `spec.loginUrl`.
    pub login_url: String,
    /// The checked flow.
    pub flow: AuthFlow,
    /// The consumer secret or the private key: `None` when the spec names none, `Err` with
    /// why it cannot be read.
    pub credential: Option<Result<SecretString, String>>,
    /// The stored access token and its instance URL, when the token Secret has them.
    pub stored: Option<(SecretString, String)>,
    /// The operator's callback URL (`--public-url` + `/oauth/callback`), when known.
    pub callback_url: Option<String>,
    /// `spec.expectedOrgId`, else `status.orgId`.
    pub pinned_org: Option<String>,
    /// The operator's current Ready condition: reason and message.
    pub verdict: Option<(String, String)>,
}

/// Runs the org's flow once against Salesforce and returns the checklist.
pub async fn run(sf: &HttpSalesforce, inputs: &Inputs) -> Checklist {
    let mut items = Vec::new();
    let flow = match &inputs.flow {
        AuthFlow::WebServer(w) => {
            web_server(sf, inputs, w, &mut items).await;
            "web server flow with PKCE"
        }
        AuthFlow::JwtBearer(j) => {
            jwt_bearer(sf, inputs, j, &mut items).await;
            "JWT bearer flow"
        }
        AuthFlow::ClientCredentials(c) => {
            client_credentials(sf, inputs, c, &mut items).await;
            "client credentials flow"
        }
    };
    if let Some((reason, message)) = &inputs.verdict {
        let mark = if reason == "TokenValid" {
            Mark::Ok
        } else {
            Mark::Info
        };
        items.push(Item::new(
            mark,
            format!("The operator's last verdict: {reason}"),
            message.clone(),
        ));
    }
    Checklist {
        org: inputs.org.clone(),
        flow,
        items,
    }
}

/// The credential item; the secret when there is one to send.
fn credential_item(
    inputs: &Inputs,
    what: &str,
    items: &mut Vec<Item>,
) -> Result<Option<SecretString>, ()> {
    match &inputs.credential {
        None => Ok(None),
        Some(Ok(secret)) => {
            items.push(Item::new(Mark::Ok, what, "present"));
            Ok(Some(secret.clone()))
        }
        Some(Err(why)) => {
            items.push(Item::new(Mark::Fail, what, why.clone()));
            Err(())
        }
    }
}

async fn web_server(
    sf: &HttpSalesforce,
    inputs: &Inputs,
    w: &WebServerAuth,
    items: &mut Vec<Item>,
) {
    let what = "Consumer secret (clientSecretRef)";
    let Ok(secret) = credential_item(inputs, what, items) else {
        return;
    };
    if secret.is_none() {
        items.push(Item::new(
            Mark::Info,
            what,
            "None in the spec (a PKCE-only client): the app must have \"Require secret for Web \
             Server Flow\" and \"Require secret for Refresh Token Flow\" cleared; the two items \
             below check this.",
        ));
    }
    items.push(authorize_page_item(sf, inputs, w).await);
    let app = AppCredentials {
        client_id: w.client_id.clone(),
        client_secret: secret,
    };
    let redirect = inputs
        .callback_url
        .clone()
        .unwrap_or_else(|| "https://sforg-check-setup.invalid/oauth/callback".to_owned());
    let probe_code = SecretString::new("sforg-check-setup-probe-code");
    let probe_verifier = SecretString::new("sforg-check-setup-probe-verifier-0123456789abcdefgh");
    let exchanged = sf
        .exchange_code(
            &inputs.login_url,
            &app,
            &probe_code,
            &probe_verifier,
            &redirect,
        )
        .await;
    items.push(probe_item(&exchanged, SecretFlow::WebServer));
    let probe_refresh = SecretString::new("sforg-check-setup-probe-refresh-token");
    let refreshed = sf.refresh(&inputs.login_url, &app, &probe_refresh).await;
    items.push(probe_item(&refreshed, SecretFlow::Refresh));
    match &inputs.stored {
        Some((access_token, instance_url)) => {
            let identity = sf.userinfo(instance_url, access_token).await;
            items.push(identity_item(&identity, inputs.pinned_org.as_deref()));
        }
        None => items.push(Item::new(
            Mark::Info,
            "Stored tokens",
            "None yet: a person logs in through the re-auth link (sforg-operator reauth NAME). \
             That login also checks the user: installation (Connected App), Permitted Users and \
             permission sets, and consent.",
        )),
    }
}

/// What Salesforce's login page says of the consumer key, callback URL, scopes and PKCE.
async fn authorize_page_item(sf: &HttpSalesforce, inputs: &Inputs, w: &WebServerAuth) -> Item {
    let scopes: Vec<&str> = w.scopes.iter().map(AsRef::as_ref).collect();
    let Some(callback) = &inputs.callback_url else {
        return Item::new(
            Mark::Skip,
            "Consumer key, callback URL, scopes and PKCE (Salesforce's login page)",
            "The operator's public URL is unknown: pass --public-url (the operator's own) to \
             check the callback URL.",
        );
    };
    let request = AuthorizeRequest {
        login_url: &inputs.login_url,
        client_id: &w.client_id,
        redirect_uri: callback,
        scopes: &scopes,
        state: "sforg-check-setup",
        login_hint: None,
        prompt: None,
    };
    match sf.probe_authorize(&request).await {
        Ok(answer) => authorize_item(&answer, callback, &w.scopes),
        Err(e) => unreachable_item("Consumer key, callback URL, scopes and PKCE", &e),
    }
}

async fn jwt_bearer(
    sf: &HttpSalesforce,
    inputs: &Inputs,
    j: &JwtBearerAuth,
    items: &mut Vec<Item>,
) {
    let Ok(Some(key)) = credential_item(inputs, "Private key (privateKeyRef)", items) else {
        return;
    };
    let what = format!(
        "JWT bearer grant for {} (certificate, pre-authorized user, audience)",
        j.username
    );
    let minted = sf
        .jwt_bearer(&inputs.login_url, &j.client_id, &j.username, &key)
        .await;
    items.push(grant_item(&what, &minted));
    after_mint(sf, inputs, minted, items).await;
}

async fn client_credentials(
    sf: &HttpSalesforce,
    inputs: &Inputs,
    c: &ClientCredentialsAuth,
    items: &mut Vec<Item>,
) {
    let Ok(Some(secret)) = credential_item(inputs, "Consumer secret (clientSecretRef)", items)
    else {
        return;
    };
    let app = AppCredentials {
        client_id: c.client_id.clone(),
        client_secret: Some(secret),
    };
    let minted = sf.client_credentials(&inputs.login_url, &app).await;
    items.push(grant_item(
        "Client credentials grant (flow enabled, run-as user)",
        &minted,
    ));
    after_mint(sf, inputs, minted, items).await;
}

/// Whose the minted token is; then the token is revoked, since nothing keeps it.
async fn after_mint(
    sf: &HttpSalesforce,
    inputs: &Inputs,
    minted: Result<TokenResponse, SfError>,
    items: &mut Vec<Item>,
) {
    let Ok(tokens) = minted else {
        return;
    };
    let identity = sf
        .userinfo(&tokens.instance_url, &tokens.access_token)
        .await;
    items.push(identity_item(&identity, inputs.pinned_org.as_deref()));
    if let Err(e) = sf.revoke(&inputs.login_url, &tokens.access_token).await {
        tracing::debug!(error = %e, "could not revoke the check's access token");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost(reason: LostReason, description: &str) -> Result<TokenResponse, SfError> {
        Err(SfError::AuthorizationLost {
            reason,
            description: description.into(),
        })
    }

    #[test]
    fn probes_read_a_refused_made_up_grant_as_an_accepted_client() {
        use LostReason as L;
        use SecretFlow as F;
        #[rustfmt::skip]
        let cases = [
            (F::WebServer, lost(L::Refused, "invalid authorization code"), Mark::Ok, ""),
            (F::WebServer, lost(L::WebServerSecretRequired, "invalid client credentials"), Mark::Fail, "Require secret for Web Server Flow"),
            (F::WebServer, lost(L::InvalidClientSecret, "invalid client credentials"), Mark::Fail, "clientSecretRef"),
            (F::WebServer, lost(L::InvalidClientId, "client identifier invalid"), Mark::Fail, "Consumer Key and Secret"),
            (F::Refresh, lost(L::RefreshTokenRevoked, "expired access/refresh token"), Mark::Ok, ""),
            (F::Refresh, lost(L::RefreshSecretRequired, "invalid client credentials"), Mark::Fail, "Require secret for Refresh Token Flow"),
            (F::Refresh, lost(L::InvalidClientSecret, "authentication failure"), Mark::Fail, "clientSecretRef"),
            (F::Refresh, Err(SfError::Transient { reason: TransientReason::Timeout, detail: "timed out".into() }), Mark::Fail, "try again later"),
        ];
        for (flow, result, mark, needle) in cases {
            let item = probe_item(&result, flow);
            assert_eq!(item.mark, mark, "{flow:?} {result:?}: {item:?}");
            assert!(item.detail.contains(needle), "{item:?}");
        }
    }

    #[test]
    fn authorize_refusals_name_the_setting() {
        let scopes = [std::borrow::Cow::Borrowed("api"), "refresh_token".into()];
        let refused = |e: &str, d: &str| AuthorizeAnswer::Refused {
            error: e.into(),
            description: d.into(),
        };
        #[rustfmt::skip]
        let cases = [
            (AuthorizeAnswer::LoginPage, Mark::Ok, "login page"),
            (refused("redirect_uri_mismatch", "redirect_uri must match configuration"), Mark::Fail, "Settings > OAuth Settings > Callback URL"),
            (refused("invalid_scope", "the requested scope is not allowed"), Mark::Fail, "refresh_token, offline_access"),
            (refused("invalid_client_id", "client identifier invalid"), Mark::Fail, "Consumer Key and Secret"),
            (refused("OAUTH_APP_BLOCKED", "this app is blocked by admin"), Mark::Fail, "unblock"),
            (refused("invalid_request", "missing required code challenge"), Mark::Fail, "PKCE"),
            (AuthorizeAnswer::Unexpected("HTTP 404".into()), Mark::Fail, "spec.loginUrl"),
        ];
        for (answer, mark, needle) in cases {
            let item = authorize_item(&answer, "https://op.example/oauth/callback", &scopes);
            assert_eq!(item.mark, mark, "{answer:?}");
            assert!(item.detail.contains(needle), "{answer:?}: {}", item.detail);
        }
    }

    #[test]
    fn every_reason_has_a_fix_naming_where_to_change_it() {
        for (reason, needle) in [
            (LostReason::UserNotApproved, "Policies tab > OAuth Policies"),
            (LostReason::NoClientCredentialsUser, "Run As"),
            (LostReason::ConnectedAppNotInstalled, "External Client App"),
            (LostReason::RefreshSecretRequired, "clientSecretRef"),
        ] {
            assert!(fix(reason).contains(needle), "{reason:?}");
        }
    }

    #[test]
    fn checklist_renders_marks_and_counts_failures() {
        let list = Checklist {
            org: "backups/acme".into(),
            flow: "JWT bearer flow",
            items: vec![
                Item::new(Mark::Ok, "Private key (privateKeyRef)", "present"),
                Item::new(Mark::Fail, "JWT bearer grant", "Salesforce refused"),
            ],
        };
        let text = list.render();
        assert_eq!(list.failures(), 1);
        assert!(text.starts_with("Setup of backups/acme (JWT bearer flow):\n"));
        assert!(text.contains("[ok]   Private key (privateKeyRef)\n       present\n"));
        assert!(text.contains("[FAIL] JWT bearer grant\n"));
        assert!(text.ends_with(
            "1 thing(s) to change in Salesforce or in the SalesforceOrg, listed above.\n"
        ));
    }
}
