//! Great-circle geometry on a spherical Earth.
//!
//! The haversine formula with the IUGG mean radius: within 0.5% of the
//! ellipsoidal (Vincenty) distance everywhere, far inside GPS error for the
//! short segments between a tag's readings, and stable for tiny distances
//! (unlike the spherical law of cosines).

/// IUGG mean Earth radius, metres.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Great-circle distance between two points, in metres.
pub fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (phi1, phi2) = (lat1.to_radians(), lat2.to_radians());
    let dphi = (lat2 - lat1).to_radians();
    let dlambda = (lon2 - lon1).to_radians();
    let a = (dphi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (dlambda / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}

/// The point `distance` metres from (lat, lon) along the initial bearing
/// `heading` (degrees clockwise from north).
pub fn destination(lat: f64, lon: f64, heading: f64, distance: f64) -> (f64, f64) {
    let (phi, lambda, theta) = (lat.to_radians(), lon.to_radians(), heading.to_radians());
    let delta = distance / EARTH_RADIUS_M;
    let phi2 = (phi.sin() * delta.cos() + phi.cos() * delta.sin() * theta.cos()).asin();
    let lambda2 = lambda
        + (theta.sin() * delta.sin() * phi.cos()).atan2(delta.cos() - phi.sin() * phi2.sin());
    (
        phi2.to_degrees(),
        (lambda2.to_degrees() + 540.0).rem_euclid(360.0) - 180.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(actual: f64, expected: f64, relative: f64) -> bool {
        (actual - expected).abs() <= expected * relative
    }

    #[test]
    fn known_distances() {
        // One degree of a meridian: 2*pi*R/360.
        let degree = 2.0 * std::f64::consts::PI * EARTH_RADIUS_M / 360.0;
        assert!(close(distance_m(0.0, 0.0, 1.0, 0.0), degree, 1e-9));
        // Paris (Notre-Dame) to London (Trafalgar Square): 343.887 km on this
        // sphere (reference value from an independent implementation).
        let paris_london = distance_m(48.8530, 2.3499, 51.5080, -0.1281);
        assert!(close(paris_london, 343_887.0, 0.001), "{paris_london}");
        // Across the antimeridian: 2 degrees of equator, not 358.
        assert!(close(
            distance_m(0.0, 179.0, 0.0, -179.0),
            2.0 * degree,
            1e-9
        ));
        // Pole to pole along any meridian.
        assert!(close(
            distance_m(90.0, 0.0, -90.0, 123.0),
            180.0 * degree,
            1e-9
        ));
        assert_eq!(distance_m(45.0, 7.0, 45.0, 7.0), 0.0);
    }

    proptest! {
        #[test]
        fn destination_inverts_distance(lat in -80.0f64..80.0, lon in -180.0f64..180.0,
                                        heading in 0.0f64..360.0, d in 1.0f64..100_000.0) {
            let (lat2, lon2) = destination(lat, lon, heading, d);
            prop_assert!(close(distance_m(lat, lon, lat2, lon2), d, 1e-6));
            prop_assert!((-180.0..=180.0).contains(&lon2));
        }

        #[test]
        fn distance_is_symmetric_and_non_negative(a in -90.0f64..90.0, b in -180.0f64..180.0,
                                                  c in -90.0f64..90.0, d in -180.0f64..180.0) {
            let forward = distance_m(a, b, c, d);
            prop_assert!(forward >= 0.0 && forward.is_finite());
            prop_assert!((forward - distance_m(c, d, a, b)).abs() < 1e-6);
        }
    }
}
