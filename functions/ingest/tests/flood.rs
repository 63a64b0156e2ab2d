//! One tag cannot delay the fleet: what a tag sends over its budget is
//! parked in the quarantine queue, whole, with its reason; everybody else's
//! readings are stored; nothing is lost. In memory: no AWS, no emulator.

use geotag::Reason;
use geotag::budget::{MemoryRateLedger, RateLimit};
use geotag::clock::MINUTE_MS;
use geotag::store::{MemoryDeadLetters, MemoryReadingStore};
use geotag_ingest::{
    Ingest, IngestEvent, IngestRecord, Outcome, RecordAttributes, StringAttribute, Throttle,
    process,
};

/// 2026-11-20T08:15:00Z; the readings below are taken from 08:00.
const NOW_MS: i64 = 1_795_162_500_000;
const EIGHT_O_CLOCK_MS: i64 = NOW_MS - 15 * MINUTE_MS;

type Throttled =
    Ingest<MemoryReadingStore, MemoryDeadLetters, geotag::store::NoRegistry, MemoryRateLedger>;

fn ingest(readings_per_minute: u64) -> Throttled {
    let mut ingest = Ingest::new(
        MemoryReadingStore::default(),
        MemoryDeadLetters::default(),
        geotag::Limits::default(),
    )
    .with_throttle(Throttle::new(
        MemoryRateLedger::default(),
        MemoryDeadLetters::default(),
        RateLimit {
            readings_per_minute,
        },
    ));
    ingest.clock = || NOW_MS;
    ingest
}

fn quarantine(ingest: &Throttled) -> &MemoryDeadLetters {
    &ingest.throttle.as_ref().expect("throttled").quarantine
}

fn rfc3339(ms: i64) -> String {
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .expect("in range");
    time.format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}

/// A message of one reading from `tag`, taken at `ts_ms`, as the topic rule delivers it.
fn record(id: &str, tag: &str, ts_ms: i64) -> IngestRecord {
    let payload = format!(
        r#"{{"device_id":"{tag}","ts":"{}","lat":52.5,"lon":13.4}}"#,
        rfc3339(ts_ms)
    );
    IngestRecord {
        message_id: Some(id.to_owned()),
        body: Some(geotag::edge_envelope(tag, ts_ms, payload.as_bytes())),
        ..IngestRecord::default()
    }
}

async fn run(ingest: &Throttled, records: &[IngestRecord]) -> Outcome {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    process(ingest, records, deadline).await.expect("answers")
}

/// `count` readings of `tag`, `spacing_ms` apart from `start_ms`, ids `prefix-N`.
fn readings(
    prefix: &str,
    tag: &str,
    start_ms: i64,
    spacing_ms: i64,
    count: usize,
) -> Vec<IngestRecord> {
    (0..count)
        .map(|n| {
            record(
                &format!("{prefix}-{n}"),
                tag,
                start_ms + spacing_ms * n as i64,
            )
        })
        .collect()
}

#[tokio::test]
async fn a_flooding_tag_is_parked_over_its_budget_and_the_others_are_stored() {
    let ingest = ingest(10);
    // 30 readings in one minute from the flood, one each from three others.
    let mut records = readings("flood", "tag-flood", EIGHT_O_CLOCK_MS, 1_000, 30);
    for (n, tag) in ["tag-a", "tag-b", "tag-c"].iter().enumerate() {
        records.insert(
            n * 10,
            record(&format!("ok-{n}"), tag, EIGHT_O_CLOCK_MS + 500),
        );
    }
    let outcome = run(&ingest, &records).await;

    assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    assert_eq!(outcome.records_done, 33);
    assert_eq!(outcome.readings_stored, 10 + 3);
    assert_eq!(outcome.quarantined, 20);
    assert_eq!(outcome.readings_quarantined, 20);
    assert_eq!(outcome.rate_checks, 1, "only the flood's minute is counted");
    assert!(outcome.rejected.is_empty());
    let stored = ingest.store.readings();
    for tag in ["tag-a", "tag-b", "tag-c"] {
        assert_eq!(
            stored.iter().filter(|r| r.device_id == tag).count(),
            1,
            "{tag}"
        );
    }
    // The first ten of the minute are stored, the rest parked unchanged.
    let parked = quarantine(&ingest).letters();
    assert_eq!(parked.len(), 20);
    for (n, letter) in parked.iter().enumerate() {
        let original = records
            .iter()
            .find(|record| record.message_id.as_deref() == Some(&letter.source_message_id))
            .expect("a record of the batch");
        assert_eq!(Some(&letter.body), original.body.as_ref());
        assert_eq!(letter.source_message_id, format!("flood-{}", n + 10));
        assert_eq!(letter.rejection.reason, Reason::RateExceeded);
        assert_eq!(letter.rejection.field, "ts");
        assert!(
            letter.rejection.detail.contains("tag-flood"),
            "{}",
            letter.rejection.detail
        );
        assert_eq!(letter.rejected_readings, 1);
    }
    assert!(
        ingest.dead_letters.letters().is_empty(),
        "parking is not refusing"
    );
}

#[tokio::test]
async fn the_budget_is_shared_across_batches_and_minutes_are_apart() {
    let ingest = ingest(10);
    let first = readings("a", "tag-flood", EIGHT_O_CLOCK_MS, 1_000, 6);
    let second = readings("b", "tag-flood", EIGHT_O_CLOCK_MS + 6_000, 1_000, 6);
    let next_minute = readings("c", "tag-flood", EIGHT_O_CLOCK_MS + MINUTE_MS, 1_000, 6);
    assert_eq!(run(&ingest, &first).await.readings_stored, 6);
    let outcome = run(&ingest, &second).await;
    assert_eq!((outcome.readings_stored, outcome.quarantined), (4, 2));
    let outcome = run(&ingest, &next_minute).await;
    assert_eq!((outcome.readings_stored, outcome.quarantined), (6, 0));
    let ledger = &ingest.throttle.as_ref().unwrap().ledger;
    assert_eq!(ledger.total("tag-flood", EIGHT_O_CLOCK_MS), 12);
}

#[tokio::test]
async fn once_counted_a_tag_alone_in_a_batch_is_counted_too() {
    let ingest = ingest(3);
    let pair = readings("p", "tag-flood", EIGHT_O_CLOCK_MS, 1_000, 2);
    assert_eq!(run(&ingest, &pair).await.readings_stored, 2);
    let mut parked = 0;
    for n in 0..4 {
        let alone = [record(
            &format!("s-{n}"),
            "tag-flood",
            EIGHT_O_CLOCK_MS + 10_000 + n,
        )];
        parked += run(&ingest, &alone).await.quarantined;
    }
    // One more fits the minute's three; the other three are over.
    assert_eq!(parked, 3);
    // Another tag alone in its batches is never counted.
    let other = [record("o", "tag-other", EIGHT_O_CLOCK_MS)];
    assert_eq!(run(&ingest, &other).await.rate_checks, 0);
}

#[tokio::test]
async fn a_day_offline_sent_at_once_is_no_flood() {
    let ingest = ingest(10);
    let day: Vec<String> = (0..1_440)
        .map(|minute| {
            format!(
                r#"{{"ts":"{}","lat":52.5,"lon":13.4}}"#,
                rfc3339(NOW_MS - 24 * 60 * MINUTE_MS + minute * MINUTE_MS)
            )
        })
        .collect();
    let payload = format!(
        r#"{{"device_id":"tag-back","readings":[{}]}}"#,
        day.join(",")
    );
    let backlog = IngestRecord {
        message_id: Some("backlog".into()),
        body: Some(geotag::edge_envelope(
            "tag-back",
            NOW_MS,
            payload.as_bytes(),
        )),
        ..IngestRecord::default()
    };
    let outcome = run(&ingest, &[backlog]).await;
    assert_eq!(outcome.readings_stored, 1_440);
    assert_eq!((outcome.quarantined, outcome.rate_checks), (0, 0));
}

#[tokio::test]
async fn what_an_operator_redrives_is_admitted_past_the_budget() {
    let ingest = ingest(2);
    let mut records = readings("r", "tag-flood", EIGHT_O_CLOCK_MS, 1_000, 5);
    for record in &mut records {
        record.message_attributes = Some(RecordAttributes {
            redriven_from: Some(StringAttribute {
                string_value: Some("geotag-local-ingest-quarantine".into()),
            }),
        });
    }
    let outcome = run(&ingest, &records).await;
    assert_eq!((outcome.readings_stored, outcome.quarantined), (5, 0));
    assert_eq!(outcome.rate_checks, 0, "redriven readings are not counted");
}

#[tokio::test]
async fn the_redrive_mark_survives_the_sqs_event_as_lambda_delivers_it() {
    let event: aws_lambda_events::sqs::SqsEvent = serde_json::from_value(serde_json::json!({
        "Records": [{
            "messageId": "m-1",
            "body": "{}",
            "messageAttributes": {
                "redriven_from": {"stringValue": "geotag-ingest-quarantine", "dataType": "String"}
            }
        }, {
            "messageId": "m-2",
            "body": "{}",
            "messageAttributes": {}
        }]
    }))
    .expect("an SQS event");
    let as_json: IngestEvent =
        serde_json::from_value(serde_json::to_value(&event).unwrap()).expect("parses");
    let converted = IngestEvent::from(event);
    for lean in [as_json, converted] {
        assert!(lean.records[0].redriven());
        assert!(!lean.records[1].redriven());
    }
    assert_eq!(
        geotag_aws::dead_letters::attr::REDRIVEN_FROM,
        "redriven_from",
        "the name IngestRecord parses"
    );
}

#[tokio::test]
async fn an_unreadable_count_retries_the_counted_tags_and_stores_the_rest() {
    let ingest = ingest(2);
    let ledger = &ingest.throttle.as_ref().unwrap().ledger;
    ledger.set_unavailable(true);
    let mut records = readings("u", "tag-flood", EIGHT_O_CLOCK_MS, 1_000, 5);
    records.push(record("calm", "tag-calm", EIGHT_O_CLOCK_MS));
    let outcome = run(&ingest, &records).await;
    assert_eq!((outcome.readings_stored, outcome.quarantined), (1, 0));
    assert_eq!(outcome.rate_checks_failed, 1);
    assert_eq!(outcome.failures, vec!["u-0", "u-1", "u-2", "u-3", "u-4"]);
    // Delivered again once the table answers: held to the budget then.
    ledger.set_unavailable(false);
    let outcome = run(&ingest, &records[..5]).await;
    assert_eq!((outcome.readings_stored, outcome.quarantined), (2, 3));
}

#[tokio::test]
async fn an_unavailable_quarantine_means_retry_of_exactly_the_parked() {
    let ingest = ingest(2);
    quarantine(&ingest).set_unavailable(true);
    let records = readings("q", "tag-flood", EIGHT_O_CLOCK_MS, 1_000, 5);
    let outcome = run(&ingest, &records).await;
    assert_eq!(outcome.readings_stored, 2);
    assert_eq!(outcome.failures, vec!["q-2", "q-3", "q-4"]);
    assert_eq!(outcome.quarantined, 0);
}

#[tokio::test]
async fn a_parked_message_is_not_also_refused_and_its_refusals_wait_for_the_redrive() {
    let ingest = ingest(1);
    let bad_and_good = |id: &str, second: i64| {
        let payload = format!(
            r#"{{"device_id":"tag-flood","readings":[{{"ts":"{}","lat":52.5,"lon":13.4}},{{"ts":"{}","lat":91,"lon":13.4}}]}}"#,
            rfc3339(EIGHT_O_CLOCK_MS + second * 1_000),
            rfc3339(EIGHT_O_CLOCK_MS + second * 1_000 + 1)
        );
        IngestRecord {
            message_id: Some(id.to_owned()),
            body: Some(geotag::edge_envelope(
                "tag-flood",
                NOW_MS,
                payload.as_bytes(),
            )),
            ..IngestRecord::default()
        }
    };
    let outcome = run(&ingest, &[bad_and_good("m-0", 0), bad_and_good("m-1", 1)]).await;
    assert_eq!(outcome.readings_stored, 1);
    assert_eq!(outcome.quarantined, 1);
    // m-0's bad reading is refused; m-1's waits, parked whole with it.
    assert_eq!(outcome.rejected.get(&Reason::OutOfRange), Some(&1));
    let refused = ingest.dead_letters.letters();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].source_message_id, "m-0");
    let parked = quarantine(&ingest).letters();
    assert_eq!(parked[0].source_message_id, "m-1");
    assert_eq!(parked[0].rejected_readings, 2);
}

/// A flood spread over batches of every size, two at a time, out of order
/// (or in order, SNS's late copies minutes behind), with SNS's duplicates
/// and redeliveries of whole batches: no minute
/// stores more than its budget but for the readings admitted before the tag
/// was first counted (batches that counted nothing), and every reading is
/// stored or parked.
#[tokio::test]
async fn once_counted_no_minute_stores_more_than_its_budget_however_it_is_batched() {
    for seed in 0..40 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let ingest = ingest(10);
        // Three minutes of readings shuffled, or ten in order with the
        // copies at the end; some sent twice.
        let count = if seed % 2 == 0 { 300 } else { 1_000 };
        let mut sent = readings("f", "tag-flood", EIGHT_O_CLOCK_MS + 30_000, 600, count);
        let copies: Vec<IngestRecord> = sent
            .iter()
            .filter(|_| rng.f64() < 0.1)
            .map(|record| IngestRecord {
                message_id: Some(format!("{}-copy", record.message_id.as_deref().unwrap())),
                ..record.clone()
            })
            .collect();
        if seed % 2 == 0 {
            sent.extend(copies);
            rng.shuffle(&mut sent);
        } else {
            sent.extend(copies);
        }
        let mut queue: std::collections::VecDeque<IngestRecord> = sent.into();
        let mut uncounted = std::collections::BTreeMap::<i64, usize>::new();
        let minute_of = |record: &IngestRecord| {
            let n: i64 = record.message_id.as_deref().unwrap()[2..]
                .trim_end_matches("-copy")
                .parse()
                .unwrap();
            (EIGHT_O_CLOCK_MS + 30_000 + 600 * n).div_euclid(MINUTE_MS)
        };
        while !queue.is_empty() {
            let mut take = || -> Vec<IngestRecord> {
                let size = rng.usize(1..=6).min(queue.len());
                queue.drain(..size).collect()
            };
            let (first, second) = (take(), take());
            let (a, b) = tokio::join!(run(&ingest, &first), run(&ingest, &second));
            for (batch, outcome) in [(&first, &a), (&second, &b)] {
                if outcome.rate_checks == 0 {
                    for record in batch.iter() {
                        *uncounted.entry(minute_of(record)).or_default() += 1;
                    }
                }
            }
            // Now and then a batch is delivered again whole (a lost answer).
            if rng.f64() < 0.1 {
                queue.extend(first.clone());
            }
            assert!(a.failures.is_empty() && b.failures.is_empty());
        }
        let mut per_minute = std::collections::BTreeMap::<i64, usize>::new();
        for reading in ingest.store.readings() {
            *per_minute
                .entry(reading.ts_ms.div_euclid(MINUTE_MS))
                .or_default() += 1;
        }
        for (minute, stored) in &per_minute {
            let allowed = 10 + uncounted.get(minute).copied().unwrap_or(0);
            assert!(
                *stored <= allowed,
                "seed {seed}: minute {minute} stored {stored}, allowed {allowed}"
            );
        }
        let before_counted: usize = uncounted.values().sum();
        assert!(
            before_counted < 40,
            "seed {seed}: {before_counted} readings went uncounted"
        );
        let stored: std::collections::BTreeSet<i64> =
            ingest.store.readings().iter().map(|r| r.ts_ms).collect();
        let parked: std::collections::BTreeSet<String> = quarantine(&ingest)
            .letters()
            .into_iter()
            .map(|letter| {
                letter
                    .source_message_id
                    .trim_end_matches("-copy")
                    .to_owned()
            })
            .collect();
        for n in 0..count as i64 {
            let ts = EIGHT_O_CLOCK_MS + 30_000 + 600 * n;
            assert!(
                stored.contains(&ts) || parked.contains(&format!("f-{n}")),
                "seed {seed}: reading {n} is neither stored nor parked"
            );
        }
    }
}
