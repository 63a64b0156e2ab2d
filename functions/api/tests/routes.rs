//! What each route answers its own customer: documents, pages, caching,
//! and a geofence's whole life.

use geotag::read::MemoryFleet;
use geotag::reading::Reading;
use geotag_api::payload::{Incoming, event, request};
use lambda_http::Body;
use lambda_http::http::Response;
use serde_json::{Value, json};

const T0: i64 = 1_796_112_000_000; // 2026-12-01T08:00:00Z

fn fleet() -> MemoryFleet {
    let fleet = MemoryFleet::default();
    fleet.assign("tag-1", "acme");
    let readings: Vec<Reading> = (0..5)
        .map(|i| Reading {
            device_id: "tag-1".into(),
            ts_ms: T0 + i * 60_000,
            lat: 52.0 + i as f64 / 100.0,
            lon: 4.0,
            alt: Some(3.5),
            speed: Some(10.0),
            heading: Some(90.0),
            battery: Some(77.0),
            accuracy: Some(5.0),
            seq: Some(i as u64),
            received_at_ms: Some(T0 + i * 60_000),
            owner: Some("acme".into()),
        })
        .collect();
    fleet.record(&readings);
    fleet
}

fn call(
    fleet: &MemoryFleet,
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Response<Body> {
    let incoming = Incoming {
        method,
        path,
        raw_query: query,
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        body,
    };
    let claims = json!({"customer_id": "acme"}).as_object().cloned().unwrap();
    let request = request(event(&incoming, Some(&claims))).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(geotag_api::handle(fleet, &request, T0 + 3_600_000))
}

fn text(response: &Response<Body>) -> String {
    match response.body() {
        Body::Text(text) => text.clone(),
        _ => String::new(),
    }
}

fn header<'a>(response: &'a Response<Body>, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[test]
fn the_fleet_is_geojson_with_an_etag_that_makes_a_304() {
    let fleet = fleet();
    let response = call(&fleet, "GET", "/v1/devices", "", &[], None);
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "content-type"),
        Some("application/geo+json")
    );
    assert_eq!(header(&response, "vary"), Some("Authorization"));
    let page: Value = serde_json::from_str(&text(&response)).unwrap();
    assert_eq!(page["type"], "FeatureCollection");
    assert_eq!(
        page["features"][0]["geometry"]["coordinates"],
        json!([4.0, 52.04])
    );
    assert_eq!(
        page["features"][0]["properties"]["time"],
        "2026-12-01T08:04:00.000Z"
    );
    let etag = header(&response, "etag").unwrap().to_owned();
    let again = call(
        &fleet,
        "GET",
        "/v1/devices",
        "",
        &[("if-none-match", &etag)],
        None,
    );
    assert_eq!(again.status(), 304);
    assert!(text(&again).is_empty());
}

#[test]
fn a_track_pages_with_a_link_and_speaks_gpx() {
    let fleet = fleet();
    let range = "from=2026-12-01T08:00:00Z&to=2026-12-01T09:00:00Z";
    let first = call(
        &fleet,
        "GET",
        "/v1/devices/tag-1/track",
        &format!("{range}&limit=3"),
        &[],
        None,
    );
    let page: Value = serde_json::from_str(&text(&first)).unwrap();
    assert_eq!(page["features"][0]["geometry"]["type"], "LineString");
    assert_eq!(
        page["features"][0]["geometry"]["coordinates"][0],
        json!([4.0, 52.0, 3.5])
    );
    let cursor = page["next_cursor"].as_str().unwrap();
    let link = header(&first, "link").unwrap();
    assert!(
        link.starts_with("</v1/devices/tag-1/track?from=2026-12-01T08%3A00%3A00Z"),
        "{link}"
    );
    assert!(link.ends_with(&format!("cursor={cursor}>; rel=\"next\"")));
    let second = call(
        &fleet,
        "GET",
        "/v1/devices/tag-1/track",
        &format!("{range}&limit=3&cursor={cursor}"),
        &[],
        None,
    );
    let page: Value = serde_json::from_str(&text(&second)).unwrap();
    assert_eq!(
        page["features"][0]["properties"]["times"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(page["next_cursor"].is_null() && header(&second, "link").is_none());
    // The cursor is the track's: another range refuses it.
    let other = call(
        &fleet,
        "GET",
        "/v1/devices/tag-1/track",
        &format!("limit=3&cursor={cursor}"),
        &[],
        None,
    );
    assert_eq!(other.status(), 400);
    let gpx = call(
        &fleet,
        "GET",
        "/v1/devices/tag-1/track",
        &format!("{range}&format=gpx"),
        &[],
        None,
    );
    assert_eq!(header(&gpx, "content-type"), Some("application/gpx+xml"));
    let body = text(&gpx);
    assert_eq!(body.matches("<trkpt").count(), 5);
    assert!(
        body.contains(
            r#"<trkpt lat="52" lon="4"><ele>3.5</ele><time>2026-12-01T08:00:00.000Z</time></trkpt>"#
        ),
        "{body}"
    );
}

#[test]
fn stats_count_the_hour() {
    let fleet = fleet();
    let response = call(
        &fleet,
        "GET",
        "/v1/devices/tag-1/stats",
        "from=2026-12-01T08:30:00Z&to=2026-12-01T09:00:00Z",
        &[],
        None,
    );
    let stats: Value = serde_json::from_str(&text(&response)).unwrap();
    assert_eq!(stats["buckets"][0]["start"], "2026-12-01T08:00:00.000Z");
    assert_eq!(stats["buckets"][0]["readings"], 5);
    let days = call(
        &fleet,
        "GET",
        "/v1/devices/tag-1/stats",
        "period=day",
        &[],
        None,
    );
    let stats: Value = serde_json::from_str(&text(&days)).unwrap();
    assert_eq!(stats["buckets"][0]["start"], "2026-12-01T00:00:00.000Z");
    assert_eq!(stats["buckets"][0]["readings"], 5);
}

#[test]
fn stats_show_the_open_hour_that_is_not_stored_yet() {
    // tag-1 read at 08:00-08:04 (stored: closed by the reading at 09:10),
    // then at 09:10 and 09:20: 09:00 is its open hour, not in DeviceStats.
    let fleet = fleet();
    let later = |minute: i64, seq: u64| Reading {
        device_id: "tag-1".into(),
        ts_ms: T0 + minute * 60_000,
        lat: 52.1,
        lon: 4.0 + minute as f64 / 1000.0,
        alt: None,
        speed: Some(12.0),
        heading: None,
        battery: Some(70.0),
        accuracy: None,
        seq: Some(seq),
        received_at_ms: Some(T0 + minute * 60_000),
        owner: Some("acme".into()),
    };
    fleet.record(&[later(70, 10), later(80, 11)]);
    let get = |query: &str| -> Value {
        let response = call(&fleet, "GET", "/v1/devices/tag-1/stats", query, &[], None);
        serde_json::from_str(&text(&response)).unwrap()
    };
    let hours = get("from=2026-12-01T08:00:00Z&to=2026-12-01T10:00:00Z");
    let counts: Vec<(&str, u64)> = (hours["buckets"].as_array().unwrap().iter())
        .map(|b| {
            (
                b["start"].as_str().unwrap(),
                b["readings"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            ("2026-12-01T08:00:00.000Z", 5),
            ("2026-12-01T09:00:00.000Z", 2)
        ]
    );
    assert_eq!(hours["buckets"][1]["speed_max_mps"], 12.0);
    let days = get("period=day");
    assert_eq!(days["buckets"][0]["readings"], 7, "{days}");
}

#[test]
fn a_geofence_is_created_read_changed_and_removed() {
    let fleet = fleet();
    let json = [("content-type", "application/json")];
    let circle = r#"{"id":"depot","name":"Depot","shape":{"type":"circle","center":{"lat":52,"lon":4},"radius_m":250}}"#;
    let created = call(&fleet, "POST", "/v1/geofences", "", &json, Some(circle));
    assert_eq!(created.status(), 201, "{}", text(&created));
    assert_eq!(header(&created, "location"), Some("/v1/geofences/depot"));
    assert_eq!(
        call(&fleet, "POST", "/v1/geofences", "", &json, Some(circle)).status(),
        409
    );
    let polygon = r#"{"name":"Yard","shape":{"type":"polygon","vertices":[{"lat":52,"lon":4},{"lat":52.1,"lon":4},{"lat":52,"lon":4.1}]}}"#;
    let changed = call(
        &fleet,
        "PUT",
        "/v1/geofences/depot",
        "",
        &json,
        Some(polygon),
    );
    assert_eq!(changed.status(), 200, "{}", text(&changed));
    let read: Value = serde_json::from_str(&text(&call(
        &fleet,
        "GET",
        "/v1/geofences/depot",
        "",
        &[],
        None,
    )))
    .unwrap();
    assert_eq!(read["name"], "Yard");
    assert_eq!(read["scope"], "customer");
    assert_eq!(
        read["shape"]["vertices"][1],
        json!({"lat": 52.1, "lon": 4.0})
    );
    assert_eq!(
        call(&fleet, "DELETE", "/v1/geofences/depot", "", &[], None).status(),
        204
    );
    assert_eq!(
        call(&fleet, "GET", "/v1/geofences/depot", "", &[], None).status(),
        404
    );
    let unsupported = call(
        &fleet,
        "POST",
        "/v1/geofences",
        "",
        &[("content-type", "text/plain")],
        Some(circle),
    );
    assert_eq!(unsupported.status(), 415);
}
