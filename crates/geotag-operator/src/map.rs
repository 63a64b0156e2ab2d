//! `geotag report --html FILE`: the live map with the fleet inside it.
//!
//! The page is web/map's (what `geotag up` serves and a customer signs in
//! to) with the data, the base map and the scripts inside it: the same code
//! draws each device's track, the geofences, a marker where each alert
//! fired, and a table with the operator's columns (whose tag, readings,
//! what the stats counted, distance). Nothing is fetched when it opens (its
//! policy allows no connection), so it can be mailed, archived, or opened on
//! a plane. Unlike the live page it shows every customer's tags: it is the
//! operator's, read with the stack's own credentials.
//!
//! The data comes from the stack's tables, local or deployed: Telemetry for
//! the tracks, DeviceStats for each device's totals, the alert log for the
//! alerts, and the registry for geofences and customers.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use aws_sdk_dynamodb::Client;
use geotag::geofence::{Geofence, Shape};
use geotag::stats::Bucket;
use geotag::store::{ReadingsByHour, StatsBody, shown_rollups_of_table};

use crate::table_scan::scan_all;
use geotag_aws::clients::SdkConfig;
use serde::Serialize;

use geotag_local_cloud::provision::Stack;

/// Points drawn per device at most; longer tracks are thinned evenly (their
/// first and last points kept). A browser draws this many without effort.
const MAX_POINTS_PER_DEVICE: usize = 5_000;

/// The tables a report reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Tables {
    pub telemetry: String,
    pub device_stats: String,
    pub alerts: String,
    pub geofences: String,
    pub devices: String,
}

impl Tables {
    pub fn of_local(stack: &Stack) -> Result<Tables> {
        Ok(Tables {
            telemetry: stack.reference("TelemetryTable")?.to_owned(),
            device_stats: stack.reference("DeviceStatsTable")?.to_owned(),
            alerts: stack.reference("AlertsTable")?.to_owned(),
            geofences: stack.reference("GeofencesTable")?.to_owned(),
            devices: stack.reference("DevicesTable")?.to_owned(),
        })
    }

    /// template.yaml names every table `<stack>-<name>`.
    pub fn of_deployed(stack_name: &str) -> Tables {
        Tables {
            telemetry: format!("{stack_name}-telemetry"),
            device_stats: format!("{stack_name}-device-stats"),
            alerts: format!("{stack_name}-alerts"),
            geofences: format!("{stack_name}-geofences"),
            devices: format!("{stack_name}-devices"),
        }
    }
}

/// Everything the page draws.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MapData {
    pub title: String,
    pub generated_at: String,
    pub devices: Vec<DeviceTrack>,
    pub geofences: Vec<Zone>,
    pub alerts: Vec<AlertMark>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DeviceTrack {
    pub id: String,
    pub customer: Option<String>,
    /// `[time ms, lat, lon]` in time order (thinned past `MAX_POINTS_PER_DEVICE`).
    pub points: Vec<(i64, f64, f64)>,
    /// Readings in Telemetry.
    pub readings: usize,
    /// From DeviceStats: readings counted in the daily rollups, their
    /// distance, and the latest state.
    pub counted: u64,
    pub distance_m: f64,
    pub last_seen_ms: Option<i64>,
    pub battery: Option<f64>,
    pub speed_mps: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Zone {
    pub id: String,
    pub name: String,
    pub customer: Option<String>,
    /// `[lat, lon, radius m]` for a circle.
    pub circle: Option<(f64, f64, f64)>,
    /// `[lat, lon]` vertices for a polygon.
    pub ring: Option<Vec<(f64, f64)>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertMark {
    pub id: String,
    pub kind: String,
    pub device_id: String,
    pub at_ms: i64,
    /// Where the device was at `at_ms` (its reading nearest in time).
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub subject: String,
    pub published: bool,
}

/// Reads the tables into what the page draws.
pub async fn gather(sdk: &SdkConfig, tables: &Tables, title: &str) -> Result<MapData> {
    let dynamodb = Client::new(sdk);
    let (mut devices, by_hour) = tracks(&dynamodb, &tables.telemetry).await?;
    add_device_stats(&dynamodb, &tables.device_stats, &by_hour, &mut devices).await?;
    for item in scan_all(&dynamodb, &tables.devices, false).await? {
        if let Some((device_id, customer)) = geotag_aws::registry::device_from(&item)
            && let Some(device) = devices.get_mut(&device_id)
        {
            device.customer = Some(customer);
        }
    }
    for (id, device) in &mut devices {
        id.clone_into(&mut device.id);
        device.points.sort_by_key(|point| point.0);
        device.points = thinned(std::mem::take(&mut device.points), MAX_POINTS_PER_DEVICE);
    }
    let geofences = scan_all(&dynamodb, &tables.geofences, false)
        .await?
        .iter()
        .filter_map(geotag_aws::registry::geofence_from)
        .map(Zone::of)
        .collect();
    let alerts = alert_marks(&dynamodb, &tables.alerts, &devices).await?;
    Ok(MapData {
        title: title.to_owned(),
        generated_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        devices: devices.into_values().collect(),
        geofences,
        alerts,
    })
}

/// Each device's readings from Telemetry, and the readings by hour (for
/// the open hours' rollups); items that are not readings are left off,
/// and said so.
async fn tracks(
    dynamodb: &Client,
    table: &str,
) -> Result<(BTreeMap<String, DeviceTrack>, ReadingsByHour)> {
    let mut devices: BTreeMap<String, DeviceTrack> = BTreeMap::new();
    let mut by_hour = ReadingsByHour::default();
    let mut unreadable = 0usize;
    for item in scan_all(dynamodb, table, false).await? {
        let Some(reading) = geotag_aws::telemetry::reading_from_item(&item) else {
            unreadable += 1;
            continue;
        };
        let device = devices.entry(reading.device_id.clone()).or_default();
        device.readings += 1;
        device
            .points
            .push((reading.ts_ms, reading.lat, reading.lon));
        by_hour.add(reading);
    }
    if unreadable > 0 {
        tracing::warn!(
            unreadable,
            table = %table,
            "items that are not readings; left off the map"
        );
    }
    Ok((devices, by_hour))
}

/// Each device's latest state and its days' counts and distances, as the
/// API shows them (each open hour from its readings).
async fn add_device_stats(
    dynamodb: &Client,
    table: &str,
    by_hour: &ReadingsByHour,
    devices: &mut BTreeMap<String, DeviceTrack>,
) -> Result<()> {
    let mut items = Vec::new();
    for item in scan_all(dynamodb, table, false).await? {
        let Some(stats) = geotag_aws::device_stats::stats_item_from(&item) else {
            continue;
        };
        if let StatsBody::Latest(state) = &stats.body {
            let device = devices.entry(stats.device_id.clone()).or_default();
            device.last_seen_ms = Some(state.ts_ms);
            device.battery = state.battery;
            device.speed_mps = state.speed;
        }
        items.push(stats);
    }
    let shown = shown_rollups_of_table(&items, by_hour);
    for (device_id, rollups) in shown {
        let device = devices.entry(device_id).or_default();
        for (bucket, rollup) in rollups {
            if let Bucket::Day(_) = bucket {
                device.counted += rollup.count;
                device.distance_m += rollup.distance_m();
            }
        }
    }
    Ok(())
}

impl Zone {
    fn of(geofence: Geofence) -> Zone {
        let (circle, ring) = match geofence.shape {
            Shape::Circle { lat, lon, radius_m } => (Some((lat, lon, radius_m)), None),
            Shape::Polygon { ring } => (None, Some(ring)),
        };
        Zone {
            id: geofence.id,
            name: geofence.name,
            customer: geofence.customer_id,
            circle,
            ring,
        }
    }
}

/// The logged alerts, each placed where its device was when it fired.
async fn alert_marks(
    dynamodb: &Client,
    table: &str,
    devices: &BTreeMap<String, DeviceTrack>,
) -> Result<Vec<AlertMark>> {
    let mut alerts = Vec::new();
    for item in scan_all(dynamodb, table, false).await? {
        let Some(alert) = geotag_aws::alert_log::logged_alert_from(&item) else {
            continue;
        };
        let position = devices
            .get(&alert.device_id)
            .and_then(|device| nearest(&device.points, alert.at_ms));
        alerts.push(AlertMark {
            id: alert.id,
            kind: alert.kind,
            device_id: alert.device_id,
            at_ms: alert.at_ms,
            lat: position.map(|p| p.0),
            lon: position.map(|p| p.1),
            subject: alert.subject,
            published: alert.published,
        });
    }
    alerts.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
    Ok(alerts)
}

/// At most `max` points, evenly spaced, the first and the last kept.
fn thinned<T: Copy>(points: Vec<T>, max: usize) -> Vec<T> {
    if points.len() <= max || max < 2 {
        return points;
    }
    let last = points.len() - 1;
    (0..max).map(|i| points[i * last / (max - 1)]).collect()
}

/// The position of the point nearest `at_ms` in a time-sorted track.
fn nearest(points: &[(i64, f64, f64)], at_ms: i64) -> Option<(f64, f64)> {
    let index = points.partition_point(|point| point.0 < at_ms);
    let candidates = [index.checked_sub(1), Some(index)];
    candidates
        .into_iter()
        .flatten()
        .filter_map(|i| points.get(i))
        .min_by_key(|point| (point.0 - at_ms).abs())
        .map(|point| (point.1, point.2))
}

/// The live map's files (web/map), built into the binary so that a report
/// can be written wherever `geotag` runs.
mod site {
    pub const INDEX: &str = include_str!("../../../web/map/index.html");
    pub const STYLE: &str = include_str!("../../../web/map/map.css");
    pub const SCRIPT: &str = include_str!("../../../web/map/map.js");
    pub const TOPOJSON: &str = include_str!("../../../web/map/vendor/topojson-client.min.js");
    pub const WORLD: &str = include_str!("../../../web/map/vendor/countries-50m.json");
}

/// The live map's page with `data` and the base map inside it: the same
/// script draws it, from the snapshot instead of the API. Its policy allows
/// exactly the page's own script and style (by hash) and no connection.
pub fn render(data: &MapData) -> Result<String> {
    let script = format!("{}\n{}", site::TOPOJSON, site::SCRIPT);
    for (name, text) in [("map.js", script.as_str()), ("map.css", site::STYLE)] {
        anyhow::ensure!(
            !text.to_ascii_lowercase().contains("</s"),
            "{name} would end its element early inside the page"
        );
    }
    let policy = format!(
        "default-src 'none'; script-src '{}'; style-src '{}'; img-src data:",
        csp_hash(&script),
        csp_hash(site::STYLE)
    );
    let inline = [
        (
            r#"<meta http-equiv="Content-Security-Policy" content="default-src 'self'; connect-src *; style-src 'self'; img-src 'self' data:">"#,
            format!(r#"<meta http-equiv="Content-Security-Policy" content="{policy}">"#),
        ),
        (
            "<title>geotag · live map</title>",
            format!("<title>{}</title>", html_escape(&data.title)),
        ),
        (
            r#"<link rel="stylesheet" href="map.css">"#,
            format!("<style>{}</style>", site::STYLE),
        ),
        (
            r#"<script src="vendor/topojson-client.min.js"></script>"#,
            format!(
                r#"<script type="application/json" id="geotag-world">{}</script>"#,
                script_safe_json(site::WORLD)
            ),
        ),
        (
            r#"<script src="map.js"></script>"#,
            format!(
                r#"<script type="application/json" id="geotag-snapshot">{}</script>
<script>{script}</script>"#,
                script_safe_json(&serde_json::to_string(data)?)
            ),
        ),
    ];
    let mut page = site::INDEX.to_owned();
    for (from, to) in inline {
        anyhow::ensure!(
            page.contains(from),
            "web/map/index.html no longer has {from}: the report cannot inline it"
        );
        page = page.replacen(from, &to, 1);
    }
    Ok(page)
}

pub fn write(path: &Path, data: &MapData) -> Result<()> {
    geotag_local_cloud::project::write_file(path, render(data)?)
}

/// JSON that cannot end or comment its script element: `<` is only ever
/// inside a JSON string, where `\u003c` means the same.
fn script_safe_json(json: &str) -> String {
    json.replace('<', "\\u003c")
}

/// A Content-Security-Policy source for exactly `text`.
fn csp_hash(text: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(text.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_the_ends_and_the_count() {
        let points: Vec<usize> = (0..10_001).collect();
        let kept = thinned(points, 100);
        assert_eq!(kept.len(), 100);
        assert_eq!((kept[0], kept[99]), (0, 10_000));
        assert!(kept.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(thinned(vec![1, 2, 3], 100), vec![1, 2, 3]);
    }

    #[test]
    fn an_alert_sits_at_the_reading_nearest_its_time() {
        let track = [(1_000, 1.0, 1.0), (2_000, 2.0, 2.0), (3_000, 3.0, 3.0)];
        assert_eq!(nearest(&track, 2_400), Some((2.0, 2.0)));
        assert_eq!(nearest(&track, 2_600), Some((3.0, 3.0)));
        assert_eq!(nearest(&track, 0), Some((1.0, 1.0)));
        assert_eq!(nearest(&track, 9_000), Some((3.0, 3.0)));
        assert_eq!(nearest(&[], 9_000), None);
    }

    #[test]
    fn text_from_the_tables_cannot_break_out_of_the_page() {
        let data = MapData {
            title: "<b>fleet</b>".to_owned(),
            alerts: vec![AlertMark {
                id: "a".to_owned(),
                kind: "battery_low".to_owned(),
                device_id: "tag-1".to_owned(),
                at_ms: 0,
                lat: None,
                lon: None,
                subject: "</script><script>alert(1)</script>".to_owned(),
                published: true,
            }],
            ..MapData::default()
        };
        let page = render(&data).unwrap();
        assert!(!page.contains("</script><script>alert(1)"));
        assert!(page.contains("\\u003c/script>\\u003cscript>alert(1)"));
        assert!(page.contains("<title>&lt;b&gt;fleet&lt;/b&gt;</title>"));
        for fetched in ["src=\"", "href=\"", "url(", "@import"] {
            assert!(!page.contains(fetched), "the page loads nothing: {fetched}");
        }
        assert!(
            page.contains("default-src 'none'"),
            "and may connect nowhere"
        );
    }
}
