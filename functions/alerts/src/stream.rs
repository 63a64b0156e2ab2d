//! The DeviceStats stream: each device's `latest` changes judged step by
//! step, and the alerts they raise delivered once, in order per device.

use std::collections::{BTreeMap, BTreeSet};

use geotag_aws::device_stats::DeviceStatsStreamRecord;
use geotag_aws::stream::ReadAs;

use geotag::alerts::{Alert, SpeedWatch, Transition, live_steps, transition_alerts};
use geotag::stats::{LatestState, cmp_sequence};
use geotag::store::{AlertLog, AlertSink, Assignment, Registry, StatsBody, StatsItem};

use crate::delivery::{Delivery, deliver};
use crate::{Alerts, PublishedAlerts};

/// What one invocation did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// Sequence numbers to report as batch item failures.
    pub failures: Vec<String>,
    pub transitions: usize,
    pub raised: usize,
    /// Alerts whose id had been published already (duplicates, retries).
    pub already_published: usize,
    pub published_by_type: PublishedAlerts,
    /// Records that are not a `latest` change (filter criteria should drop them).
    pub ignored: usize,
}

impl Outcome {
    pub fn published(&self) -> usize {
        self.published_by_type.total()
    }
}

/// The `latest` state a DeviceStats stream image holds, with its device;
/// `None` for rollups and for what is not a DeviceStats item.
fn latest_of(image: &ReadAs<StatsItem>) -> Option<(String, LatestState)> {
    let item = image.0.as_ref()?;
    match &item.body {
        StatsBody::Latest(state) => Some((item.device_id.clone(), state.clone())),
        StatsBody::Rollup(..) => None,
    }
}

struct Change {
    sequence: String,
    old: Option<LatestState>,
    new: LatestState,
}

/// [`process_stream_leased`] with a lease of one minute from now (for tests
/// and tools that have no invocation deadline).
pub async fn process_stream<R: Registry, L: AlertLog, P: AlertSink, I>(
    alerts: &Alerts<R, L, P, I>,
    records: &[DeviceStatsStreamRecord],
) -> Outcome {
    process_stream_leased(alerts, records, geotag::clock::now_ms() + 60_000).await
}

/// Judges every `latest` change in `records` and delivers the alerts they
/// raise; claims taken are leased until `lease_until_ms`.
pub async fn process_stream_leased<R: Registry, L: AlertLog, P: AlertSink, I>(
    alerts: &Alerts<R, L, P, I>,
    records: &[DeviceStatsStreamRecord],
    lease_until_ms: i64,
) -> Outcome {
    let mut outcome = Outcome::default();
    let changes = changes_by_device(records, &mut outcome);
    outcome.transitions = changes.values().map(Vec::len).sum();
    let devices: Vec<String> = changes.keys().cloned().collect();
    let lowest = |changes: &[Change]| {
        changes
            .iter()
            .map(|c| c.sequence.clone())
            .min_by(|a, b| cmp_sequence(a, b))
    };

    let (assignments, watches) = match (
        alerts.registry.assignments(&devices).await,
        alerts.log.speed_watches(&devices).await,
    ) {
        (Ok(assignments), Ok(watches)) => (assignments, watches),
        (Err(error), _) | (_, Err(error)) => {
            tracing::warn!(%error, "reading the registry or the alert log failed; the batch will be retried");
            outcome.failures = changes.values().filter_map(|c| lowest(c)).collect();
            return outcome;
        }
    };

    let mut failures: BTreeSet<String> = BTreeSet::new();
    // The episodes as stored, so that a change is saved only when it differs.
    let mut watches_saved = watches.clone();
    for (device_id, device_changes) in &changes {
        let Some(assignment) = assignments.get(device_id) else {
            continue;
        };
        let mut watch = watches.get(device_id).copied().unwrap_or_default();
        for change in device_changes {
            let raised = alerts_of_change(device_id, assignment, change, &mut watch);
            let before = watches_saved.get(device_id).copied().unwrap_or_default();
            outcome.raised += raised.len();
            let mut delivered = deliver_all(alerts, &raised, lease_until_ms, &mut outcome).await;
            if delivered && !watch.same_episode(&before) {
                match alerts.log.save_speed_watch(device_id, &watch).await {
                    Ok(()) => {
                        watches_saved.insert(device_id.clone(), watch);
                    }
                    Err(error) => {
                        tracing::warn!(%device_id, %error, "speeding episode not saved; its record will be retried");
                        delivered = false;
                    }
                }
            }
            if !delivered {
                // Later changes of this device wait for the retry, in order.
                failures.insert(change.sequence.clone());
                break;
            }
        }
    }
    outcome.failures = failures.into_iter().collect();
    outcome.failures.sort_by(|a, b| cmp_sequence(a, b));
    outcome
}

/// Each device's `latest` changes in stream order; records that are not one
/// are counted as ignored.
fn changes_by_device(
    records: &[DeviceStatsStreamRecord],
    outcome: &mut Outcome,
) -> BTreeMap<String, Vec<Change>> {
    let mut changes: BTreeMap<String, Vec<Change>> = BTreeMap::new();
    for record in records {
        let (Some(sequence), Some((device_id, new))) = (
            record.change.sequence_number.as_deref().map(str::to_owned),
            latest_of(&record.change.new_image),
        ) else {
            outcome.ignored += 1;
            continue;
        };
        let old = latest_of(&record.change.old_image).map(|(_, state)| state);
        changes
            .entry(device_id)
            .or_default()
            .push(Change { sequence, old, new });
    }
    changes
}

/// The alerts one change raises, judged step by step through the trail it
/// carries (a visit folded into one stats write is still seen), and the
/// speeding episode `watch` carried forward.
fn alerts_of_change(
    device_id: &str,
    assignment: &Assignment,
    change: &Change,
    watch: &mut SpeedWatch,
) -> Vec<Alert> {
    let mut raised = Vec::new();
    let mut previous = change.old.clone();
    for step in live_steps(change.old.as_ref(), &change.new) {
        let transition = Transition {
            device_id,
            customer_id: assignment.customer_id.as_deref(),
            old: previous.as_ref(),
            new: &step,
        };
        raised.extend(transition_alerts(
            &transition,
            &assignment.geofences,
            &assignment.thresholds,
        ));
        let moved = previous
            .as_ref()
            .is_none_or(|old| step.reading_key != old.reading_key);
        if moved
            && let Some(alert) = watch.observe(
                device_id,
                assignment.customer_id.as_deref(),
                &step,
                &assignment.thresholds,
            )
        {
            raised.push(alert);
        }
        previous = Some(step);
    }
    raised
}

/// Delivers each alert once; whether all were (published now or before).
async fn deliver_all<R, L: AlertLog, P: AlertSink, I>(
    alerts: &Alerts<R, L, P, I>,
    raised: &[Alert],
    lease_until_ms: i64,
    outcome: &mut Outcome,
) -> bool {
    let mut delivered = true;
    for alert in raised {
        match deliver(alerts, alert, lease_until_ms).await {
            Ok(Delivery::Published) => outcome.published_by_type.add(alert),
            Ok(Delivery::AlreadyPublished) => outcome.already_published += 1,
            Ok(Delivery::Busy) => {
                tracing::info!(alert_id = %alert.id, "alert claimed by a concurrent invocation; its record will be retried");
                delivered = false;
            }
            Err(error) => {
                tracing::warn!(alert_id = %alert.id, %error, "alert not published; its record will be retried");
                delivered = false;
            }
        }
    }
    delivered
}
