//! The silence check, on EventBridge's schedule: devices found silent in the
//! `SilenceIndex`, one silence alert per quiet period.

use geotag::alerts::silence_alert;
use geotag::store::{AlertLog, AlertSink, Registry, SilenceIndex, StoreError};

use crate::delivery::{Delivery, deliver};
use crate::{Alerts, PublishedAlerts};

/// What one silence check did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ScheduleOutcome {
    /// Devices found silent past their threshold.
    pub silent: usize,
    pub already_published: usize,
    pub published_by_type: PublishedAlerts,
    /// Alerts not delivered (publish failed, or claimed elsewhere).
    pub undelivered: usize,
}

impl ScheduleOutcome {
    pub fn published(&self) -> usize {
        self.published_by_type.total()
    }
}

/// Finds the devices silent at `now_ms` and raises one silence alert for
/// each quiet period. Reads the index over `[now - largest threshold -
/// lookback, now - smallest threshold)` only: the devices that may have just
/// crossed a threshold, not every device ever silent.
pub async fn process_schedule<R: Registry, L: AlertLog, P: AlertSink, I: SilenceIndex>(
    alerts: &Alerts<R, L, P, I>,
    now_ms: i64,
    lease_until_ms: i64,
) -> Result<ScheduleOutcome, StoreError> {
    let thresholds = alerts.registry.all_thresholds().await?;
    let shortest = thresholds
        .iter()
        .map(|t| t.silence_after_ms)
        .min()
        .unwrap_or(0);
    let longest = thresholds
        .iter()
        .map(|t| t.silence_after_ms)
        .max()
        .unwrap_or(0);
    let candidates = alerts
        .silence
        .last_seen_between(
            // Thresholds are bounded where they are set and where they are
            // read; saturating all the same, since release builds wrap.
            now_ms
                .saturating_sub(longest)
                .saturating_sub(alerts.silence_lookback_ms),
            now_ms.saturating_sub(shortest),
        )
        .await?;
    let devices: Vec<String> = candidates
        .iter()
        .map(|(device, _)| device.clone())
        .collect();
    let assignments = alerts.registry.assignments(&devices).await?;
    let mut outcome = ScheduleOutcome::default();
    for (device_id, last_seen_ms) in &candidates {
        let Some(assignment) = assignments.get(device_id) else {
            continue;
        };
        let Some(alert) = silence_alert(
            device_id,
            assignment.customer_id.as_deref(),
            *last_seen_ms,
            now_ms,
            &assignment.thresholds,
        ) else {
            continue;
        };
        outcome.silent += 1;
        match deliver(alerts, &alert, lease_until_ms).await {
            Ok(Delivery::Published) => outcome.published_by_type.add(&alert),
            Ok(Delivery::AlreadyPublished) => outcome.already_published += 1,
            Ok(Delivery::Busy) => outcome.undelivered += 1,
            Err(error) => {
                tracing::warn!(alert_id = %alert.id, %error, "silence alert not published; the run will be retried");
                outcome.undelivered += 1;
            }
        }
    }
    Ok(outcome)
}
