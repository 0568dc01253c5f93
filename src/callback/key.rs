//! The key that signs re-auth links and OAuth states: 32 random bytes in a Secret in the
//! operator's namespace, created by whichever replica starts first, so every replica signs
//! and verifies alike.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::info;

use super::state::{self, StateKey};

/// The default name of the Secret holding the signing key.
pub const DEFAULT_KEY_SECRET: &str = "sforg-operator-state-key";
/// The key in that Secret.
pub const KEY_SECRET_KEY: &str = "key";

/// Why the signing key is not available.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The API server refused or failed.
    #[error(
        "cannot read or create the state key Secret {ns}/{name}: {source}; the operator needs get and create on Secrets in that namespace"
    )]
    Kube {
        /// Namespace.
        ns: String,
        /// Name.
        name: String,
        /// The failure.
        source: kube::Error,
    },
    /// The Secret kept appearing and disappearing.
    #[error(
        "Secret {ns}/{name} was created and deleted repeatedly while the operator started; leave it alone and start the operator again"
    )]
    Unsettled {
        /// Namespace.
        ns: String,
        /// Name.
        name: String,
    },
    /// The Secret exists without a usable key.
    #[error(
        "Secret {ns}/{name} has no {len}-byte key {KEY_SECRET_KEY:?}: delete it and the operator creates a new one (re-auth links issued so far then stop working)",
        len = state::KEY_LEN
    )]
    Invalid {
        /// Namespace.
        ns: String,
        /// Name.
        name: String,
    },
}

/// Reads the signing key from the Secret `ns/name`, creating it with a random key when
/// missing. Replicas starting together agree: the first create wins and the others read it.
pub async fn load_or_create_key(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<StateKey, KeyError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let kube_err = |source| KeyError::Kube {
        ns: ns.to_owned(),
        name: name.to_owned(),
        source,
    };
    let invalid = || KeyError::Invalid {
        ns: ns.to_owned(),
        name: name.to_owned(),
    };
    for _ in 0..5 {
        if let Some(secret) = api.get_opt(name).await.map_err(kube_err)? {
            let bytes = secret
                .data
                .as_ref()
                .and_then(|d| d.get(KEY_SECRET_KEY))
                .ok_or_else(invalid)?;
            return StateKey::from_bytes(&bytes.0).map_err(|_| invalid());
        }
        let key = StateKey::generate();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(ns.to_owned()),
                labels: Some(BTreeMap::from([
                    (
                        "app.kubernetes.io/name".to_owned(),
                        "sforg-operator".to_owned(),
                    ),
                    (
                        "app.kubernetes.io/component".to_owned(),
                        "state-key".to_owned(),
                    ),
                ])),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            immutable: Some(true),
            data: Some(BTreeMap::from([(
                KEY_SECRET_KEY.to_owned(),
                k8s_openapi::ByteString(key.as_bytes().to_vec()),
            )])),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                info!(namespace = %ns, name = %name, "created the state signing key");
                return Ok(key);
            }
            // Another replica created it first: read theirs.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(kube_err(e)),
        }
    }
    Err(KeyError::Unsettled {
        ns: ns.to_owned(),
        name: name.to_owned(),
    })
}
