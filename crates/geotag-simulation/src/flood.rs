//! The chaos run's flood: one more tag in a publish loop, many times its
//! normal rate through the middle of the run.

use geotag::geo::destination;
use serde_json::json;

use crate::simulate::{Behaviour, DEPOT, Expected, FleetConfig, round6};

/// A tag in a publish loop: [`FLOOD_TAG`], parked, one reading a message,
/// `factor` times its normal rate through the middle `share` of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flood {
    pub factor: u32,
    pub share: f64,
}

/// The flooding tag's id.
pub const FLOOD_TAG: &str = "tag-flood";

/// What the flood sends, for the audit.
#[derive(Debug, Clone, PartialEq)]
pub struct FloodPlan {
    pub device_id: String,
    pub factor: u32,
    /// The readings' times through the flood: [from, to).
    pub from_ms: i64,
    pub to_ms: i64,
}

/// The flooding tag: parked far from every zone with a full battery (it
/// deserves no alert, whichever of its readings are stored), one reading a
/// message, `factor` of them in each interval of its flood.
pub(crate) fn plan(
    config: &FleetConfig,
    flood: Flood,
    expected: &mut Expected,
    timeline: &mut Vec<(i64, usize, String, String)>,
) {
    let interval_ms = config.interval_secs as i64 * 1000;
    let steps = config.readings_per_device.max(1);
    let start_ms = config.end_ms - interval_ms * steps.saturating_sub(1) as i64;
    let flooded = {
        let share = flood.share.clamp(0.0, 1.0);
        let first = ((steps as f64) * (0.5 - share / 2.0)).round() as usize;
        let last = ((steps as f64) * (0.5 + share / 2.0)).round() as usize;
        first..last.max(first)
    };
    let factor = flood.factor.max(1) as i64;
    let device_id = FLOOD_TAG.to_owned();
    let (lat, lon) = destination(DEPOT.lat, DEPOT.lon, 180.0, 8_000.0);
    let mut seq = 0_u64;
    for step in 0..steps {
        let per_step = if flooded.contains(&step) { factor } else { 1 };
        for n in 0..per_step {
            seq += 1;
            let ts = start_ms + step as i64 * interval_ms + n * interval_ms / per_step;
            let reading = json!({
                "device_id": device_id,
                "ts": ts,
                "lat": round6(lat),
                "lon": round6(lon),
                "speed": 0.0,
                "battery": 90.0,
                "seq": seq,
            });
            timeline.push((ts, timeline.len(), device_id.clone(), reading.to_string()));
        }
    }
    expected
        .behaviours
        .insert(device_id.clone(), Behaviour::Parked);
    expected
        .readings_per_device
        .insert(device_id.clone(), seq as usize);
    expected.flood = Some(FloodPlan {
        device_id,
        factor: flood.factor,
        from_ms: start_ms + flooded.start as i64 * interval_ms,
        to_ms: start_ms + flooded.end as i64 * interval_ms,
    });
}
