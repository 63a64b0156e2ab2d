//! The local API end to end: moto's tables (written by the pipeline's own
//! adapters), the API function in-process, the local authorizer and CORS,
//! over real HTTP on 127.0.0.1. What a customer's `curl` sees.

use std::sync::Arc;
use std::time::{Duration, Instant};

use geotag::alerts::{Alert, AlertKind};
use geotag::reading::Reading;
use geotag::stats::LatestState;
use geotag::store::{AlertLog as _, Expected, StatsBody, StatsItem, StatsStore as _};
use geotag_aws::alert_log::DynamoAlertLog;
use geotag_aws::registry::device_item;
use geotag_aws::telemetry::reading_item;
use geotag_local_api::probe::Answer;
use geotag_local_api::{Gateway, LocalApi, LocalIssuer, Subject};
use geotag_local_cloud::invoker::{InProcess, Invoker};
use geotag_local_cloud::stack::{LocalStack, Options};
use serde_json::Value;

/// One HTTP/1.1 exchange, as curl would make it.
async fn http(
    api: &LocalApi,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    geotag_local_api::probe::call(api.address, method, target, headers, body)
        .await
        .expect("an HTTP answer")
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn reading(device: &str, owner: &str, ts_ms: i64, lat: f64) -> Reading {
    Reading {
        device_id: device.into(),
        ts_ms,
        lat,
        lon: 4.9,
        alt: None,
        speed: Some(5.0),
        heading: Some(10.0),
        battery: Some(60.0),
        accuracy: Some(4.0),
        seq: None,
        received_at_ms: Some(ts_ms),
        owner: Some(owner.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_reads_its_fleet_through_the_local_api() {
    let local = LocalStack::start(&Options::default())
        .await
        .expect("local stack");
    let dynamodb = aws_sdk_dynamodb::Client::new(&local.sdk);
    let table = |id: &str| local.stack.reference(id).unwrap().to_owned();
    let now_ms = geotag::clock::now_ms();
    // The hour of ten minutes ago: its three readings (a minute apart from
    // its start) are in the past whenever the test runs. The current hour's
    // were not in its first two minutes, and the API, which reads up to now,
    // returned one of them (CI at 14:00, 2026-12-03).
    let hour = (now_ms - 600_000).div_euclid(3_600_000) * 3_600_000;

    // Two customers' tags, as the registry, ingest and stats leave them.
    let mut stats = Vec::new();
    for (device, owner, lat) in [("tag-a1", "acme", 52.37), ("tag-g1", "globex", 40.71)] {
        dynamodb
            .put_item()
            .table_name(table("DevicesTable"))
            .set_item(Some(device_item(device, owner)))
            .send()
            .await
            .unwrap();
        let readings: Vec<Reading> = (0..3)
            .map(|i| reading(device, owner, hour + i * 60_000, lat + i as f64 / 1000.0))
            .collect();
        for r in &readings {
            dynamodb
                .put_item()
                .table_name(table("TelemetryTable"))
                .set_item(Some(reading_item(r, 30, r.ts_ms)))
                .send()
                .await
                .unwrap();
        }
        // The readings' hour is the tags' open hour: stats stores no rollup
        // of it until they move on, and the API makes it from Telemetry.
        let latest = LatestState::apply(None, &readings).unwrap();
        stats.push((
            StatsItem {
                device_id: device.into(),
                revision: 1,
                body: StatsBody::Latest(latest),
            },
            Expected::Absent,
        ));
    }
    let store = geotag_aws::DynamoStatsStore::new(dynamodb.clone(), table("DeviceStatsTable"));
    assert!(store.save(&stats).await.iter().all(Result::is_ok));
    let log = DynamoAlertLog::new(dynamodb.clone(), table("AlertsTable"), 30);
    for (device, customer) in [("tag-a1", "acme"), ("tag-g1", "globex")] {
        let alert = Alert {
            id: format!("{device}#battery_low#{hour}"),
            kind: AlertKind::BatteryLow,
            device_id: device.into(),
            customer_id: Some(customer.into()),
            at_ms: hour + 60_000,
            geofence: None,
            subject: format!("{device} battery low ({customer})"),
            text: String::new(),
        };
        log.claim(&alert, now_ms + 60_000).await.unwrap();
        log.mark_published(&alert.id).await.unwrap();
    }

    let invoker = Invoker::InProcess(Arc::new(
        InProcess::for_stack(&local.stack, &local.sdk).unwrap(),
    ));
    let issuer = Arc::new(LocalIssuer::generate("http://127.0.0.1/local-issuer").unwrap());
    let api = LocalApi::start(Gateway {
        routes: Gateway::routes_of(&local.stack),
        invoker,
        issuer: Arc::clone(&issuer),
        allowed_origins: vec!["*".into()],
        site: None,
    })
    .await
    .unwrap();
    assert!(api.address.ip().is_loopback());
    let acme = format!(
        "Bearer {}",
        issuer
            .token(
                &Subject::Customer("acme".into()),
                Duration::from_secs(600),
                now_secs()
            )
            .unwrap()
    );
    let auth = [("Authorization", acme.as_str())];

    let started = Instant::now();
    let fleet = http(&api, "GET", "/v1/devices", &auth, "").await;
    assert_eq!(fleet.status, 200, "{}", fleet.body);
    let page: Value = serde_json::from_str(&fleet.body).unwrap();
    let ids: Vec<&str> = page["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["tag-a1"], "acme's fleet, from the FleetIndex");
    assert_eq!(
        page["features"][0]["geometry"]["coordinates"],
        serde_json::json!([4.9, 52.372])
    );

    let foreign = http(&api, "GET", "/v1/devices/tag-g1", &auth, "").await;
    let unknown = http(&api, "GET", "/v1/devices/tag-zz", &auth, "").await;
    assert_eq!(
        (foreign.status, &foreign.body),
        (unknown.status, &unknown.body)
    );
    assert_eq!(foreign.status, 404);

    let from = geotag_api::render::time(hour);
    let track = http(
        &api,
        "GET",
        &format!("/v1/devices/tag-a1/track?from={from}&format=gpx"),
        &auth,
        "",
    )
    .await;
    assert_eq!(track.status, 200, "{}", track.body);
    assert_eq!(track.body.matches("<trkpt").count(), 3);
    let hours = http(
        &api,
        "GET",
        &format!("/v1/devices/tag-a1/stats?from={from}"),
        &auth,
        "",
    )
    .await;
    let stats: Value = serde_json::from_str(&hours.body).unwrap();
    assert_eq!(stats["buckets"][0]["readings"], 3, "{}", hours.body);
    let alerts = http(
        &api,
        "GET",
        &format!("/v1/alerts?since={from}&type=battery_low"),
        &auth,
        "",
    )
    .await;
    assert_eq!(alerts.status, 200, "{}", alerts.body);
    assert!(
        alerts.body.contains("tag-a1 battery low (acme)") && !alerts.body.contains("globex"),
        "{}",
        alerts.body
    );

    let zone = r#"{"id":"depot","name":"Depot","shape":{"type":"circle","center":{"lat":52.37,"lon":4.9},"radius_m":300}}"#;
    let json_auth = [
        ("Authorization", acme.as_str()),
        ("Content-Type", "application/json"),
    ];
    let created = http(&api, "POST", "/v1/geofences", &json_auth, zone).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let zones = http(&api, "GET", "/v1/geofences", &auth, "").await;
    assert!(zones.body.contains("\"depot\""), "{}", zones.body);
    // The ETag makes an unchanged answer a bodiless 304.
    let etag = zones.headers["etag"].clone();
    let again = http(
        &api,
        "GET",
        "/v1/geofences",
        &[("Authorization", acme.as_str()), ("If-None-Match", &etag)],
        "",
    )
    .await;
    assert_eq!(again.status, 304);
    eprintln!("ten requests against moto in {:?}", started.elapsed());

    // The authorizer: no token, another key's, an expired one.
    let none = http(&api, "GET", "/v1/devices", &[], "").await;
    assert_eq!(none.status, 401);
    assert!(none.headers["www-authenticate"].contains("no bearer token"));
    let stranger = LocalIssuer::generate("http://127.0.0.1/local-issuer").unwrap();
    let forged = format!(
        "Bearer {}",
        stranger
            .token(&Subject::Operator, Duration::from_secs(600), now_secs())
            .unwrap()
    );
    assert_eq!(
        http(
            &api,
            "GET",
            "/v1/devices",
            &[("Authorization", &forged)],
            ""
        )
        .await
        .status,
        401
    );
    let expired = format!(
        "Bearer {}",
        issuer
            .token(
                &Subject::Operator,
                Duration::from_secs(60),
                now_secs() - 3600
            )
            .unwrap()
    );
    let refused = http(
        &api,
        "GET",
        "/v1/devices",
        &[("Authorization", &expired)],
        "",
    )
    .await;
    assert_eq!(refused.status, 401);
    assert!(
        refused.headers["www-authenticate"].contains("Expired"),
        "{:?}",
        refused.headers
    );
    // The operator names the customer.
    let operator = format!(
        "Bearer {}",
        issuer
            .token(&Subject::Operator, Duration::from_secs(600), now_secs())
            .unwrap()
    );
    let globex = http(
        &api,
        "GET",
        "/v1/devices?customer=globex",
        &[("Authorization", &operator)],
        "",
    )
    .await;
    assert!(globex.body.contains("tag-g1") && !globex.body.contains("tag-a1"));

    // CORS, as the template configures API Gateway.
    let preflight = http(
        &api,
        "OPTIONS",
        "/v1/devices",
        &[
            ("Origin", "http://127.0.0.1:9999"),
            ("Access-Control-Request-Method", "GET"),
        ],
        "",
    )
    .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.headers["access-control-allow-origin"], "*");
    assert!(preflight.headers["access-control-allow-headers"].contains("authorization"));
    let cors = http(
        &api,
        "GET",
        "/v1/devices",
        &[
            ("Authorization", acme.as_str()),
            ("Origin", "http://127.0.0.1:9999"),
        ],
        "",
    )
    .await;
    assert!(cors.headers["access-control-expose-headers"].contains("etag"));
    assert_eq!(
        http(&api, "GET", "/v2/nothing", &auth, "").await.status,
        404
    );
    api.stop().await;
}
