//! Tenant isolation, as a property: over generated fleets (tags passed from
//! customer to customer, readings of nobody, hours that saw a tag change
//! hands, alerts published and not, geofences of each customer and global
//! ones), every route asked by every customer (and by the operator naming
//! that customer), every page followed, answers with no byte of another
//! customer's data, answers a foreign id exactly as an unknown one, and does
//! show the caller's own data (so that answering nothing cannot pass).

use std::collections::{BTreeMap, BTreeSet};

use geotag::geofence::{Geofence, Shape};
use geotag::read::{LoggedAlert, MemoryFleet};
use geotag::reading::Reading;
use geotag_api::payload::{Incoming, event, request};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const CUSTOMERS: [&str; 3] = ["acme", "globex", "initech"];
const T0: i64 = 1_796_112_000_000; // 2026-12-01T08:00:00Z
const NOW: i64 = T0 + 10 * 86_400_000;

/// A tag's history: who held it, in turn (`None`: nobody), and how many
/// readings each holder's time has.
#[derive(Debug, Clone)]
struct TagHistory {
    holders: Vec<(Option<usize>, usize)>,
}

fn histories() -> impl Strategy<Value = Vec<TagHistory>> {
    let holder = prop_oneof![3 => (0usize..3).prop_map(Some), 1 => Just(None)];
    prop::collection::vec(
        prop::collection::vec((holder, 1usize..5), 1..4).prop_map(|holders| TagHistory { holders }),
        1..7,
    )
}

/// The world, and what belongs to whom in it.
struct World {
    fleet: MemoryFleet,
    /// Per customer: text only its data holds (alert subjects and ids, zone names).
    markers: BTreeMap<&'static str, Vec<String>>,
    /// Per customer: each of its readings' latitude as the API prints it.
    latitudes: BTreeMap<Option<&'static str>, BTreeSet<String>>,
    /// Per customer: the tags it holds now, and those it ever held.
    holds: BTreeMap<&'static str, BTreeSet<String>>,
    ever_held: BTreeMap<&'static str, BTreeSet<String>>,
    /// Per customer: readings stamped with it, by tag.
    own_readings: BTreeMap<(&'static str, String), usize>,
    tags: Vec<String>,
}

fn build(histories: &[TagHistory], alerts_each: usize) -> World {
    let fleet = MemoryFleet::default();
    let mut world = World {
        fleet,
        markers: BTreeMap::new(),
        latitudes: BTreeMap::new(),
        holds: BTreeMap::new(),
        ever_held: BTreeMap::new(),
        own_readings: BTreeMap::new(),
        tags: Vec::new(),
    };
    let mut serial = 0u64;
    for (index, history) in histories.iter().enumerate() {
        let tag = format!("tag-{index}");
        world.tags.push(tag.clone());
        let mut ts = T0 + index as i64 * 60_000;
        let mut readings = Vec::new();
        for (holder, count) in &history.holders {
            let customer = holder.map(|k| CUSTOMERS[k]);
            for _ in 0..*count {
                serial += 1;
                // Two-digit bands (11.x, 21.x, 31.x, 41.x for nobody) and a
                // serial make every latitude's text unique and no other's substring.
                let band = 10.0 * (holder.map_or(3, |k| k) as f64 + 1.0) + 1.0;
                let lat = band + serial as f64 / 1000.0 + 0.000_001_7;
                world
                    .latitudes
                    .entry(customer)
                    .or_default()
                    .insert(Value::from(lat).to_string());
                readings.push(Reading {
                    device_id: tag.clone(),
                    ts_ms: ts,
                    lat,
                    lon: lat,
                    alt: None,
                    speed: Some(3.0),
                    heading: None,
                    battery: Some(80.0),
                    accuracy: None,
                    seq: Some(serial),
                    received_at_ms: Some(ts),
                    owner: customer.map(str::to_owned),
                });
                if let Some(customer) = customer {
                    *world
                        .own_readings
                        .entry((customer, tag.clone()))
                        .or_default() += 1;
                    world
                        .ever_held
                        .entry(customer)
                        .or_default()
                        .insert(tag.clone());
                }
                // Twenty minutes apart: holders share hours, and days.
                ts += 20 * 60_000;
            }
        }
        world.fleet.record(&readings);
        if let Some(customer) = history
            .holders
            .last()
            .and_then(|(holder, _)| holder.map(|k| CUSTOMERS[k]))
        {
            world.fleet.assign(&tag, customer);
            world.holds.entry(customer).or_default().insert(tag.clone());
        }
    }
    for (k, customer) in CUSTOMERS.iter().enumerate() {
        let markers = world.markers.entry(customer).or_default();
        for n in 0..alerts_each {
            let id = format!("{customer}-alert-{n}");
            let subject = format!("secret-{customer}-{n}");
            markers.push(id.clone());
            markers.push(subject.clone());
            world.fleet.log_alert(LoggedAlert {
                id,
                kind: if n % 2 == 0 { "battery_low" } else { "silence" }.into(),
                device_id: format!("alerted-{customer}"),
                customer_id: (*customer).into(),
                at_ms: T0 + n as i64 * 1000,
                subject,
                // Every third is unpublished: not even its customer sees it.
                published: n % 3 != 2,
                geofence_id: None,
                geofence_name: None,
            });
        }
        let zone = format!("zone-{customer}");
        markers.push(zone.clone());
        markers.push(format!("alerted-{customer}"));
        world.fleet.add_geofence(Geofence {
            id: zone.clone(),
            name: zone,
            customer_id: Some((*customer).into()),
            shape: Shape::Circle {
                lat: 1.0 + k as f64,
                lon: 1.0,
                radius_m: 100.0,
            },
        });
    }
    world.fleet.add_geofence(Geofence {
        id: "zone-global".into(),
        name: "Everyone's depot".into(),
        customer_id: None,
        shape: Shape::Circle {
            lat: 0.5,
            lon: 0.5,
            radius_m: 100.0,
        },
    });
    world
}

#[derive(Debug, Clone, Copy)]
enum Asker {
    Customer(&'static str),
    Operator(&'static str),
}

impl Asker {
    fn customer(self) -> &'static str {
        match self {
            Asker::Customer(c) | Asker::Operator(c) => c,
        }
    }

    fn claims(self) -> Map<String, Value> {
        let claims = match self {
            Asker::Customer(c) => json!({"sub": "u", "cognito:groups": [format!("customer:{c}")]}),
            Asker::Operator(_) => json!({"sub": "op", "scope": "openid geotag/operator"}),
        };
        claims.as_object().cloned().unwrap_or_default()
    }

    /// The query for a route, with the operator's `customer=` added.
    fn query(self, query: &str) -> String {
        match self {
            Asker::Customer(_) => query.to_owned(),
            Asker::Operator(c) if query.is_empty() => format!("customer={c}"),
            Asker::Operator(c) => format!("{query}&customer={c}"),
        }
    }
}

struct Answer {
    status: u16,
    body: String,
    next: Option<String>,
}

fn ask(world: &World, asker: Asker, path: &str, query: &str) -> Answer {
    let query = asker.query(query);
    let incoming = Incoming {
        method: "GET",
        path,
        raw_query: &query,
        ..Incoming::default()
    };
    let request = request(event(&incoming, Some(&asker.claims()))).expect("a payload v2 event");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let response = runtime.block_on(geotag_api::handle(&world.fleet, &request, NOW));
    let next = response
        .headers()
        .get("link")
        .and_then(|link| link.to_str().ok())
        .and_then(|link| link.split("cursor=").nth(1))
        .and_then(|rest| rest.split('>').next())
        .map(str::to_owned);
    let body = match response.body() {
        lambda_http::Body::Text(text) => text.clone(),
        lambda_http::Body::Binary(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        _ => String::new(),
    };
    Answer {
        status: response.status().as_u16(),
        body,
        next,
    }
}

/// Every page of a listing, concatenated.
fn every_page(world: &World, asker: Asker, path: &str, query: &str) -> Vec<Answer> {
    let mut answers = vec![ask(world, asker, path, query)];
    while let Some(cursor) = answers.last().and_then(|a| a.next.clone()) {
        assert!(answers.len() < 500, "a listing that never ends: {path}");
        let sep = if query.is_empty() { "" } else { "&" };
        answers.push(ask(
            world,
            asker,
            path,
            &format!("{query}{sep}cursor={cursor}"),
        ));
    }
    answers
}

fn check_no_foreign_bytes(world: &World, asker: Asker, route: &str, answer: &Answer) {
    let me = asker.customer();
    assert!(
        answer.status < 500,
        "{route}: {} {}",
        answer.status,
        answer.body
    );
    for (other, markers) in &world.markers {
        if *other == me {
            continue;
        }
        for marker in markers {
            assert!(
                !answer.body.contains(marker.as_str()),
                "{me} sees {other}'s {marker:?} in {route}: {}",
                answer.body
            );
        }
    }
    for (holder, latitudes) in &world.latitudes {
        if *holder == Some(me) {
            continue;
        }
        for lat in latitudes {
            assert!(
                !answer.body.contains(lat.as_str()),
                "{me} sees a reading of {holder:?} ({lat}) in {route}: {}",
                answer.body
            );
        }
    }
    for tag in &world.tags {
        let mine_ever = world.ever_held.get(me).is_some_and(|t| t.contains(tag))
            || world.holds.get(me).is_some_and(|t| t.contains(tag));
        if !mine_ever {
            assert!(
                !answer.body.contains(&format!("\"{tag}\""))
                    && !answer.body.contains(&format!(">{tag}<")),
                "{me} sees {tag}, never its, in {route}"
            );
        }
    }
}

fn check_world(world: &World) {
    let range = "from=2026-12-01T00:00:00Z&to=2026-12-08T00:00:00Z";
    for customer in CUSTOMERS {
        for asker in [Asker::Customer(customer), Asker::Operator(customer)] {
            let mut listed = BTreeSet::new();
            for answer in every_page(world, asker, "/v1/devices", "limit=2") {
                check_no_foreign_bytes(world, asker, "devices", &answer);
                let page: Value = serde_json::from_str(&answer.body).unwrap();
                for feature in page["features"].as_array().unwrap() {
                    listed.insert(feature["id"].as_str().unwrap().to_owned());
                }
            }
            // Listed: the tags whose newest reading is this customer's.
            for tag in &listed {
                assert!(
                    world
                        .ever_held
                        .get(customer)
                        .is_some_and(|t| t.contains(tag))
                );
            }
            let unknown: Vec<(String, u16, String)> =
                ["device", "track", "track-gpx", "stats-hour", "stats-day"]
                    .iter()
                    .map(|route| {
                        let answer = device_route(world, asker, "no-such-tag", route, range);
                        (route.to_string(), answer.status, answer.body)
                    })
                    .collect();
            for tag in &world.tags {
                let held = world.holds.get(customer).is_some_and(|t| t.contains(tag));
                for (route, unknown_status, unknown_body) in &unknown {
                    let answers = if route.starts_with("track") {
                        let (path, query) = device_path(tag, route, range);
                        every_page(world, asker, &path, &format!("{query}&limit=2"))
                    } else {
                        vec![device_route(world, asker, tag, route, range)]
                    };
                    let mut points = 0;
                    for answer in &answers {
                        check_no_foreign_bytes(world, asker, route, answer);
                        if !held {
                            assert_eq!(
                                (answer.status, &answer.body),
                                (*unknown_status, unknown_body),
                                "{customer}: {tag} (not its) answers unlike an unknown tag on {route}"
                            );
                        }
                        points += answer.body.matches("<trkpt").count();
                    }
                    if held && route == "track-gpx" {
                        let own = world
                            .own_readings
                            .get(&(customer, tag.clone()))
                            .copied()
                            .unwrap_or(0);
                        assert_eq!(points, own, "{customer} misses readings of its {tag}");
                    }
                }
            }
            let mut alerts = 0;
            for answer in every_page(
                world,
                asker,
                "/v1/alerts",
                "since=2026-12-01T00:00:00Z&until=2026-12-02T00:00:00Z&limit=2",
            ) {
                check_no_foreign_bytes(world, asker, "alerts", &answer);
                assert!(!answer.body.contains("\"published\":false"));
                alerts += answer.body.matches("secret-").count();
            }
            let alerts_each = world.markers[customer]
                .iter()
                .filter(|m| m.starts_with("secret-"))
                .count();
            assert_eq!(alerts, (0..alerts_each).filter(|n| n % 3 != 2).count());
            let zones = ask(world, asker, "/v1/geofences", "");
            check_no_foreign_bytes(world, asker, "geofences", &zones);
            assert!(
                zones.body.contains(&format!("zone-{customer}"))
                    && zones.body.contains("zone-global")
            );
            for other in CUSTOMERS {
                let zone = ask(world, asker, &format!("/v1/geofences/zone-{other}"), "");
                check_no_foreign_bytes(world, asker, "geofence", &zone);
                assert_eq!(zone.status == 200, other == customer);
            }
        }
    }
}

fn device_path(tag: &str, route: &str, range: &str) -> (String, String) {
    match route {
        "device" => (format!("/v1/devices/{tag}"), String::new()),
        "track" => (format!("/v1/devices/{tag}/track"), range.to_owned()),
        "track-gpx" => (
            format!("/v1/devices/{tag}/track"),
            format!("{range}&format=gpx"),
        ),
        "stats-hour" => (
            format!("/v1/devices/{tag}/stats"),
            format!("{range}&period=hour"),
        ),
        _ => (
            format!("/v1/devices/{tag}/stats"),
            format!("{range}&period=day"),
        ),
    }
}

fn device_route(world: &World, asker: Asker, tag: &str, route: &str, range: &str) -> Answer {
    let (path, query) = device_path(tag, route, range);
    ask(world, asker, &path, &query)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn no_customer_sees_another_customers_data(histories in histories(), alerts_each in 0usize..6) {
        check_world(&build(&histories, alerts_each));
    }
}

/// A tag passed from acme to globex: globex sees only its own time, acme
/// nothing any more, and the hour they shared is nobody's.
#[test]
fn a_tag_passed_on_takes_no_history_along() {
    let world = build(
        &[TagHistory {
            holders: vec![(Some(0), 2), (Some(1), 2)],
        }],
        0,
    );
    check_world(&world);
    let range = "from=2026-12-01T00:00:00Z&to=2026-12-02T00:00:00Z";
    let globex = ask(
        &world,
        Asker::Customer("globex"),
        "/v1/devices/tag-0/track",
        range,
    );
    assert_eq!(globex.status, 200);
    let track: Value = serde_json::from_str(&globex.body).unwrap();
    assert_eq!(
        track["features"][0]["properties"]["times"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let acme = ask(
        &world,
        Asker::Customer("acme"),
        "/v1/devices/tag-0/track",
        range,
    );
    assert_eq!(acme.status, 404);
    let hours = ask(
        &world,
        Asker::Customer("globex"),
        "/v1/devices/tag-0/stats",
        &format!("{range}&period=hour"),
    );
    let stats: Value = serde_json::from_str(&hours.body).unwrap();
    // 08:00, 08:20 acme; 08:40, 09:00 globex: hour 08 is mixed, hour 09 globex's.
    let buckets = stats["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 1, "{}", hours.body);
    assert_eq!(buckets[0]["start"], "2026-12-01T09:00:00.000Z");
}
