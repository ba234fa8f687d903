//! Leader election through a `coordination.k8s.io/v1` Lease.
//!
//! Only the holder runs controllers. Expiry is judged by how long *this* process has
//! watched the lease go unrenewed (as client-go does), not by comparing the holder's
//! clock with ours.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::Error;

/// Lease timing: renew about every `renew_every`; others may take over after `duration`.
#[derive(Clone, Copy, Debug)]
pub struct LeaseTiming {
    pub duration: Duration,
    pub renew_every: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }
}

/// What this process last saw in the lease and when it saw it change.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Observation {
    holder: Option<String>,
    renew_time: Option<Timestamp>,
    seen_at: Instant,
}

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
    observed: Mutex<Option<Observation>>,
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

impl LeaderElector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: LeaseTiming,
    ) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
            observed: Mutex::new(None),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn timing(&self) -> LeaseTiming {
        self.timing
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.timing.duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// One election round: creates, renews or takes over the lease. `Ok(true)` when this
    /// process holds it afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.duration_seconds()),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(error) if is_conflict(&error) => Ok(false),
                Err(error) => Err(error.into()),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec
            .holder_identity
            .clone()
            .filter(|holder| !holder.is_empty());
        let renew_time = spec.renew_time.as_ref().map(|time| time.0);
        let held_by_us = holder.as_deref() == Some(self.identity.as_str());

        if !held_by_us && holder.is_some() && !self.observed_expired(&holder, renew_time).await {
            return Ok(false);
        }
        if !held_by_us {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(self.duration_seconds());
        spec.renew_time = Some(MicroTime(now));
        // `replace` carries the resourceVersion we read: a concurrent writer makes it fail.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(error) if is_conflict(&error) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Whether another holder's lease has gone unrenewed for a full lease duration, as
    /// measured on our own monotonic clock.
    async fn observed_expired(
        &self,
        holder: &Option<String>,
        renew_time: Option<Timestamp>,
    ) -> bool {
        let mut observed = self.observed.lock().await;
        let now = Instant::now();
        match observed.as_ref() {
            Some(seen) if seen.holder == *holder && seen.renew_time == renew_time => {
                now.duration_since(seen.seen_at) >= self.timing.duration
            }
            _ => {
                *observed = Some(Observation {
                    holder: holder.clone(),
                    renew_time,
                    seen_at: now,
                });
                false
            }
        }
    }

    /// Waits until this process holds the lease.
    pub async fn acquire(&self) -> Result<(), Error> {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "leader election round failed"),
            }
            tokio::time::sleep(self.timing.renew_every).await;
        }
    }

    /// Renews until the lease is lost: returns when another process took it over or
    /// renewals kept failing for a whole lease duration.
    pub async fn hold(&self) -> Error {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(self.timing.renew_every).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = Instant::now(),
                Ok(false) => {
                    return Error::LeaderElection(format!(
                        "lease {} was taken over by another replica",
                        self.name
                    ));
                }
                Err(error) => {
                    tracing::warn!(%error, "lease renewal failed");
                    if last_renewed.elapsed() >= self.timing.duration {
                        return Error::LeaderElection(format!(
                            "could not renew lease {} for {:?}: {error}",
                            self.name, self.timing.duration
                        ));
                    }
                }
            }
        }
    }

    /// Gives the lease up on orderly shutdown so a standby takes over at once.
    pub async fn release(&self) -> Result<(), Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_conflict(&error) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}
