//! The sample events in events/api answer as their generator
//! (events/make_api_events.py) says, through `lambda_http`'s own reading of
//! payload v2, against a registry where tag-0042 is acme's and tag-0007 globex's.

use geotag::read::{LoggedAlert, MemoryFleet};
use geotag::reading::Reading;
use serde_json::Value;

const T0: i64 = 1_796_112_000_000; // 2026-12-01T08:00:00Z

fn fleet() -> MemoryFleet {
    let fleet = MemoryFleet::default();
    for (device, customer) in [("tag-0042", "acme"), ("tag-0007", "globex")] {
        fleet.assign(device, customer);
        let readings: Vec<Reading> = (1..=3)
            .map(|minutes| Reading {
                device_id: device.into(),
                ts_ms: T0 - minutes * 600_000,
                lat: 48.86,
                lon: 2.33,
                alt: None,
                speed: None,
                heading: None,
                battery: None,
                accuracy: None,
                seq: None,
                received_at_ms: None,
                owner: Some(customer.into()),
            })
            .collect();
        fleet.record(&readings);
    }
    fleet.log_alert(LoggedAlert {
        id: "tag-0042#battery_low#1".into(),
        kind: "battery_low".into(),
        device_id: "tag-0042".into(),
        customer_id: "acme".into(),
        at_ms: T0 - 60_000,
        subject: "tag-0042: battery at 18%".into(),
        published: true,
        geofence_id: None,
        geofence_name: None,
    });
    fleet
}

fn answer(name: &str) -> Value {
    let path = format!(
        "{}/../../events/api/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let event: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(geotag_api::payload::answer_event(&fleet(), event, T0))
        .unwrap()
}

#[test]
fn each_sample_event_answers_as_its_generator_says() {
    let devices = answer("list-devices");
    assert_eq!(devices["statusCode"], 200);
    let page: Value = serde_json::from_str(devices["body"].as_str().unwrap()).unwrap();
    assert_eq!(page["features"].as_array().unwrap().len(), 1);
    assert_eq!(page["features"][0]["id"], "tag-0042");

    let gpx = answer("device-track-gpx");
    assert_eq!(gpx["headers"]["content-type"], "application/gpx+xml");
    assert_eq!(gpx["body"].as_str().unwrap().matches("<trkpt").count(), 3);

    let foreign = answer("foreign-device");
    assert_eq!(foreign["statusCode"], 404);
    assert_eq!(
        foreign["headers"]["content-type"],
        "application/problem+json"
    );

    let created = answer("create-geofence");
    assert_eq!(created["statusCode"], 201, "{created}");
    assert_eq!(created["headers"]["location"], "/v1/geofences/depot");

    let alerts = answer("operator-alerts");
    assert_eq!(alerts["statusCode"], 200, "{alerts}");
    assert!(alerts["body"].as_str().unwrap().contains("battery at 18%"));
}
