//! The tags' budget in the handler (see `geotag::budget`): count the tags a
//! batch holds several readings of in one minute, take out the records over
//! budget, and park them in the quarantine queue.

use geotag::budget::{self, HotTags, RateLedger, RateLimit, Stamped};
use geotag::store::{DeadLetter, DeadLetterSink};

use crate::{DecodedBatch, Ingest, IngestRecord, Outcome, RecordState};

/// A tag's budget, where its count is kept, and where messages over it go.
pub struct Throttle<L, D> {
    pub ledger: L,
    pub quarantine: D,
    pub limit: RateLimit,
    /// The tags this instance has counted (see `geotag::budget`).
    pub hot: HotTags,
}

impl<L, D> Throttle<L, D> {
    pub fn new(ledger: L, quarantine: D, limit: RateLimit) -> Self {
        Throttle {
            ledger,
            quarantine,
            limit,
            hot: HotTags::default(),
        }
    }
}

/// Counts the tags that this batch holds several readings of in one minute
/// against their budget, and takes out the records holding readings over it,
/// to be parked. Redriven records are not counted.
pub(super) async fn park_floods<S, D, R, L: RateLedger>(
    ingest: &Ingest<S, D, R, L>,
    records: &[IngestRecord],
    batch: &mut DecodedBatch,
    outcome: &mut Outcome,
) {
    let Some(throttle) = &ingest.throttle else {
        return;
    };
    let counted: Vec<usize> = (0..batch.readings.len())
        .filter(|&index| !records[batch.record_of[index]].redriven())
        .collect();
    let stamped: Vec<Stamped<'_>> = counted
        .iter()
        .map(|&index| Stamped {
            device_id: &batch.readings[index].device_id,
            ts_ms: batch.readings[index].ts_ms,
        })
        .collect();
    let groups = budget::suspects_among(&stamped, &throttle.hot);
    if groups.is_empty() {
        return;
    }
    let counts: Vec<_> = groups.iter().map(|(count, _)| count.clone()).collect();
    outcome.rate_checks = counts.len();
    let totals = match throttle.ledger.add(&counts).await {
        Ok(totals) => totals,
        Err(error) => {
            // Only the tags being counted wait for a retry: a budget table in
            // trouble delays the suspects, not the fleet, and admitting them
            // uncounted would let a flood through whenever it is throttled.
            tracing::warn!(%error, tag_minutes = counts.len(), "the tags' counts could not be read; their records will be retried");
            outcome.rate_checks_failed = counts.len();
            let mut keep = vec![true; batch.states.len()];
            for (_, indices) in &groups {
                for index in indices {
                    let record = batch.record_of[counted[*index]];
                    keep[record] = false;
                    batch.states[record].store_failed = true;
                }
            }
            batch.retain_records(&keep, |_| ());
            return;
        }
    };
    let over: std::collections::HashSet<usize> =
        budget::over_budget(&groups, &totals, throttle.limit)
            .into_iter()
            .collect();
    let mut keep = vec![true; batch.states.len()];
    for ((count, indices), &total) in groups.iter().zip(&totals) {
        for index in indices.iter().filter(|index| over.contains(index)) {
            let record = batch.record_of[counted[*index]];
            let state = &mut batch.states[record];
            if keep[record] {
                keep[record] = false;
                let reason = budget::rate_exceeded(count, total, throttle.limit);
                tracing::warn!(
                    message_id = %state.message_id,
                    device_id = %count.device_id,
                    reason = reason.reason.code(),
                    detail = %reason.detail,
                    "parked"
                );
                outcome.readings_quarantined += state.readings;
                state.parked = Some((reason, state.readings));
                state.readings = 0;
            }
        }
    }
    batch.retain_records(&keep, |_| ());
}

/// Sends each parked record to the quarantine queue, unchanged, with its
/// reason. Returns the message ids whose letters could not be sent.
pub(super) async fn send_to_quarantine<S, D: DeadLetterSink, R, L>(
    ingest: &Ingest<S, D, R, L>,
    records: &[IngestRecord],
    states: &[RecordState],
    outcome: &mut Outcome,
) -> Vec<String> {
    let Some(throttle) = &ingest.throttle else {
        return Vec::new();
    };
    let letters: Vec<DeadLetter> = states
        .iter()
        .enumerate()
        .filter_map(|(record_index, state)| {
            let (rejection, valid_readings) = state.parked.clone()?;
            Some(DeadLetter {
                source_message_id: state.message_id.clone(),
                body: records[record_index].body.clone().unwrap_or_default(),
                rejection,
                // Every reading of it is held back, the valid ones for over-budget.
                rejected_readings: valid_readings + state.rejected_readings,
                stored_readings: 0,
            })
        })
        .collect();
    if letters.is_empty() {
        return Vec::new();
    }
    let unsent = throttle.quarantine.send(&letters).await;
    outcome.quarantined = letters.len() - unsent.len();
    unsent
}
