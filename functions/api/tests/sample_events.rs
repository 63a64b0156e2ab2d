//! The sample events in events/api answer as their generator
//! (events/make_api_events.py) says, through `lambda_http`'s own reading of
//! payload v2, against a registry where tag-0042 is acme's and tag-0007 globex's.

use geotag::geofence::Geofence;
use geotag::read::{
    FleetReader, GeofenceWriteError, LoggedAlert, MemoryFleet, Page, Period, Position, WriteMode,
};
use geotag::reading::Reading;
use geotag::stats::{Bucket, LatestState, Rollup};
use geotag::store::StoreError;
use geotag_runtime::emf::{Emitter, Sink};
use serde_json::Value;
use std::sync::{Arc, Mutex};

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
    answer_and_metrics(name).0
}

fn answer_and_metrics(name: &str) -> (Value, Vec<Value>) {
    answer_from(fleet(), name)
}

/// The answer of the API over `fleet` to events/api/NAME.json, and the EMF
/// documents it wrote.
fn answer_from<F: FleetReader>(fleet: F, name: &str) -> (Value, Vec<Value>) {
    let path = format!(
        "{}/../../events/api/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let event: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let api = geotag_api::Api {
        fleet,
        metrics: Emitter::for_binary("api").with_sink(Sink::Memory(lines.clone())),
    };
    let answer = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(geotag_api::payload::answer_event(&api, event, T0))
        .unwrap();
    let documents = lines
        .lock()
        .unwrap()
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    (answer, documents)
}

#[test]
fn each_request_is_counted_and_a_refusal_by_its_code() {
    let (_, served) = answer_and_metrics("list-devices");
    assert_eq!(served.len(), 1, "{served:?}");
    assert_eq!(served[0]["Requests"], 1.0);
    assert!(served[0]["HandlerDuration"].is_number());
    assert!(served[0].get("RequestsRefused").is_none());

    let (_, refused) = answer_and_metrics("foreign-device");
    let by_code: Vec<&Value> = refused
        .iter()
        .filter(|document| document.get("RequestsRefused").is_some())
        .collect();
    assert_eq!(by_code.len(), 1, "{refused:?}");
    assert_eq!(by_code[0]["Code"], "not_found");
    assert_eq!(by_code[0]["RequestsRefused"], 1.0);
    for document in &refused {
        geotag_runtime::emf::check_document(document).unwrap();
    }
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

/// A store that refuses every read, as DynamoDB does past its retries.
struct Unreachable;

fn unreachable<T>() -> std::future::Ready<Result<T, StoreError>> {
    std::future::ready(Err(StoreError::Service {
        code: "ServiceUnavailable".into(),
        message: "the table did not answer".into(),
    }))
}

impl FleetReader for Unreachable {
    fn owner(&self, _: &str) -> impl Future<Output = Result<Option<String>, StoreError>> + Send {
        unreachable()
    }
    fn fleet(
        &self,
        _: &str,
        _: Option<&Position>,
        _: usize,
    ) -> impl Future<Output = Result<Page<(String, LatestState)>, StoreError>> + Send {
        unreachable()
    }
    fn latest(
        &self,
        _: &str,
    ) -> impl Future<Output = Result<Option<LatestState>, StoreError>> + Send {
        unreachable()
    }
    fn readings(
        &self,
        _: &str,
        _: &str,
        _: i64,
        _: i64,
        _: Option<&Position>,
        _: usize,
    ) -> impl Future<Output = Result<Page<Reading>, StoreError>> + Send {
        unreachable()
    }
    fn rollups(
        &self,
        _: &str,
        _: Period,
        _: i64,
        _: i64,
    ) -> impl Future<Output = Result<Vec<(Bucket, Rollup)>, StoreError>> + Send {
        unreachable()
    }
    fn hour_readings(
        &self,
        _: &str,
        _: i64,
    ) -> impl Future<Output = Result<Vec<Reading>, StoreError>> + Send {
        unreachable()
    }
    fn alerts(
        &self,
        _: &str,
        _: i64,
        _: i64,
        _: Option<&str>,
        _: Option<&Position>,
        _: usize,
    ) -> impl Future<Output = Result<Page<LoggedAlert>, StoreError>> + Send {
        unreachable()
    }
    fn geofences(&self, _: &str) -> impl Future<Output = Result<Vec<Geofence>, StoreError>> + Send {
        unreachable()
    }
    fn put_geofence(
        &self,
        _: &Geofence,
        _: WriteMode,
    ) -> impl Future<Output = Result<(), GeofenceWriteError>> + Send {
        std::future::ready(Err(GeofenceWriteError::Store(StoreError::OutOfTime)))
    }
    fn delete_geofence(
        &self,
        _: &str,
        _: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        unreachable()
    }
}

#[test]
fn a_store_that_fails_is_a_503_counted_as_a_failure_by_its_code() {
    let (answer, documents) = answer_from(Unreachable, "list-devices");
    assert_eq!(answer["statusCode"], 503, "{answer}");
    let failed: Vec<&Value> = (documents.iter())
        .filter(|document| document.get("RequestsFailed").is_some())
        .collect();
    assert_eq!(failed.len(), 1, "{documents:?}");
    assert!(failed[0]["Code"].is_string());
    assert!(documents.iter().all(|d| d.get("RequestsRefused").is_none()));
}
