//! The handler driven by the sample events in `events/ingest/`, with the
//! in-memory store and dead-letter sink: no AWS, no emulator.

use std::collections::BTreeMap;
use std::path::Path;

use aws_lambda_events::sqs::SqsEvent;
use geotag::Reason;
use geotag::store::{
    DeviceDirectory, MemoryDeadLetters, MemoryDirectory, MemoryReadingStore, UnregisteredDevices,
};
use geotag_ingest::{Ingest, handle};
use lambda_runtime::{Context, LambdaEvent};

/// 2026-11-20T08:15:00Z: the samples' readings were taken from 08:00, and
/// the broker received them at 08:10.
fn sample_clock() -> i64 {
    1_795_162_500_000
}

fn ingest() -> Ingest<MemoryReadingStore, MemoryDeadLetters> {
    let mut ingest = Ingest::new(
        MemoryReadingStore::default(),
        MemoryDeadLetters::default(),
        geotag::Limits::default(),
    );
    ingest.clock = sample_clock;
    ingest
}

fn sample(name: &str) -> SqsEvent {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../events/ingest")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn invoke<R: DeviceDirectory>(
    ingest: &Ingest<MemoryReadingStore, MemoryDeadLetters, R>,
    name: &str,
) -> Vec<String> {
    let response = handle(
        ingest,
        LambdaEvent::new(sample(name).into(), Context::default()),
    )
    .await
    .expect("the handler answers");
    response
        .batch_item_failures
        .into_iter()
        .map(|failure| failure.item_identifier)
        .collect()
}

fn message_id(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

#[tokio::test]
async fn valid_batch_is_stored() {
    let ingest = ingest();
    assert!(invoke(&ingest, "valid-batch.json").await.is_empty());
    let devices: Vec<_> = ingest
        .store
        .readings()
        .into_iter()
        .map(|r| r.device_id)
        .collect();
    assert_eq!(devices, ["tag-0001", "tag-0002", "tag-0003"]);
    assert!(ingest.dead_letters.letters().is_empty());
}

#[tokio::test]
async fn sns_envelope_is_unwrapped() {
    let ingest = ingest();
    assert!(invoke(&ingest, "sns-envelope.json").await.is_empty());
    let readings = ingest.store.readings();
    assert_eq!(readings.len(), 2);
    assert!(readings.iter().all(|r| r.device_id == "tag-0004"));
}

#[tokio::test]
async fn multi_reading_message_stores_every_reading() {
    let ingest = ingest();
    assert!(invoke(&ingest, "multi-reading.json").await.is_empty());
    let seqs: Vec<_> = ingest.store.readings().into_iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (100..106).map(Some).collect::<Vec<_>>());
}

#[tokio::test]
async fn bad_records_are_dead_lettered_with_reasons_and_good_ones_stored() {
    let ingest = ingest();
    let failures = invoke(&ingest, "bad-records.json").await;
    assert!(
        failures.is_empty(),
        "refused messages are done, not retried: {failures:?}"
    );

    // The good reading (sent twice) once, and the two valid readings of the partly bad batch.
    let stored: Vec<_> = ingest
        .store
        .readings()
        .into_iter()
        .map(|r| (r.device_id, r.seq))
        .collect();
    assert_eq!(
        stored,
        [
            ("tag-0006".into(), Some(1)),
            ("tag-0006".into(), Some(3)),
            ("tag-0007".into(), Some(100))
        ]
    );
    assert_eq!(ingest.store.puts(), 3);

    let letters: BTreeMap<_, _> = ingest
        .dead_letters
        .letters()
        .into_iter()
        .map(|l| {
            (
                l.source_message_id.clone(),
                (l.rejection.reason, l.rejection.field, l.stored_readings),
            )
        })
        .collect();
    let expected: BTreeMap<_, _> = [
        (32, (Reason::MalformedJson, "payload", 0)),
        (33, (Reason::OutOfRange, "payload.lat", 0)),
        (34, (Reason::DeviceIdMismatch, "payload.device_id", 0)),
        (35, (Reason::InvalidDeviceId, "payload.device_id", 0)),
        (36, (Reason::OutOfRange, "payload.readings[1].lat", 2)),
        (38, (Reason::MalformedJson, "Message", 0)),
        (39, (Reason::Unauthenticated, "thing_name", 0)),
        (40, (Reason::TimestampInFuture, "payload.ts", 0)),
    ]
    .into_iter()
    .map(|(n, (reason, field, stored))| (message_id(n), (reason, field.to_owned(), stored)))
    .collect();
    assert_eq!(letters, expected);
}

#[tokio::test]
async fn store_failure_is_a_batch_item_failure_and_is_not_dead_lettered() {
    let ingest = ingest();
    ingest.store.fail_device("tag-0006");
    let failures = invoke(&ingest, "bad-records.json").await;
    assert_eq!(failures, [message_id(36)]);
    // Its bad reading waits for the retry: no DLQ copy yet, so none twice.
    assert!(
        !ingest
            .dead_letters
            .letters()
            .iter()
            .any(|l| l.source_message_id == message_id(36))
    );

    ingest.store.heal();
    assert!(invoke(&ingest, "bad-records.json").await.is_empty());
    let copies = ingest
        .dead_letters
        .letters()
        .iter()
        .filter(|l| l.source_message_id == message_id(36))
        .count();
    assert_eq!(copies, 1);
}

#[tokio::test]
async fn unavailable_dead_letter_queue_means_retry_not_loss() {
    let ingest = ingest();
    ingest.dead_letters.set_unavailable(true);
    let mut failures = invoke(&ingest, "bad-records.json").await;
    failures.sort();
    let expected: Vec<_> = [32, 33, 34, 35, 36, 38, 39, 40]
        .into_iter()
        .map(message_id)
        .collect();
    assert_eq!(failures, expected);
}

#[tokio::test]
async fn duplicate_delivery_leaves_one_item() {
    let ingest = ingest();
    for _ in 0..3 {
        assert!(invoke(&ingest, "valid-batch.json").await.is_empty());
    }
    assert_eq!(ingest.store.readings().len(), 3);
}

#[tokio::test]
async fn a_reading_carried_twice_and_not_stored_fails_both_records() {
    let ingest = ingest();
    let mut event = sample("valid-batch.json");
    let mut copy = event.records[0].clone();
    copy.message_id = Some("a-redelivered-copy".into());
    event.records.push(copy);
    let device = {
        let body = event.records[0].body.as_deref().expect("a body");
        let edge: serde_json::Value = serde_json::from_str(body).expect("JSON");
        edge["thing_name"].as_str().expect("a thing").to_owned()
    };
    ingest.store.fail_device(&device);
    let response = handle(
        &ingest,
        LambdaEvent::new(event.clone().into(), Context::default()),
    )
    .await
    .expect("the handler answers");
    let mut failed: Vec<String> = response
        .batch_item_failures
        .into_iter()
        .map(|failure| failure.item_identifier)
        .collect();
    failed.sort();
    let mut expected: Vec<String> = event
        .records
        .iter()
        .filter(|record| {
            record
                .body
                .as_deref()
                .is_some_and(|body| body.contains(&format!("\"{device}\"")))
        })
        .filter_map(|record| record.message_id.clone())
        .collect();
    expected.sort();
    assert!(expected.len() >= 2, "{expected:?}");
    assert_eq!(failed, expected);
}

#[tokio::test]
async fn a_record_without_message_id_fails_the_batch_loudly() {
    let ingest = ingest();
    let mut event = sample("valid-batch.json");
    event.records[1].message_id = None;
    let result = handle(&ingest, LambdaEvent::new(event.into(), Context::default())).await;
    assert!(result.is_err());
}

/// Ingest refusing the tags its registry does not know, as production does.
fn refusing(
    assignments: &[(&str, &str)],
) -> Ingest<MemoryReadingStore, MemoryDeadLetters, MemoryDirectory> {
    ingest().with_directory(
        MemoryDirectory::with(assignments),
        UnregisteredDevices::Refuse,
    )
}

#[tokio::test]
async fn a_tag_missing_from_the_registry_is_refused_until_registered() {
    let ingest = refusing(&[("tag-0001", "acme"), ("tag-0003", "globex")]);
    assert!(invoke(&ingest, "valid-batch.json").await.is_empty());
    let stored: Vec<_> = ingest
        .store
        .readings()
        .into_iter()
        .map(|r| (r.device_id, r.owner))
        .collect();
    assert_eq!(
        stored,
        [
            ("tag-0001".to_owned(), Some("acme".to_owned())),
            ("tag-0003".to_owned(), Some("globex".to_owned()))
        ]
    );
    let letters = ingest.dead_letters.letters();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        (
            letters[0].source_message_id.as_str(),
            letters[0].rejection.reason,
            letters[0].rejection.field.as_str()
        ),
        (
            message_id(2).as_str(),
            Reason::UnregisteredDevice,
            "thing_name"
        )
    );
    assert!(letters[0].rejection.detail.contains("tag-0002"));

    // Registered now: the same message (redriven) is stored.
    ingest.directory.assign("tag-0002", "acme");
    assert!(invoke(&ingest, "valid-batch.json").await.is_empty());
    assert_eq!(ingest.store.readings().len(), 3);
}

#[tokio::test]
async fn an_unreadable_registry_means_retry_not_refusal() {
    let ingest = refusing(&[
        ("tag-0001", "acme"),
        ("tag-0002", "acme"),
        ("tag-0003", "acme"),
    ]);
    ingest.directory.set_unavailable(true);
    let mut failures = invoke(&ingest, "valid-batch.json").await;
    failures.sort();
    assert_eq!(failures, [message_id(1), message_id(2), message_id(3)]);
    assert!(ingest.store.readings().is_empty());
    assert!(ingest.dead_letters.letters().is_empty());
}

#[tokio::test]
async fn a_stack_that_admits_unregistered_tags_stores_them_for_nobody() {
    let ingest = ingest().with_directory(
        MemoryDirectory::with(&[("tag-0002", "acme")]),
        UnregisteredDevices::Admit,
    );
    assert!(invoke(&ingest, "valid-batch.json").await.is_empty());
    let owners: Vec<_> = ingest
        .store
        .readings()
        .into_iter()
        .map(|r| r.owner)
        .collect();
    assert_eq!(owners, [None, Some("acme".to_owned()), None]);
}

#[tokio::test]
async fn an_unreadable_registry_means_retry_when_admitting_too() {
    // Stored without its owner, a reading would be lost to its customer.
    let ingest = ingest().with_directory(MemoryDirectory::default(), UnregisteredDevices::Admit);
    ingest.directory.set_unavailable(true);
    assert_eq!(invoke(&ingest, "valid-batch.json").await.len(), 3);
    assert!(ingest.store.readings().is_empty());
}
