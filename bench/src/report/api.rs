//! The API's table: handler time of its two heavy answers (criterion, the
//! tables in memory), what DynamoDB bills to read them (item sizes by its
//! rules), and the cost of a million requests.

use std::fmt::Write as _;

use super::HotPaths;
use super::cost::{assume, price};
use crate::api;

/// HTTP API requests, per request (the first 300 million a month, each up to 512 KB).
const HTTP_API_REQUEST: f64 = 1.00e-6;
/// The API function's memory (template.yaml's ApiFunction).
const API_MEMORY_GB: f64 = 0.5;
/// The owner check: one strongly consistent GetItem of a Devices item (< 4 KB).
const OWNER_READ_UNITS: f64 = 1.0;

pub(super) fn api_table(hot: &HotPaths) -> String {
    let (_, states) = api::fleet(1_000);
    let (fleet_units, fleet_bytes) = api::fleet_listing_read_units(&states);
    let (_, readings) = api::day_track();
    let (track_units, track_bytes) = api::track_read_units(&readings, 30);
    let mut table = String::new();
    let _ = writeln!(
        table,
        "## The API: its two heavy answers, per request\n\n\
         Handler time is criterion's median with the tables in memory (decoding the payload v2 \
         request, scoping, rendering the document); DynamoDB's time is not in it. Read units \
         are what DynamoDB bills for the same answer, from the items' sizes by its rules \
         (eventually consistent Queries; the owner check is a strongly consistent GetItem). \
         The cost adds HTTP API requests, Lambda requests and duration at {API_MEMORY_GB} GB \
         with {} ms of DynamoDB round trip each, and the reads.\n",
        assume::DYNAMODB_ROUND_MS
    );
    let _ = writeln!(
        table,
        "| request | handler ms | items read | bytes read | read units | goal | USD per million requests |"
    );
    let _ = writeln!(table, "|---|---:|---:|---:|---:|---|---:|");
    for (id, what, items, bytes, units, rounds, goal) in [
        (
            "api/fleet/1000",
            "a customer's 1,000 tags (`/v1/devices?limit=1000`)",
            1_000,
            fleet_bytes,
            fleet_units,
            1.0,
            "≤ 20 ms, ≤ 10 units",
        ),
        (
            "api/track-day/1440",
            "a day of one tag at a reading a minute",
            1_440,
            track_bytes,
            track_units + OWNER_READ_UNITS,
            2.0,
            "-",
        ),
    ] {
        let handler_ms = hot.rust_ns.get(id).map(|ns| ns / 1e6);
        let cost = handler_ms.map(|ms| {
            let seconds = (ms + rounds * assume::DYNAMODB_ROUND_MS) / 1000.0;
            1e6 * (HTTP_API_REQUEST
                + price::LAMBDA_REQUEST
                + seconds * API_MEMORY_GB * price::LAMBDA_GB_SECOND
                + units * price::DYNAMODB_READ_UNIT)
        });
        let _ = writeln!(
            table,
            "| {what} | {} | {items} | {bytes} | {units:.1} | {goal} | {} |",
            handler_ms.map_or("(not run)".into(), |ms| format!("{ms:.2}")),
            cost.map_or("-".into(), |usd| format!("${usd:.2}")),
        );
    }
    let _ = writeln!(table);
    table
}

/// `clients` concurrent clients, each asking `/v1/devices?limit=100` of a
/// 100-tag customer `requests` times, against `geotag up`'s local API over
/// moto: the error count is the figure (moto, not the handler, sets the
/// pace; the latencies say how the local stack holds up, not what AWS does).
const TAGS: usize = 100;

pub(super) async fn load_table(clients: usize, requests: usize) -> anyhow::Result<String> {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use geotag::store::{Expected, StatsBody, StatsItem, StatsStore as _};
    use geotag_local_api::{Gateway, LocalApi, LocalIssuer, Subject};
    use geotag_local_cloud::invoker::{InProcess, Invoker};
    use geotag_local_cloud::stack::{LocalStack, Options};

    let local = LocalStack::start(&Options::default()).await?;
    let dynamodb = aws_sdk_dynamodb::Client::new(&local.sdk);
    let store =
        geotag_aws::DynamoStatsStore::new(dynamodb, local.stack.reference("DeviceStatsTable")?);
    let (_, states) = api::fleet(TAGS);
    let writes: Vec<(StatsItem, Expected)> = states
        .into_iter()
        .enumerate()
        .map(|(index, state)| {
            let item = StatsItem {
                device_id: format!("tag-{index:05}"),
                revision: 1,
                body: StatsBody::Latest(state),
            };
            (item, Expected::Absent)
        })
        .collect();
    anyhow::ensure!(
        store.save(&writes).await.iter().all(Result::is_ok),
        "seeding DeviceStats failed"
    );
    let invoker = Invoker::InProcess(Arc::new(InProcess::for_stack(&local.stack, &local.sdk)?));
    let issuer = Arc::new(LocalIssuer::generate(
        geotag_local_api::issuer::LOCAL_ISSUER,
    )?);
    let served = LocalApi::start(Gateway {
        routes: Gateway::routes_of(&local.stack),
        invoker,
        issuer: Arc::clone(&issuer),
        allowed_origins: vec!["*".into()],
        site: None,
    })
    .await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let bearer = format!(
        "Bearer {}",
        issuer.token(
            &Subject::Customer(api::CUSTOMER.into()),
            Duration::from_secs(3600),
            now
        )?
    );
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (address, bearer) = (served.address, bearer.clone());
        tasks.spawn(async move {
            let mut outcomes = Vec::with_capacity(requests);
            for _ in 0..requests {
                let asked = Instant::now();
                let answer = geotag_local_api::probe::call(
                    address,
                    "GET",
                    "/v1/devices?limit=100",
                    &[("authorization", bearer.as_str())],
                    "",
                )
                .await;
                let ok = answer.is_ok_and(|a| {
                    a.status == 200 && a.body.matches("\"Feature\"").count() == TAGS
                });
                outcomes.push((ok, asked.elapsed()));
            }
            outcomes
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(outcomes) = tasks.join_next().await {
        for (ok, latency) in outcomes? {
            errors += usize::from(!ok);
            latencies.push(latency);
        }
    }
    let wall = started.elapsed();
    served.stop().await;
    latencies.sort();
    let at =
        |share: f64| latencies[((latencies.len() - 1) as f64 * share) as usize].as_secs_f64() * 1e3;
    let mut table = String::new();
    let _ = writeln!(
        table,
        "### The local API under load\n\n{clients} concurrent clients, {requests} requests each, \
         `GET /v1/devices?limit=100` of a 100-tag customer through `geotag up`'s API (authorizer, \
         payload v2, the handler in-process) over moto. moto sets the pace: these say the local \
         stack holds up, not what AWS does.\n"
    );
    let _ = writeln!(
        table,
        "| requests | errors | wall s | requests/s | p50 ms | p99 ms |"
    );
    let _ = writeln!(table, "|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        table,
        "| {} | {errors} | {:.1} | {:.0} | {:.0} | {:.0} |\n",
        latencies.len(),
        wall.as_secs_f64(),
        latencies.len() as f64 / wall.as_secs_f64(),
        at(0.5),
        at(0.99)
    );
    Ok(table)
}
