//! The hot paths, timed per reading: ingest (an SQS event decoded, validated
//! and turned into BatchWriteItem requests), stats (a Telemetry stream batch
//! folded into latest states and rollups) and alerts (latest changes judged
//! by every rule). Each starts from the event's JSON text, as the runtime
//! hands it over, and ends where the network would begin.
//!
//! `cargo bench -p geotag-bench --bench hot_paths`; `scripts/bench` runs it
//! beside the Python baseline and prints the table.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use geotag_bench::events::{
    self, fleet, ingest_event, latest_changes_event, telemetry_stream_event,
};
use geotag_bench::fixtures;
use geotag_ingest::IngestEvent;
use std::hint::black_box;
use std::time::{Duration, Instant};

// The allocator the functions run with (see their main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
}

fn ingest(c: &mut Criterion) {
    let runtime = runtime();
    let handler = fixtures::ingest();
    let mut group = c.benchmark_group("ingest");
    for (shape, per_message, sizes) in [
        ("single", 1, [10, 100, 10_000]),
        ("batched50", 50, [10, 100, 1_000]),
    ] {
        for records in sizes {
            let (event, readings) = ingest_event(records, per_message, 7);
            group.throughput(Throughput::Elements(readings as u64));
            if readings > 10_000 {
                group.sample_size(20);
            }
            group.bench_function(format!("{shape}/{records}"), |b| {
                b.iter(|| {
                    let event: IngestEvent =
                        serde_json::from_str(black_box(&event)).expect("an SQS event");
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let outcome = runtime
                        .block_on(geotag_ingest::process(&handler, &event.records, deadline))
                        .expect("an answerable batch");
                    assert_eq!(outcome.readings_stored, readings);
                    outcome
                })
            });
        }
    }
    group.finish();
}

fn stats(c: &mut Criterion) {
    let runtime = runtime();
    let readings = fleet(100, 100, 11);
    let event = telemetry_stream_event(&readings);
    let tracks = fixtures::HourReadings::of(&readings);
    let mut group = c.benchmark_group("stats");
    group.throughput(Throughput::Elements(readings.len() as u64));
    group.sample_size(20);
    group.bench_function("stream/10000", |b| {
        b.iter_batched(
            || fixtures::stats(&tracks),
            |stats| {
                let records = events::stream_records(black_box(&event));
                let outcome = runtime.block_on(geotag_stats::process(&stats, &records));
                assert!(outcome.failures.is_empty());
                outcome
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn alerts(c: &mut Criterion) {
    let runtime = runtime();
    let readings = fleet(100, 100, 11);
    let event = latest_changes_event(&readings, 500);
    let devices: std::collections::BTreeSet<String> =
        readings.iter().map(|r| r.device_id.clone()).collect();
    let mut group = c.benchmark_group("alerts");
    group.throughput(Throughput::Elements(readings.len() as u64));
    group.sample_size(20);
    group.bench_function("latest-changes/10000", |b| {
        b.iter_batched(
            || fixtures::alerts(devices.iter().cloned()),
            |alerts| {
                let records = events::stream_records(black_box(&event));
                let outcome = runtime.block_on(geotag_alerts::process_stream_leased(
                    &alerts,
                    &records,
                    events::NOW_MS + 60_000,
                ));
                assert!(outcome.failures.is_empty());
                outcome
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// The API's two heavy answers, per request, the tables in memory: a
/// customer's 1,000 tags where they are now, and a day of one tag's track at
/// one reading a minute (GeoJSON). DynamoDB's latency is the report's to add.
fn api(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("api");
    group.throughput(Throughput::Elements(1));
    let (fleet, _) = geotag_bench::api::fleet(1_000);
    let listing = geotag_bench::api::get("/v1/devices", "limit=1000");
    group.bench_function("fleet/1000", |b| {
        b.iter(|| {
            let response = runtime.block_on(geotag_api::handle(&fleet, black_box(&listing), 0));
            assert_eq!(response.status(), 200);
            response
        })
    });
    let (track, _) = geotag_bench::api::day_track();
    let day = geotag_bench::api::get(
        "/v1/devices/tag-00000/track",
        "from=2026-12-01T00:00:00Z&to=2026-12-02T00:00:00Z",
    );
    group.bench_function("track-day/1440", |b| {
        b.iter(|| {
            let response = runtime.block_on(geotag_api::handle(&track, black_box(&day), 0));
            assert_eq!(response.status(), 200);
            response
        })
    });
    group.finish();
}

criterion_group!(benches, ingest, stats, alerts, api);
criterion_main!(benches);
