//! The pump's DynamoDB stream and schedule event sources against the emulator.
//! The template gets a probe function (the way a user adds a function) whose
//! body is a closure, so each semantic can be observed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::anyhow;
use aws_sdk_dynamodb::types::AttributeValue;
use futures::FutureExt;
use geotag_local_cloud::invoker::Invoker;
use geotag_local_cloud::project;
use geotag_local_cloud::pump::{Pump, PumpOptions};
use geotag_local_cloud::stack::{LocalStack, Options};
use serde_json::{Value, json};

const PROBE: &str = r#"
  ProbeFailures:
    Type: AWS::SQS::Queue
  StreamProbeFunction:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: probe
    Properties:
      CodeUri: .
      Events:
        Inserts:
          Type: DynamoDB
          Properties:
            Stream: !GetAtt TelemetryTable.StreamArn
            StartingPosition: TRIM_HORIZON
            BatchSize: 8
            BisectBatchOnFunctionError: true
            MaximumRetryAttempts: 3
            FunctionResponseTypes: [ReportBatchItemFailures]
            FilterCriteria:
              Filters:
                - Pattern: '{"eventName": ["INSERT"]}'
            DestinationConfig:
              OnFailure:
                Type: SQS
                Destination: !GetAtt ProbeFailures.Arn
        Tick:
          Type: Schedule
          Properties:
            Schedule: rate(1 minute)
            Input: '{"job": "silence-check"}'
"#;

struct TempTemplate(std::path::PathBuf);

impl Drop for TempTemplate {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn template_with_probe() -> TempTemplate {
    let text = std::fs::read_to_string(project::root().unwrap().join("template.yaml")).unwrap();
    let at = text.find("\nOutputs:").expect("template.yaml has Outputs");
    let path = std::env::temp_dir().join(format!(
        "geotag-probe-{}-{}.yaml",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::write(&path, format!("{}{PROBE}{}", &text[..at], &text[at..])).unwrap();
    TempTemplate(path)
}

/// A local stack of the template with the probe added; the template file
/// lives as long as the guard.
async fn stack_with_probe() -> (TempTemplate, LocalStack) {
    let template = template_with_probe();
    let local = LocalStack::start(&Options {
        template: Some(template.0.clone()),
        ..Options::default()
    })
    .await
    .expect("local stack");
    (template, local)
}

/// What the probe saw: each invocation's records (by sort key) and whether it failed.
#[derive(Default)]
struct Probe {
    stream_batches: Mutex<Vec<(Vec<String>, bool)>>,
    ticks: Mutex<Vec<Value>>,
    partial_failed_once: Mutex<bool>,
}

impl Probe {
    fn invoker(self: &Arc<Self>) -> Invoker {
        let probe = Arc::clone(self);
        Invoker::Closure(Arc::new(move |function, event: Value| {
            let probe = Arc::clone(&probe);
            let binary = function.binary.clone();
            async move {
                if binary != "probe" {
                    // The template's own functions (stats reads the same stream) succeed quietly.
                    return Ok(json!({}));
                }
                if event["detail-type"] == "Scheduled Event" {
                    probe.ticks.lock().unwrap().push(event);
                    return Ok(Value::Null);
                }
                let records = event["Records"].as_array().cloned().unwrap_or_default();
                let keys: Vec<String> = records
                    .iter()
                    .map(|r| {
                        r["dynamodb"]["Keys"]["sk"]["S"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned()
                    })
                    .collect();
                let poisoned = keys.iter().any(|k| k.contains("poison"));
                probe
                    .stream_batches
                    .lock()
                    .unwrap()
                    .push((keys.clone(), poisoned));
                if poisoned {
                    return Err(anyhow!("poison record"));
                }
                // Fails "partial" once, reporting it as a batch item failure.
                let mut failures = Vec::new();
                if let Some(index) = keys.iter().position(|k| k.contains("partial")) {
                    let mut failed_once = probe.partial_failed_once.lock().unwrap();
                    if !*failed_once {
                        *failed_once = true;
                        failures.push(
                            json!({"itemIdentifier": records[index]["dynamodb"]["SequenceNumber"]}),
                        );
                    }
                }
                Ok(json!({ "batchItemFailures": failures }))
            }
            .boxed()
        }))
    }

    /// Sort keys processed by invocations that succeeded, in order, with the
    /// records after a partial failure's checkpoint left out (they are retried).
    fn processed(&self) -> Vec<String> {
        let mut processed = Vec::new();
        let mut partial_seen = false;
        for (keys, failed) in self.stream_batches.lock().unwrap().iter() {
            if *failed {
                continue;
            }
            for key in keys {
                if key.contains("partial") && !partial_seen {
                    partial_seen = true;
                    break;
                }
                processed.push(key.clone());
            }
        }
        processed
    }
}

async fn put(client: &aws_sdk_dynamodb::Client, table: &str, sk: &str, battery: &str) {
    client
        .put_item()
        .table_name(table)
        .item("device_id", AttributeValue::S("tag-1".into()))
        .item("sk", AttributeValue::S(sk.into()))
        .item("battery", AttributeValue::N(battery.into()))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn stream_batches_are_filtered_ordered_bisected_and_given_up_after_retries() {
    let (_template, local) = stack_with_probe().await;
    let table = local.stack.reference("TelemetryTable").unwrap().to_owned();
    let dynamodb = aws_sdk_dynamodb::Client::new(&local.sdk);

    // 20 inserts in key order, one poisoned and one failing once; then 5
    // modifications, which the filter must keep from the function.
    let mut keys = Vec::new();
    for i in 0..20 {
        let key = match i {
            5 => format!("{i:02}-poison"),
            13 => format!("{i:02}-partial"),
            _ => format!("{i:02}"),
        };
        put(&dynamodb, &table, &key, "50").await;
        keys.push(key);
    }
    for key in &keys[..5] {
        put(&dynamodb, &table, key, "40").await;
    }

    let probe = Arc::new(Probe::default());
    let pump = Pump::start_with(
        &local.stack,
        &local.sdk,
        probe.invoker(),
        PumpOptions {
            time_scale: 1.0,
            play_schedules: true,
            ..PumpOptions::default()
        },
    );
    pump.wait_drained(Duration::from_secs(60)).await.unwrap();
    let stats = pump.stats.snapshot();
    pump.stop().await;

    // Every insert but the poison was processed exactly once, in order; no
    // MODIFY reached the function.
    let expected: Vec<String> = keys
        .iter()
        .filter(|k| !k.contains("poison"))
        .cloned()
        .collect();
    assert_eq!(probe.processed(), expected);
    // Two consumers of the stream filter on INSERT: the probe and the stats function.
    assert_eq!(stats["stream records filtered out"], 2 * 5, "{stats:?}");
    // Bisection isolated the poison; after 3 retries it was given up on, alone.
    assert_eq!(stats["stream records given up"], 1, "{stats:?}");
    let batches = probe.stream_batches.lock().unwrap().clone();
    assert!(
        batches
            .iter()
            .any(|(keys, failed)| *failed && keys.len() == 1),
        "{batches:?}"
    );
    // The partial failure was retried from its checkpoint.
    let partial_deliveries = batches
        .iter()
        .filter(|(keys, _)| keys.iter().any(|k| k.contains("partial")))
        .count();
    assert_eq!(partial_deliveries, 2, "{batches:?}");

    let sqs = aws_sdk_sqs::Client::new(&local.sdk);
    let failures = sqs
        .receive_message()
        .queue_url(local.stack.reference("ProbeFailures").unwrap())
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(failures.len(), 1);
    let description: Value = serde_json::from_str(failures[0].body().unwrap()).unwrap();
    assert_eq!(
        description["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(description["DDBStreamBatchInfo"]["batchSize"], 1);
    assert_eq!(
        description["DDBStreamBatchInfo"]["streamArn"],
        local
            .stack
            .attribute("TelemetryTable", "StreamArn")
            .unwrap()
    );
}

#[tokio::test]
async fn rate_schedules_tick_with_their_input_sped_up() {
    let (_template, local) = stack_with_probe().await;
    let probe = Arc::new(Probe::default());
    // rate(1 minute) at 120x: a tick every half second. Only the lower bound
    // of the time is asserted: a busy machine may tick late, never early.
    let started = std::time::Instant::now();
    let pump = Pump::start_with(
        &local.stack,
        &local.sdk,
        probe.invoker(),
        PumpOptions {
            time_scale: 120.0,
            play_schedules: true,
            ..PumpOptions::default()
        },
    );
    while probe.ticks.lock().unwrap().len() < 3 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    pump.stop().await;
    let ticks = probe.ticks.lock().unwrap().clone();
    assert!(ticks.len() >= 3, "{} ticks in {elapsed:?}", ticks.len());
    assert!(
        elapsed >= Duration::from_millis(1_500),
        "3 ticks of a 500 ms rate came in {elapsed:?}"
    );
    assert_eq!(ticks[0]["source"], "aws.events");
    assert_eq!(ticks[0]["detail-type"], "Scheduled Event");
    assert_eq!(ticks[0]["detail"], json!({"job": "silence-check"}));
}

/// A stepped run plays batching exactly: nothing is taken before a step
/// opens; then ingest takes the whole queue in batches of its BatchSize,
/// and only after it the probe takes the whole stream in batches of its
/// BatchSize (8), whatever the clock did meanwhile.
#[tokio::test]
async fn a_stepped_run_takes_each_source_whole_in_full_batches_in_turn() {
    let (_template, local) = stack_with_probe().await;
    let table = local.stack.reference("TelemetryTable").unwrap().to_owned();
    let queue = local.stack.reference("IngestQueue").unwrap().to_owned();
    let dynamodb = aws_sdk_dynamodb::Client::new(&local.sdk);
    let sqs = aws_sdk_sqs::Client::new(&local.sdk);

    // (function, records) of each invocation, in the order they began.
    let seen: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let invoker = {
        let seen = Arc::clone(&seen);
        Invoker::Closure(Arc::new(move |function, event: Value| {
            let seen = Arc::clone(&seen);
            let name = function.logical_id.clone();
            async move {
                let records = event["Records"].as_array().map_or(0, Vec::len);
                seen.lock().unwrap().push((name, records));
                // Slow enough that a free-running poller would batch differently.
                tokio::time::sleep(Duration::from_millis(30)).await;
                Ok(json!({ "batchItemFailures": [] }))
            }
            .boxed()
        }))
    };
    let pump = Pump::start_with(
        &local.stack,
        &local.sdk,
        invoker,
        PumpOptions {
            play_schedules: false,
            stages: vec!["IngestFunction".into(), "StreamProbeFunction".into()],
            ..PumpOptions::default()
        },
    );
    let of = |function: &str| -> Vec<usize> {
        (seen.lock().unwrap().iter())
            .filter(|(name, _)| name == function)
            .map(|(_, records)| *records)
            .collect()
    };
    let ingest_batch = local.stack.functions["IngestFunction"]
        .events
        .iter()
        .find_map(|source| match source {
            geotag_local_cloud::provision::EventSource::Sqs(sqs) => Some(sqs.batch_size),
            _ => None,
        });
    assert_eq!(
        ingest_batch,
        Some(100),
        "the template's IngestBatchSize default"
    );

    for step in 0..2 {
        let messages = [130, 7][step];
        let items = [20, 5][step];
        for i in 0..messages {
            sqs.send_message()
                .queue_url(&queue)
                .message_body(format!("{{\"step\": {step}, \"i\": {i}}}"))
                .send()
                .await
                .unwrap();
        }
        for i in 0..items {
            put(&dynamodb, &table, &format!("{step}-{i:02}"), "50").await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = seen.lock().unwrap().len();
        assert_eq!(
            (of("IngestFunction").len(), of("StreamProbeFunction").len()),
            ([0, 2][step], [0, 3][step]),
            "nothing is taken before its step opens"
        );
        pump.play_step(Duration::from_secs(60)).await.unwrap();
        let invocations: Vec<(String, usize)> = seen.lock().unwrap()[before..].to_vec();
        let (ingest, probe): (Vec<_>, Vec<_>) = invocations
            .iter()
            .filter(|(name, _)| name != "StatsFunction")
            .partition(|(name, _)| name == "IngestFunction");
        let sizes = |batches: Vec<&(String, usize)>| -> Vec<usize> {
            batches.iter().map(|(_, n)| *n).collect()
        };
        assert_eq!(
            sizes(ingest),
            [vec![100, 30], vec![7]][step],
            "{invocations:?}"
        );
        assert_eq!(
            sizes(probe),
            [vec![8, 8, 4], vec![5]][step],
            "{invocations:?}"
        );
        // Every ingest batch began before the first probe batch.
        let first_probe = invocations
            .iter()
            .position(|(name, _)| name == "StreamProbeFunction");
        let last_ingest = invocations
            .iter()
            .rposition(|(name, _)| name == "IngestFunction");
        assert!(last_ingest < first_probe, "{invocations:?}");
    }
    pump.stop().await;
}
