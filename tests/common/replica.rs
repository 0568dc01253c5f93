//! One replica of the operator as a Deployment runs it: leader election on a Lease, the
//! controller scoped to the test namespace, metrics to tell whether it leads.

use std::sync::Arc;

use sforg_operator::controller::{self, Hooks, Scope};
use sforg_operator::leader::{Elector, LeaderError, LeaseConfig};
use sforg_operator::metrics::Metrics;
use sforg_operator::reconcile::Settings;
use sforg_operator::salesforce::Salesforce;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::operator::Operator;

/// A running replica.
pub struct Replica {
    /// Its identity in the Lease.
    pub id: String,
    /// Its metrics (`sforg_leader`).
    pub metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), LeaderError>>,
}

impl Replica {
    /// Starts a replica `id` competing for `lease`, talking to Salesforce through `salesforce`.
    pub fn start<S: Salesforce + Clone>(
        op: &Operator,
        lease: &str,
        id: &str,
        salesforce: S,
    ) -> Self {
        Self::start_with(op, lease, id, salesforce, Settings::default())
    }

    /// [`Replica::start`] with the controller's `settings`.
    pub fn start_with<S: Salesforce + Clone>(
        op: &Operator,
        lease: &str,
        id: &str,
        salesforce: S,
        settings: Settings,
    ) -> Self {
        let metrics = Metrics::new();
        let config = LeaseConfig::new(lease, op.ns.clone(), id);
        let elector = Elector::new(op.client.clone(), config)
            .expect("elector")
            .with_metrics(metrics.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let client = op.client.clone();
        let ns = op.ns.clone();
        let hooks = Hooks {
            metrics: Some(metrics.clone()),
            health: None,
        };
        let instance = id.to_owned();
        let task = tokio::spawn(async move {
            elector
                .run(
                    async move {
                        let _ = stopped.await;
                    },
                    |stop| {
                        controller::run_with(
                            client.clone(),
                            salesforce.clone(),
                            settings.clone(),
                            Scope {
                                namespaces: vec![ns.clone()],
                            },
                            instance.clone(),
                            stop,
                            hooks.clone(),
                        )
                    },
                )
                .await
        });
        Replica {
            id: id.to_owned(),
            metrics,
            stop: Some(stop),
            task,
        }
    }

    /// Whether it leads now.
    pub fn leads(&self) -> bool {
        leads(&self.metrics)
    }

    /// Stops as on SIGTERM: running reconciles finish, then the Lease is released.
    pub async fn stop(&mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        let result = (&mut self.task).await.expect("join the replica");
        assert!(result.is_ok(), "{result:?}");
    }

    /// Dies as on SIGKILL: nothing finishes, the Lease is not released.
    pub async fn crash(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether `metrics` says its replica leads.
pub fn leads(metrics: &Metrics) -> bool {
    metrics
        .encode()
        .unwrap_or_default()
        .lines()
        .any(|l| l == "sforg_leader 1")
}
