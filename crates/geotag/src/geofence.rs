//! Geofences: circles and polygons on the globe, and whether a point is inside.
//!
//! Polygons are rings of (lat, lon) vertices, closed implicitly. The test is a
//! ray cast along the point's meridian towards the north pole, in coordinates
//! unwrapped around the point's longitude, so that:
//! - a polygon that crosses the antimeridian (vertices at 179° and -179°) is
//!   the small polygon it looks like on a map, not its complement;
//! - a ring that winds around a pole (a polar cap) contains the pole on its
//!   side: the one nearer the ring's mean latitude, as a user drawing a cap
//!   around the Arctic means.
//!
//! Edges are straight in (lon, lat), as on the map a user draws them on; for
//! the sizes of real geofences (a depot, a city, a country) the difference from
//! great-circle edges is far inside a tag's GPS error.

use crate::geo::distance_m;

/// A zone's shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Circle {
        lat: f64,
        lon: f64,
        radius_m: f64,
    },
    /// Vertices as (lat, lon); at least 3.
    Polygon {
        ring: Vec<(f64, f64)>,
    },
}

/// A named zone. `customer_id` `None` applies to every customer's tags.
#[derive(Debug, Clone, PartialEq)]
pub struct Geofence {
    pub id: String,
    pub name: String,
    pub customer_id: Option<String>,
    pub shape: Shape,
}

/// The most vertices a polygon may have. Every reading of a customer's tags
/// is tested against each of its zones, edge by edge, and a zone is one
/// DynamoDB item: a thousand vertices draw a country's border at the
/// precision geofences need, in about 30 KB.
pub const MAX_POLYGON_VERTICES: usize = 1_000;

/// The scope (Geofences hash key) of the zones that apply to every customer's tags.
pub const GLOBAL_SCOPE: &str = "*";

/// The longest geofence id and name.
pub const MAX_ID_BYTES: usize = 128;
pub const MAX_NAME_CHARS: usize = 256;

impl Geofence {
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        self.shape.contains(lat, lon)
    }

    /// Its Geofences partition: its customer, or [`GLOBAL_SCOPE`].
    pub fn scope(&self) -> &str {
        self.customer_id.as_deref().unwrap_or(GLOBAL_SCOPE)
    }

    /// Why a zone cannot be stored, if it cannot: its id, name, customer or shape.
    pub fn problem(&self) -> Option<String> {
        if self.id.is_empty() || self.id.len() > MAX_ID_BYTES || self.id.contains('#') {
            return Some(format!(
                "geofence id {:?}: 1 to {MAX_ID_BYTES} bytes without '#' (alert ids are joined with it)",
                self.id
            ));
        }
        if self.name.chars().count() > MAX_NAME_CHARS {
            return Some(format!(
                "geofence {}: a name of at most {MAX_NAME_CHARS} characters",
                self.id
            ));
        }
        if let Some(customer) = &self.customer_id
            && !crate::tenancy::is_valid_customer_id(customer)
        {
            return Some(format!(
                "geofence {}: customer id {customer:?} is not one",
                self.id
            ));
        }
        self.shape
            .problem()
            .map(|problem| format!("geofence {}: {problem}", self.id))
    }
}

impl Shape {
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        match self {
            Shape::Circle {
                lat: centre_lat,
                lon: centre_lon,
                radius_m,
            } => distance_m(*centre_lat, *centre_lon, lat, lon) <= *radius_m,
            Shape::Polygon { ring } => polygon_contains(ring, lat, lon),
        }
    }

    /// Why a shape is unusable, if it is (for the `geofence` command).
    pub fn problem(&self) -> Option<String> {
        let valid_point =
            |lat: f64, lon: f64| (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon);
        match self {
            Shape::Circle { lat, lon, radius_m } => {
                if !valid_point(*lat, *lon) {
                    Some(format!("centre ({lat}, {lon}) is not a position"))
                } else if !(*radius_m > 0.0 && *radius_m <= 20_000_000.0) {
                    Some(format!("radius {radius_m} m is not in (0, 20000 km]"))
                } else {
                    None
                }
            }
            Shape::Polygon { ring } => {
                if ring.len() < 3 {
                    Some(format!(
                        "a polygon needs at least 3 vertices, not {}",
                        ring.len()
                    ))
                } else if ring.len() > MAX_POLYGON_VERTICES {
                    Some(format!(
                        "a polygon has at most {MAX_POLYGON_VERTICES} vertices, not {}",
                        ring.len()
                    ))
                } else {
                    ring.iter()
                        .find(|(lat, lon)| !valid_point(*lat, *lon))
                        .map(|(lat, lon)| format!("vertex ({lat}, {lon}) is not a position"))
                }
            }
        }
    }
}

/// Longitude difference `to - from`, wrapped into (-180, 180].
fn lon_delta(from: f64, to: f64) -> f64 {
    let delta = (to - from).rem_euclid(360.0);
    if delta > 180.0 { delta - 360.0 } else { delta }
}

fn polygon_contains(ring: &[(f64, f64)], lat: f64, lon: f64) -> bool {
    if ring.len() < 3 {
        return false;
    }
    let edges = || {
        ring.iter()
            .zip(ring.iter().cycle().skip(1))
            .take(ring.len())
    };
    // A ring whose longitude deltas add up to ±360° winds around a pole.
    let winding: f64 = edges().map(|(a, b)| lon_delta(a.1, b.1)).sum();
    let mean_lat = ring.iter().map(|(lat, _)| lat).sum::<f64>() / ring.len() as f64;
    let north_pole_inside = winding.abs() > 180.0 && mean_lat > 0.0;
    if lat >= 90.0 {
        return north_pole_inside;
    }

    // Crossings of the meridian arc from the point up to the north pole.
    let mut crossings = 0;
    for (a, b) in edges() {
        let xa = lon_delta(lon, a.1);
        let xb = xa + lon_delta(a.1, b.1);
        if (xa > 0.0) == (xb > 0.0) {
            continue;
        }
        let crossing_lat = a.0 + (0.0 - xa) / (xb - xa) * (b.0 - a.0);
        if crossing_lat > lat {
            crossings += 1;
        }
    }
    (crossings % 2 == 1) != north_pole_inside
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn polygon(ring: &[(f64, f64)]) -> Shape {
        Shape::Polygon {
            ring: ring.to_vec(),
        }
    }

    #[test]
    fn a_square_and_a_concave_polygon() {
        let square = polygon(&[(-1.0, -1.0), (-1.0, 1.0), (1.0, 1.0), (1.0, -1.0)]);
        assert!(square.contains(0.0, 0.0));
        assert!(square.contains(0.99, -0.99));
        assert!(!square.contains(1.01, 0.0));
        assert!(!square.contains(0.0, 180.0));
        // A U: the notch between its arms is outside.
        let u = polygon(&[
            (0.0, 0.0),
            (0.0, 3.0),
            (3.0, 3.0),
            (3.0, 2.0),
            (1.0, 2.0),
            (1.0, 1.0),
            (3.0, 1.0),
            (3.0, 0.0),
        ]);
        assert!(u.contains(2.0, 0.5));
        assert!(u.contains(2.0, 2.5));
        assert!(!u.contains(2.0, 1.5));
        assert!(u.contains(0.5, 1.5));
    }

    #[test]
    fn a_polygon_across_the_antimeridian_is_the_small_one() {
        // Fiji-ish: from 179°E to 179°W.
        let fiji = polygon(&[
            (-16.0, 179.0),
            (-16.0, -179.0),
            (-18.0, -179.0),
            (-18.0, 179.0),
        ]);
        assert!(fiji.contains(-17.0, 179.9));
        assert!(fiji.contains(-17.0, -179.9));
        assert!(fiji.contains(-17.0, 180.0));
        assert!(!fiji.contains(-17.0, 0.0));
        assert!(!fiji.contains(-17.0, 178.0));
        assert!(!fiji.contains(-15.0, 179.5));
    }

    #[test]
    fn polar_caps_contain_their_pole() {
        let arctic = polygon(&[(80.0, 0.0), (80.0, 90.0), (80.0, 180.0), (80.0, -90.0)]);
        assert!(arctic.contains(90.0, 0.0));
        assert!(arctic.contains(85.0, 45.0));
        assert!(arctic.contains(85.0, -170.0));
        assert!(!arctic.contains(70.0, 45.0));
        assert!(!arctic.contains(-89.0, 0.0));
        let antarctic = polygon(&[(-75.0, 0.0), (-75.0, -90.0), (-75.0, 180.0), (-75.0, 90.0)]);
        assert!(antarctic.contains(-80.0, 10.0));
        assert!(!antarctic.contains(-70.0, 10.0));
        assert!(!antarctic.contains(90.0, 0.0));
    }

    #[test]
    fn circles_use_great_circle_distance() {
        let depot = Shape::Circle {
            lat: 48.8606,
            lon: 2.3376,
            radius_m: 500.0,
        };
        assert!(depot.contains(48.8606, 2.3376));
        // 499 m and 501 m due north (1 m is 1/111,195 degree of latitude).
        assert!(depot.contains(48.8606 + 499.0 / 111_195.0, 2.3376));
        assert!(!depot.contains(48.8606 + 501.0 / 111_195.0, 2.3376));
        let dateline = Shape::Circle {
            lat: 0.0,
            lon: 180.0,
            radius_m: 200_000.0,
        };
        assert!(dateline.contains(0.0, -179.0));
        assert!(dateline.contains(0.0, 179.0));
        let pole = Shape::Circle {
            lat: 90.0,
            lon: 0.0,
            radius_m: 200_000.0,
        };
        assert!(pole.contains(89.0, 135.0));
    }

    #[test]
    fn problems_are_named() {
        assert!(polygon(&[(0.0, 0.0), (1.0, 1.0)]).problem().is_some());
        let vertices = |n: usize| -> Vec<(f64, f64)> {
            (0..n)
                .map(|i| {
                    let angle = i as f64 / n as f64 * std::f64::consts::TAU;
                    (angle.sin(), angle.cos())
                })
                .collect()
        };
        assert!(polygon(&vertices(MAX_POLYGON_VERTICES)).problem().is_none());
        assert_eq!(
            polygon(&vertices(MAX_POLYGON_VERTICES + 1)).problem(),
            Some("a polygon has at most 1000 vertices, not 1001".into())
        );
        assert!(
            polygon(&[(0.0, 0.0), (1.0, 1.0), (91.0, 0.0)])
                .problem()
                .is_some()
        );
        assert!(
            Shape::Circle {
                lat: 0.0,
                lon: 0.0,
                radius_m: 0.0
            }
            .problem()
            .is_some()
        );
        assert!(
            Shape::Circle {
                lat: 0.0,
                lon: 0.0,
                radius_m: 10.0
            }
            .problem()
            .is_none()
        );
    }

    proptest! {
        /// A polygon and the same polygon shifted in longitude (across the
        /// antimeridian or not) agree on shifted points.
        #[test]
        fn shifting_longitude_changes_nothing(shift in -360.0f64..360.0, lat in -10.0f64..10.0, lon in -10.0f64..10.0) {
            let ring = [(-5.0, -5.0), (-5.0, 5.0), (5.0, 6.0), (6.0, -4.0)];
            let shifted: Vec<_> = ring.iter().map(|(a, o)| (*a, (o + shift + 540.0).rem_euclid(360.0) - 180.0)).collect();
            let moved_lon = (lon + shift + 540.0).rem_euclid(360.0) - 180.0;
            prop_assert_eq!(polygon(&ring).contains(lat, lon), polygon(&shifted).contains(lat, moved_lon));
        }

        #[test]
        fn never_panics(ring in prop::collection::vec((-90.0f64..=90.0, -180.0f64..=180.0), 0..12),
                        lat in -90.0f64..=90.0, lon in -180.0f64..=180.0) {
            let _ = polygon(&ring).contains(lat, lon);
        }
    }
}
