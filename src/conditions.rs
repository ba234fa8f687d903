//! Standard status conditions with stable `lastTransitionTime`.
//!
//! A condition's timestamp records when its *status* last flipped; rewriting the same
//! status with a new reason or message keeps the old timestamp, so `kubectl wait` and
//! dashboards see real transitions only.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// What the operator wants a condition to say; the timestamp is filled in by [`merge`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCondition {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl DesiredCondition {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        DesiredCondition {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

fn status_str(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// Builds the new condition list from the desired ones, keeping the previous
/// `lastTransitionTime` of every condition whose status did not change.
pub fn merge(
    previous: &[Condition],
    desired: &[DesiredCondition],
    observed_generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|want| {
            let status = status_str(want.status);
            let last_transition_time = previous
                .iter()
                .find(|old| old.type_ == want.type_ && old.status == status)
                .map(|old| old.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: want.type_.to_string(),
                status: status.to_string(),
                reason: want.reason.clone(),
                message: want.message.clone(),
                observed_generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Whether `conditions` holds `type_` with status True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|condition| condition.type_ == type_ && condition.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_api::conditions::{DEGRADED, READY};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("valid timestamp")
    }

    #[test]
    fn unchanged_status_keeps_timestamp_even_when_reason_changes() {
        let first = merge(
            &[],
            &[DesiredCondition::new(
                READY,
                false,
                "PodsStarting",
                "0/3 shards ready",
            )],
            Some(1),
            at(100),
        );
        assert_eq!(first[0].last_transition_time, Time(at(100)));
        assert_eq!(first[0].status, "False");

        let second = merge(
            &first,
            &[DesiredCondition::new(
                READY,
                false,
                "Bootstrapping",
                "1/3 shards ready",
            )],
            Some(2),
            at(200),
        );
        assert_eq!(second[0].last_transition_time, Time(at(100)));
        assert_eq!(second[0].reason, "Bootstrapping");
        assert_eq!(second[0].observed_generation, Some(2));
    }

    #[test]
    fn flipped_status_gets_new_timestamp() {
        let first = merge(
            &[],
            &[
                DesiredCondition::new(READY, false, "PodsStarting", ""),
                DesiredCondition::new(DEGRADED, false, "AsExpected", ""),
            ],
            None,
            at(100),
        );
        let second = merge(
            &first,
            &[
                DesiredCondition::new(READY, true, "AllShardsReady", ""),
                DesiredCondition::new(DEGRADED, false, "AsExpected", ""),
            ],
            None,
            at(300),
        );
        assert_eq!(second[0].last_transition_time, Time(at(300)));
        assert_eq!(second[1].last_transition_time, Time(at(100)));
        assert!(is_true(&second, READY));
        assert!(!is_true(&second, DEGRADED));
    }
}
