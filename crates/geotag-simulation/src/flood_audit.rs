//! The flood's audit: one tag publishing many times its rate is held to its
//! budget, loses nothing, and does not delay the fleet.
//!
//! Every reading in Telemetry carries when the edge received it and when
//! ingest wrote it (`received_at`, `stored_at`): the other tags' delay from
//! publish to stored is read off the table, in three stretches of the
//! publishing of equal length: just before the flood was published, while
//! it was, and just after. The bound: while the flood is published, the
//! other tags' 95th percentile delay stays within twice what it was just
//! before, plus [`SLACK_MS`] (a batch window, a second of the emulator's
//! jitter and a few retries' backoff).

use std::collections::BTreeMap;

use geotag::clock::MINUTE_MS;

use crate::reading_audit::Audit;
use crate::simulate::Expected;

/// What the delay may grow by, beside doubling, before the bound fails.
pub const SLACK_MS: i64 = 5_000;

/// A stretch's delays: how many readings, and their median, 95th percentile and longest, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Delays {
    pub readings: usize,
    pub p50_ms: i64,
    pub p95_ms: i64,
    pub max_ms: i64,
}

impl Delays {
    fn of(mut delays: Vec<i64>) -> Delays {
        delays.sort_unstable();
        let at = |share: f64| -> i64 {
            if delays.is_empty() {
                return 0;
            }
            let index = ((delays.len() as f64 - 1.0) * share).round() as usize;
            delays[index.min(delays.len() - 1)]
        };
        Delays {
            readings: delays.len(),
            p50_ms: at(0.5),
            p95_ms: at(0.95),
            max_ms: delays.last().copied().unwrap_or(0),
        }
    }

    fn show(&self) -> String {
        format!(
            "p50 {:.1} s, p95 {:.1} s, max {:.1} s ({} readings)",
            self.p50_ms as f64 / 1000.0,
            self.p95_ms as f64 / 1000.0,
            self.max_ms as f64 / 1000.0,
            self.readings
        )
    }
}

/// What the flood did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FloodFindings {
    pub sent: usize,
    pub stored: usize,
    pub parked: usize,
    /// The most readings of one minute stored for the flooding tag, in the
    /// minutes that began a minute or more after the flood did, and in the
    /// others (which hold what it sent before ingest first counted it, at
    /// most one reading a batch, uncounted: see `geotag::budget`).
    pub most_stored_in_a_minute: usize,
    pub most_stored_as_it_began: usize,
    /// The flooding tag's readings stored, minute by minute, through the flood.
    pub stored_per_minute: Vec<usize>,
    pub budget: u64,
    pub before: Delays,
    pub during: Delays,
    pub after: Delays,
}

impl FloodFindings {
    pub fn within_budget(&self) -> bool {
        self.most_stored_in_a_minute as u64 <= self.budget
    }

    pub fn bound_ms(&self) -> i64 {
        2 * self.before.p95_ms + SLACK_MS
    }

    pub fn delay_bound_holds(&self) -> bool {
        self.during.p95_ms <= self.bound_ms()
    }
}

/// The flood's figures; `None` when the run had no flood.
pub fn findings(expected: &Expected, audit: &Audit, budget: u64) -> Option<FloodFindings> {
    let flood = expected.flood.as_ref()?;
    let sent = (expected.readings_per_device.get(&flood.device_id))
        .copied()
        .unwrap_or(0);
    let stored = audit.stored_per_device.get(&flood.device_id);
    let mut per_minute: BTreeMap<i64, usize> = BTreeMap::new();
    for (ts, _, _) in stored.map(|s| s.track.as_slice()).unwrap_or_default() {
        *per_minute.entry(ts.div_euclid(MINUTE_MS)).or_default() += 1;
    }
    let stored_per_minute: Vec<usize> = per_minute
        .range(flood.from_ms.div_euclid(MINUTE_MS)..=flood.to_ms.div_euclid(MINUTE_MS))
        .map(|(_, stored)| *stored)
        .collect();
    let (began, settled): (BTreeMap<i64, usize>, BTreeMap<i64, usize>) = per_minute
        .into_iter()
        .partition(|(minute, _)| minute * MINUTE_MS < flood.from_ms + MINUTE_MS);
    let most = |minutes: &BTreeMap<i64, usize>| minutes.values().copied().max().unwrap_or(0);
    // When the flood went out, by the edge's clock: its stored readings
    // stamped within the flood.
    let published: Vec<i64> = stored
        .map(|s| {
            s.received_and_stored
                .iter()
                .filter(|(ts, _, _)| (flood.from_ms..flood.to_ms).contains(ts))
                .map(|(_, received, _)| *received)
                .collect()
        })
        .unwrap_or_default();
    let (Some(&start), Some(&end)) = (published.iter().min(), published.iter().max()) else {
        return Some(FloodFindings {
            sent,
            budget,
            ..FloodFindings::default()
        });
    };
    let length = (end - start).max(1);
    let mut stretches: [Vec<i64>; 3] = Default::default();
    for (device, summary) in &audit.stored_per_device {
        if device == &flood.device_id {
            continue;
        }
        for &(_, received, stored_at) in &summary.received_and_stored {
            let stretch = if (start - length..start).contains(&received) {
                0
            } else if (start..=end).contains(&received) {
                1
            } else if (end + 1..=end + length).contains(&received) {
                2
            } else {
                continue;
            };
            stretches[stretch].push(stored_at - received);
        }
    }
    let [before, during, after] = stretches.map(Delays::of);
    Some(FloodFindings {
        sent,
        stored: stored.map_or(0, |s| s.readings),
        parked: audit
            .parked_per_device
            .get(&flood.device_id)
            .map_or(0, |p| p.len()),
        most_stored_in_a_minute: most(&settled),
        most_stored_as_it_began: most(&began),
        stored_per_minute,
        budget,
        before,
        during,
        after,
    })
}

/// The report's lines, and whether the budget and the bound held. The bound
/// is judged only when the run was `paced` (published at the readings' own
/// pace): published as fast as the ingest queue allows, every tag's delay is
/// the queue's depth, flood or none.
pub fn report(expected: &Expected, findings: &FloodFindings, paced: bool) -> (String, bool) {
    let factor = expected.flood.as_ref().map_or(0, |flood| flood.factor);
    let ok = findings.within_budget() && (!paced || findings.delay_bound_holds());
    let line = format!(
        "  flood       one tag at {factor}× its rate sent {} readings: stored {}, at most {} in a minute (budget {}) {} \
         ({} as it began, before it was first counted; minute by minute {:?}); parked {} in IngestQuarantine\n  \
         delay       the other tags, publish to stored: just before the flood {}; during it {}; just after {}; \
         bound for during, p95 ≤ 2 × before + {} s = {:.1} s: {}",
        findings.sent,
        findings.stored,
        findings.most_stored_in_a_minute,
        findings.budget,
        if findings.within_budget() {
            "ok"
        } else {
            "OVER BUDGET"
        },
        findings.most_stored_as_it_began,
        findings.stored_per_minute,
        findings.parked,
        findings.before.show(),
        findings.during.show(),
        findings.after.show(),
        SLACK_MS / 1000,
        findings.bound_ms() as f64 / 1000.0,
        match (paced, findings.delay_bound_holds()) {
            (false, _) =>
                "not judged (published as fast as the queue allowed, not at the readings' pace)",
            (true, true) => "holds",
            (true, false) => "EXCEEDED",
        },
    );
    (line, ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_spread() {
        let delays = Delays::of((1..=100).rev().collect());
        assert_eq!(
            (delays.readings, delays.p50_ms, delays.p95_ms, delays.max_ms),
            (100, 51, 95, 100)
        );
        assert_eq!(Delays::of(Vec::new()), Delays::default());
    }
}
