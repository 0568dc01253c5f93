//! A typed builder for SalesforceOrg specs, so tests say what differs from a plain web server
//! org instead of pasting JSON.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use sforg_operator::crd::{
    AuthSpec, ClientCredentialsAuth, Dependents, JwtBearerAuth, RefreshTokenPolicy,
    RefreshTokenPolicyType, SalesforceOrgSpec, SecretKeyRef, TokenSecretRef, WebServerAuth,
};

/// The consumer secret the harness stores for the demo app (`Operator::ensure_app_secret`).
pub fn demo_app_secret() -> SecretKeyRef {
    SecretKeyRef {
        name: "demo-app".into(),
        key: "client-secret".into(),
    }
}

/// A spec under construction.
#[derive(Clone, Debug)]
pub struct OrgSpec(SalesforceOrgSpec);

impl OrgSpec {
    /// A web server org of app `client_id` with the demo consumer secret, its tokens in
    /// `<name>-token`.
    pub fn web(name: &str, client_id: &str) -> Self {
        Self(SalesforceOrgSpec {
            login_url: "https://login.salesforce.com".into(),
            auth: AuthSpec {
                web_server: Some(Box::new(WebServerAuth {
                    client_id: client_id.into(),
                    client_secret_ref: Some(demo_app_secret()),
                    scopes: vec!["api".into(), "refresh_token".into()],
                })),
                ..AuthSpec::default()
            },
            token_secret_ref: TokenSecretRef {
                name: format!("{name}-token"),
            },
            expected_org_id: None,
            dependents: None,
            check_interval: None,
            refresh_token_policy: None,
            notifications: None,
        })
    }

    /// A JWT bearer org acting as `username`, its key in `key`.
    pub fn jwt(name: &str, client_id: &str, username: &str, key: SecretKeyRef) -> Self {
        let mut spec = Self::web(name, client_id);
        spec.0.auth = AuthSpec {
            jwt_bearer: Some(Box::new(JwtBearerAuth {
                client_id: client_id.into(),
                username: username.into(),
                private_key_ref: key,
            })),
            ..AuthSpec::default()
        };
        spec
    }

    /// A client credentials org on `login_url` (a My Domain URL).
    pub fn client_credentials(name: &str, client_id: &str, login_url: &str) -> Self {
        let mut spec = Self::web(name, client_id);
        spec.0.login_url = login_url.into();
        spec.0.auth = AuthSpec {
            client_credentials: Some(Box::new(ClientCredentialsAuth {
                client_id: client_id.into(),
                client_secret_ref: demo_app_secret(),
            })),
            ..AuthSpec::default()
        };
        spec
    }

    /// Another login URL.
    pub fn login_url(mut self, url: &str) -> Self {
        self.0.login_url = url.into();
        self
    }

    /// Another consumer secret (web server flow).
    pub fn client_secret(mut self, secret: Option<SecretKeyRef>) -> Self {
        if let Some(web) = self.0.auth.web_server.as_mut() {
            web.client_secret_ref = secret;
        }
        self
    }

    /// Another token Secret name.
    pub fn token_secret(mut self, name: &str) -> Self {
        self.0.token_secret_ref.name = name.into();
        self
    }

    /// Pins the org id.
    pub fn expected_org_id(mut self, id: &str) -> Self {
        self.0.expected_org_id = Some(id.into());
        self
    }

    /// Depends on the CronJobs with these labels.
    pub fn selecting(mut self, labels: &[(&str, &str)]) -> Self {
        let match_labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.0.dependents = Some(Dependents {
            cron_job_selector: Some(
                LabelSelector {
                    match_labels: Some(match_labels),
                    ..LabelSelector::default()
                }
                .into(),
            ),
            cron_job_names: None,
        });
        self
    }

    /// `spec.checkInterval`.
    pub fn check_interval(mut self, interval: &str) -> Self {
        self.0.check_interval = Some(interval.into());
        self
    }

    /// `spec.refreshTokenPolicy`.
    pub fn refresh_token_policy(
        mut self,
        type_: RefreshTokenPolicyType,
        duration: Option<&str>,
    ) -> Self {
        self.0.refresh_token_policy = Some(Box::new(RefreshTokenPolicy {
            type_,
            duration: duration.map(str::to_owned),
        }));
        self
    }

    /// The spec.
    pub fn build(self) -> SalesforceOrgSpec {
        self.0
    }

    /// The spec as JSON, for [`super::operator::Operator::create_org`].
    pub fn json(self) -> serde_json::Value {
        serde_json::to_value(self.0).expect("spec as JSON")
    }
}
