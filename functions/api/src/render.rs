//! What the API answers, as documents: GeoJSON (RFC 7946, positions as
//! `[lon, lat]`), GPX 1.1, and plain JSON for stats, alerts and geofences.
//! Times are RFC 3339 UTC with milliseconds, units are in the field names.

use std::fmt::Write as _;

use geotag::geofence::{Geofence, Shape};
use geotag::read::LoggedAlert;
use geotag::reading::{Reading, write_rfc3339_millis};
use geotag::stats::{Bucket, LatestState, Rollup};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub fn time(ts_ms: i64) -> String {
    let mut text = String::with_capacity(24);
    write_rfc3339_millis(&mut text, ts_ms);
    text
}

/// A tag where it is now, as a GeoJSON Feature.
pub fn device_feature(device_id: &str, state: &LatestState) -> Value {
    json!({
        "type": "Feature",
        "id": device_id,
        "geometry": {"type": "Point", "coordinates": [state.lon, state.lat]},
        "properties": {
            "device_id": device_id,
            "time": time(state.ts_ms),
            "speed_mps": state.speed,
            "heading_deg": state.heading,
            "accuracy_m": state.accuracy,
            "battery_pct": state.battery,
            "version": state.version,
        },
    })
}

/// A page of features; `next_cursor` is a foreign member (RFC 7946 §6.1).
pub fn feature_collection(features: Vec<Value>, next_cursor: Option<&str>) -> Value {
    json!({
        "type": "FeatureCollection",
        "features": features,
        "next_cursor": next_cursor,
    })
}

/// A page of a track as GeoJSON: one LineString (a Point for one reading,
/// nothing for none), with each position's time, speed and battery alongside.
pub fn track_geojson(device_id: &str, readings: &[Reading], next_cursor: Option<&str>) -> Value {
    let coordinates: Vec<Value> = readings
        .iter()
        .map(|r| match r.alt {
            Some(alt) => json!([r.lon, r.lat, alt]),
            None => json!([r.lon, r.lat]),
        })
        .collect();
    let features = match coordinates.len() {
        0 => Vec::new(),
        count => {
            let geometry = if count == 1 {
                json!({"type": "Point", "coordinates": coordinates[0]})
            } else {
                json!({"type": "LineString", "coordinates": coordinates})
            };
            vec![json!({
                "type": "Feature",
                "id": device_id,
                "geometry": geometry,
                "properties": {
                    "device_id": device_id,
                    "times": readings.iter().map(|r| time(r.ts_ms)).collect::<Vec<_>>(),
                    "speeds_mps": readings.iter().map(|r| r.speed).collect::<Vec<_>>(),
                    "batteries_pct": readings.iter().map(|r| r.battery).collect::<Vec<_>>(),
                },
            })]
        }
    };
    feature_collection(features, next_cursor)
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A page of a track as GPX 1.1: one track, one segment.
pub fn track_gpx(device_id: &str, readings: &[Reading]) -> String {
    let mut gpx = String::with_capacity(200 + readings.len() * 110);
    gpx.push_str(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <gpx version=\"1.1\" creator=\"geotag\" xmlns=\"http://www.topografix.com/GPX/1/1\">\n",
    );
    let name = xml_escape(device_id);
    let _ = writeln!(gpx, "<trk><name>{name}</name><trkseg>");
    for reading in readings {
        let _ = write!(
            gpx,
            "<trkpt lat=\"{}\" lon=\"{}\">",
            reading.lat, reading.lon
        );
        if let Some(alt) = reading.alt {
            let _ = write!(gpx, "<ele>{alt}</ele>");
        }
        let _ = writeln!(gpx, "<time>{}</time></trkpt>", time(reading.ts_ms));
    }
    gpx.push_str("</trkseg></trk>\n</gpx>\n");
    gpx
}

/// A device's hourly or daily stats.
pub fn stats(device_id: &str, period: &str, rollups: &[(Bucket, Rollup)]) -> Value {
    let point =
        |p: geotag::stats::Point| json!({"time": time(p.ts_ms), "lat": p.lat, "lon": p.lon});
    json!({
        "device_id": device_id,
        "period": period,
        "buckets": rollups.iter().map(|(bucket, rollup)| json!({
            "start": time(bucket.start_ms()),
            "readings": rollup.count,
            "distance_m": rollup.distance_m(),
            "speed_min_mps": rollup.speed_min,
            "speed_max_mps": rollup.speed_max,
            "speed_mean_mps": rollup.speed_mean(),
            "battery_min_pct": rollup.battery_min,
            "battery_last_pct": rollup.battery_last.map(|(_, pct)| pct),
            "bbox": rollup.bbox.map(|(lat_min, lat_max, lon_min, lon_max)| [lon_min, lat_min, lon_max, lat_max]),
            "first": rollup.track.map(|t| point(t.first)),
            "last": rollup.track.map(|t| point(t.last)),
        })).collect::<Vec<_>>(),
    })
}

pub fn alerts(alerts: &[LoggedAlert], next_cursor: Option<&str>) -> Value {
    json!({
        "alerts": alerts.iter().map(|alert| json!({
            "id": alert.id,
            "type": alert.kind,
            "device_id": alert.device_id,
            "time": time(alert.at_ms),
            "subject": alert.subject,
            "geofence": alert.geofence_id.as_ref().map(|id| json!({
                "id": id,
                "name": alert.geofence_name,
            })),
        })).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
    })
}

/// A position with its coordinates named, so that no client mixes up the order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatLon {
    pub lat: f64,
    pub lon: f64,
}

/// A geofence's shape as the API reads and writes it: `circle` with
/// `center` and `radius_m`, or `polygon` with `vertices`. A flat struct
/// rather than a tagged enum, so that a missing or misplaced field is named
/// by its path (`shape.center`), not only as "the shape".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShapeDocument {
    #[serde(rename = "type")]
    pub kind: ShapeKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub center: Option<LatLon>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub radius_m: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertices: Option<Vec<LatLon>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShapeKind {
    Circle,
    Polygon,
}

/// A geofence as a client sends it (POST with `id`, PUT without).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeofenceDocument {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: String,
    pub shape: ShapeDocument,
}

impl ShapeDocument {
    /// The shape, or the field (under `shape.`) that is missing or out of place.
    pub fn into_shape(self) -> Result<Shape, (&'static str, &'static str)> {
        match (self.kind, self.center, self.radius_m, self.vertices) {
            (ShapeKind::Circle, Some(center), Some(radius_m), None) => Ok(Shape::Circle {
                lat: center.lat,
                lon: center.lon,
                radius_m,
            }),
            (ShapeKind::Circle, None, _, _) => Err(("shape.center", "a circle needs a center")),
            (ShapeKind::Circle, _, None, _) => Err(("shape.radius_m", "a circle needs a radius_m")),
            (ShapeKind::Circle, _, _, Some(_)) => {
                Err(("shape.vertices", "a circle has no vertices"))
            }
            (ShapeKind::Polygon, None, None, Some(vertices)) => Ok(Shape::Polygon {
                ring: vertices.iter().map(|v| (v.lat, v.lon)).collect(),
            }),
            (ShapeKind::Polygon, _, _, None) => Err(("shape.vertices", "a polygon needs vertices")),
            (ShapeKind::Polygon, Some(_), _, _) => Err(("shape.center", "a polygon has no center")),
            (ShapeKind::Polygon, _, Some(_), _) => {
                Err(("shape.radius_m", "a polygon has no radius_m"))
            }
        }
    }

    fn of(shape: &Shape) -> ShapeDocument {
        match shape {
            Shape::Circle { lat, lon, radius_m } => ShapeDocument {
                kind: ShapeKind::Circle,
                center: Some(LatLon {
                    lat: *lat,
                    lon: *lon,
                }),
                radius_m: Some(*radius_m),
                vertices: None,
            },
            Shape::Polygon { ring } => ShapeDocument {
                kind: ShapeKind::Polygon,
                center: None,
                radius_m: None,
                vertices: Some(
                    ring.iter()
                        .map(|(lat, lon)| LatLon {
                            lat: *lat,
                            lon: *lon,
                        })
                        .collect(),
                ),
            },
        }
    }
}

/// A geofence as the API shows it; the global ones are read-only.
pub fn geofence(geofence: &Geofence) -> Value {
    json!({
        "id": geofence.id,
        "name": geofence.name,
        "scope": if geofence.customer_id.is_some() { "customer" } else { "global" },
        "shape": ShapeDocument::of(&geofence.shape),
    })
}
