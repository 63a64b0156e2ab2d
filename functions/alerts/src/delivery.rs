//! One alert, delivered once: claimed in the alert log, published, marked.

use geotag::alerts::Alert;
use geotag::store::{AlertLog, AlertSink, Claim, StoreError};

use crate::Alerts;

/// What became of an alert this invocation tried to deliver.
pub(crate) enum Delivery {
    Published,
    AlreadyPublished,
    /// Leased to a concurrent invocation: retry later.
    Busy,
}

/// Tries at marking an alert published (each one the SDK's own retries).
const MARK_ATTEMPTS: u32 = 4;

/// Time a claimer keeps for publishing and marking after waiting out a lease.
const PUBLISH_MARGIN_MS: i64 = 3_000;

/// Claims, publishes and marks one alert.
///
/// An alert claimed by another invocation is waited for, polling, while this
/// invocation has time: the other one usually marks it published within
/// milliseconds, and if it died instead, its lease (its deadline) runs out
/// and this one takes the alert over. Failing the record at once would burn
/// the stream's retries in a second, with the alert still leased.
pub(crate) async fn deliver<R, L: AlertLog, P: AlertSink, I>(
    alerts: &Alerts<R, L, P, I>,
    alert: &Alert,
    lease_until_ms: i64,
) -> Result<Delivery, StoreError> {
    let give_up_at = lease_until_ms - PUBLISH_MARGIN_MS;
    let mut pause_ms = 50;
    loop {
        match alerts.log.claim(alert, lease_until_ms).await? {
            Claim::Published => return Ok(Delivery::AlreadyPublished),
            Claim::Busy { until_ms } => {
                let now = geotag::clock::now_ms();
                if now + pause_ms.min(until_ms - now).max(0) > give_up_at {
                    return Ok(Delivery::Busy);
                }
                tokio::time::sleep(std::time::Duration::from_millis(
                    pause_ms.min((until_ms - now).max(1)) as u64,
                ))
                .await;
                pause_ms = (pause_ms * 2).min(1_000);
            }
            Claim::New | Claim::Unpublished => {
                if let Err(error) = alerts.sink.publish(alert).await {
                    // Let the retry claim it at once rather than wait out the lease.
                    if let Err(release) = alerts.log.release(&alert.id).await {
                        tracing::warn!(alert_id = %alert.id, error = %release, "claim not released; the retry waits for its lease to end");
                    }
                    return Err(error);
                }
                // Published: a mark that fails now would let a retry publish
                // it again once the lease runs out, so insist a little.
                let mut attempt = 0;
                while let Err(error) = alerts.log.mark_published(&alert.id).await {
                    attempt += 1;
                    if attempt == MARK_ATTEMPTS {
                        return Err(error);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
                }
                return Ok(Delivery::Published);
            }
        }
    }
}
