//! Decode + validate cost per reading, for the three body shapes ingest sees
//! (each an edge envelope, as IoT Core's topic rule publishes it).
//! `cargo bench -p geotag --bench decode`; criterion reports time per reading
//! (throughput in elements = readings).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use geotag::{Limits, decode_message, edge_envelope};
use serde_json::json;

const NOW: i64 = 1_795_161_900_000;

fn reading(i: i64) -> serde_json::Value {
    json!({"ts": NOW - 600_000 + i * 1000, "lat": 48.8566 + i as f64 * 1e-4, "lon": 2.3522 - i as f64 * 1e-4,
           "alt": 35.5, "speed": 8.25, "heading": 45.0, "battery": 91.5, "accuracy": 4.8, "seq": 100 + i})
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let mut single = reading(0);
    single["device_id"] = json!("tag-0042");
    let single = edge_envelope("tag-0042", NOW - 1_000, single.to_string().as_bytes());
    let envelope =
        json!({"Type": "Notification", "MessageId": "5f1a4b3e-9a7d-3c2b-1a0f-9e8d7c6b5a49",
        "TopicArn": "arn:aws:sns:eu-west-1:123456789012:geotag-telemetry", "Message": single,
        "Timestamp": "2026-11-20T08:01:00.000Z", "SignatureVersion": "1", "Signature": "EXAMPLE"})
        .to_string();
    let batch =
        json!({"device_id": "tag-0042", "readings": (0..50).map(reading).collect::<Vec<_>>()})
            .to_string();
    let batch = edge_envelope("tag-0042", NOW - 1_000, batch.as_bytes());

    let mut group = c.benchmark_group("decode+validate");
    group.throughput(Throughput::Elements(1));
    group.bench_function("single reading, raw", |b| {
        b.iter(|| decode_message(std::hint::black_box(&single), &limits, NOW))
    });
    group.bench_function("single reading, SNS envelope", |b| {
        b.iter(|| decode_message(std::hint::black_box(&envelope), &limits, NOW))
    });
    group.throughput(Throughput::Elements(50));
    group.bench_function("batch of 50 readings", |b| {
        b.iter(|| decode_message(std::hint::black_box(&batch), &limits, NOW))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
