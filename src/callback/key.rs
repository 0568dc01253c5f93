//! The key that signs re-auth links and OAuth states: 32 random bytes in a Secret in the
//! operator's namespace, created by whichever replica starts first, so every replica signs
//! and verifies alike.
//!
//! Rotation: the Secret may also hold the previous key under [`PREVIOUS_KEY_SECRET_KEY`].
//! Tokens name the key that signed them, so during a rollover links signed with the previous
//! key keep working until they expire (24 hours), while everything new is signed with the
//! current key and status gets links of the current key at once. README.md describes the
//! steps.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::info;

use super::state::{self, SigningKeys, StateKey};

/// The default name of the Secret holding the signing key.
pub const DEFAULT_KEY_SECRET: &str = "sforg-operator-state-key";
/// The key in that Secret.
pub const KEY_SECRET_KEY: &str = "key";
/// The previous key in that Secret, during a rollover.
pub const PREVIOUS_KEY_SECRET_KEY: &str = "previous";

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
        "Secret {ns}/{name} has no {len}-byte key {KEY_SECRET_KEY:?} (or its {PREVIOUS_KEY_SECRET_KEY:?} is not {len} bytes): delete it and the operator creates a new one (re-auth links issued so far then stop working)",
        len = state::KEY_LEN
    )]
    Invalid {
        /// Namespace.
        ns: String,
        /// Name.
        name: String,
    },
}

/// Reads the signing keys from the Secret `ns/name`, creating it with a random key when
/// missing. Replicas starting together agree: the first create wins and the others read it.
pub async fn load_or_create_key(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<SigningKeys, KeyError> {
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
            let data = secret.data.as_ref();
            let bytes = data
                .and_then(|d| d.get(KEY_SECRET_KEY))
                .ok_or_else(invalid)?;
            let current = StateKey::from_bytes(&bytes.0).map_err(|_| invalid())?;
            let previous = match data.and_then(|d| d.get(PREVIOUS_KEY_SECRET_KEY)) {
                Some(bytes) => Some(StateKey::from_bytes(&bytes.0).map_err(|_| invalid())?),
                None => None,
            };
            if previous.is_some() {
                info!(namespace = %ns, name = %name, "state key rollover: links of the previous key are still accepted");
            }
            return Ok(SigningKeys::new(current, previous));
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
                return Ok(key.into());
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
