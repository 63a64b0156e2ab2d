//! The alerts handler: DeviceStats' latest-state changes in, alerts published
//! once each.
//!
//! For each change of a device's `latest` item (old and new image, from the
//! DeviceStats stream), the device's assignment (customer, thresholds,
//! geofences) decides which rules apply (`geotag::alerts`). Each alert is
//! *claimed* in the alert log with a conditional write of its deterministic
//! id, then published, then marked published:
//!
//! - a duplicate stream record, a retried batch or a concurrent invocation
//!   finds the id claimed and published, and publishes nothing;
//! - a publish that fails leaves the id claimed but unpublished, and makes the
//!   record a batch item failure; the retry finds it unpublished and
//!   publishes it. Nothing is lost. The one window for a second copy is a crash
//!   between a successful publish and the mark, which a standard SNS topic
//!   cannot deduplicate (email cannot subscribe to a FIFO topic).
//!
//! A device's speeding episode ([`geotag::alerts::SpeedWatch`]) is saved after each change
//! whose alerts were all delivered, so a retry resumes the episode where the
//! failure left it and raises the same id.
//!
//! Not here yet: the silence check on the schedule (the `SilenceIndex` query),
//! the AWS adapters and the binary.

use std::collections::{BTreeMap, BTreeSet};

use aws_lambda_events::dynamodb::EventRecord;
use geotag::alerts::{Alert, Transition, transition_alerts};
use geotag::stats::{LatestState, cmp_sequence};
use geotag::store::{AlertLog, AlertSink, Claim, Registry, StoreError};
use serde::Deserialize;

pub struct Alerts<R, L, P> {
    pub registry: R,
    pub log: L,
    pub sink: P,
}

/// What one invocation did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// Sequence numbers to report as batch item failures.
    pub failures: Vec<String>,
    pub transitions: usize,
    pub raised: usize,
    pub published: usize,
    /// Alerts whose id had been published already (duplicates, retries).
    pub already_published: usize,
    /// Records that are not a `latest` change (filter criteria should drop them).
    pub ignored: usize,
}

/// A `latest` item as the DeviceStats stream shows it.
#[derive(Deserialize)]
struct LatestImage {
    device_id: String,
    sk: String,
    ts: i64,
    reading_key: String,
    lat: f64,
    lon: f64,
    speed: Option<f64>,
    heading: Option<f64>,
    accuracy: Option<f64>,
    battery: Option<f64>,
    battery_ts: Option<i64>,
    seq: Option<u64>,
    version: u64,
}

fn latest_of(item: &serde_dynamo::Item) -> Option<(String, LatestState)> {
    let image: LatestImage = serde_dynamo::from_item(item.clone()).ok()?;
    if image.sk != geotag::store::LATEST_SORT_KEY {
        return None;
    }
    Some((
        image.device_id,
        LatestState {
            ts_ms: image.ts,
            reading_key: image.reading_key,
            lat: image.lat,
            lon: image.lon,
            speed: image.speed,
            heading: image.heading,
            accuracy: image.accuracy,
            battery: image.battery,
            battery_ts_ms: image.battery_ts,
            seq: image.seq,
            version: image.version,
        },
    ))
}

struct Change {
    sequence: String,
    old: Option<LatestState>,
    new: LatestState,
}

pub async fn process_stream<R: Registry, L: AlertLog, P: AlertSink>(
    alerts: &Alerts<R, L, P>,
    records: &[EventRecord],
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut changes: BTreeMap<String, Vec<Change>> = BTreeMap::new();
    for record in records {
        let (Some(sequence), Some((device_id, new))) = (
            record.change.sequence_number.clone(),
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
    outcome.transitions = changes.values().map(Vec::len).sum();
    let devices: Vec<String> = changes.keys().cloned().collect();
    let lowest = |changes: &[Change]| {
        changes
            .iter()
            .map(|c| c.sequence.clone())
            .min_by(|a, b| cmp_sequence(a, b))
    };

    let (assignments, mut watches) = match (
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
    for (device_id, device_changes) in &changes {
        let Some(assignment) = assignments.get(device_id) else {
            continue;
        };
        let mut watch = watches.remove(device_id).unwrap_or_default();
        for change in device_changes {
            let transition = Transition {
                device_id,
                customer_id: assignment.customer_id.as_deref(),
                old: change.old.as_ref(),
                new: &change.new,
            };
            let mut raised =
                transition_alerts(&transition, &assignment.geofences, &assignment.thresholds);
            let before = watch;
            let moved = change
                .old
                .as_ref()
                .is_none_or(|old| change.new.version > old.version);
            if moved
                && let Some(alert) = watch.observe(
                    device_id,
                    assignment.customer_id.as_deref(),
                    &change.new,
                    &assignment.thresholds,
                )
            {
                raised.push(alert);
            }
            outcome.raised += raised.len();
            let mut delivered = true;
            for alert in &raised {
                match deliver(alerts, alert).await {
                    Ok(true) => outcome.published += 1,
                    Ok(false) => outcome.already_published += 1,
                    Err(error) => {
                        tracing::warn!(alert_id = %alert.id, %error, "alert not published; its record will be retried");
                        delivered = false;
                    }
                }
            }
            if delivered && watch != before {
                delivered = alerts.log.save_speed_watch(device_id, &watch).await.is_ok();
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

/// Claims, publishes and marks one alert; `Ok(false)` if it was published already.
async fn deliver<R, L: AlertLog, P: AlertSink>(
    alerts: &Alerts<R, L, P>,
    alert: &Alert,
) -> Result<bool, StoreError> {
    match alerts.log.claim(alert).await? {
        Claim::Published => Ok(false),
        Claim::New | Claim::Unpublished => {
            alerts.sink.publish(alert).await?;
            alerts.log.mark_published(&alert.id).await?;
            Ok(true)
        }
    }
}
