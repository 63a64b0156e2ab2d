//! The local stack's own promises, against the emulator: the pump plays the SQS
//! event source mapping with Lambda's semantics, and the stack follows
//! template.yaml with no code change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::anyhow;
use aws_sdk_sqs::types::QueueAttributeName;
use futures::FutureExt;
use geotag_local_cloud::invoker::Invoker;
use geotag_local_cloud::project;
use geotag_local_cloud::provision::EventSource;
use geotag_local_cloud::pump::{Pump, queue_depth};
use geotag_local_cloud::stack::{LocalStack, Options};
use serde_json::{Value, json};

/// template.yaml with some text replaced, written where the test can point the stack at it.
fn edited_template(replacements: &[(&str, &str)]) -> tempfile_path::TempPath {
    let mut text = std::fs::read_to_string(project::root().unwrap().join("template.yaml")).unwrap();
    for (from, to) in replacements {
        assert!(
            text.contains(from),
            "template.yaml no longer contains {from:?}"
        );
        text = text.replace(from, to);
    }
    tempfile_path::TempPath::with_contents(&text)
}

/// A temporary file, removed on drop (tempfile's job, without the dependency
/// for three lines).
mod tempfile_path {
    use std::path::{Path, PathBuf};

    pub struct TempPath(PathBuf);

    impl TempPath {
        pub fn with_contents(text: &str) -> TempPath {
            let path = std::env::temp_dir().join(format!(
                "geotag-template-{}-{}.yaml",
                std::process::id(),
                fastrand::u64(..)
            ));
            std::fs::write(&path, text).unwrap();
            TempPath(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// The template's stack with a 1 s function timeout and visibility timeout, no
/// batching window and the given redrive limit, so that redelivery takes
/// seconds; every other semantic is the template's own.
async fn quick_stack(max_receive_count: u32) -> (tempfile_path::TempPath, LocalStack) {
    let redrive = format!("maxReceiveCount: {max_receive_count}");
    let template = edited_template(&[
        ("Timeout: 30", "Timeout: 1"),
        ("VisibilityTimeout: 180", "VisibilityTimeout: 1"),
        ("maxReceiveCount: 5", redrive.as_str()),
        (
            "MaximumBatchingWindowInSeconds: 1",
            "MaximumBatchingWindowInSeconds: 0",
        ),
    ]);
    let local = LocalStack::start(&Options {
        template: Some(template.path().to_owned()),
        ..Options::default()
    })
    .await
    .expect("local stack");
    (template, local)
}

/// Records every batch a function receives and fails records whose body says so.
#[derive(Default)]
struct Recorder {
    batches: Mutex<Vec<Vec<String>>>,
}

impl Recorder {
    fn invoker(self: &Arc<Self>) -> Invoker {
        let recorder = Arc::clone(self);
        Invoker::Closure(Arc::new(move |_, event: Value| {
            let recorder = Arc::clone(&recorder);
            async move {
                let records = event["Records"].as_array().cloned().unwrap_or_default();
                let bodies: Vec<String> = records
                    .iter()
                    .map(|r| r["body"].as_str().unwrap_or_default().to_owned())
                    .collect();
                recorder.batches.lock().unwrap().push(bodies.clone());
                if bodies.iter().any(|b| b == "crash") {
                    return Err(anyhow!("the function crashed"));
                }
                let failures: Vec<Value> = records
                    .iter()
                    .filter(|r| r["body"] == "fail")
                    .map(|r| json!({"itemIdentifier": r["messageId"]}))
                    .collect();
                Ok(json!({"batchItemFailures": failures}))
            }
            .boxed()
        }))
    }

    fn deliveries(&self, body: &str) -> usize {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .filter(|b| *b == body)
            .count()
    }

    fn batch_sizes(&self) -> Vec<usize> {
        self.batches.lock().unwrap().iter().map(Vec::len).collect()
    }
}

async fn send(local: &LocalStack, bodies: &[&str]) {
    let sqs = aws_sdk_sqs::Client::new(&local.sdk);
    let queue = local.stack.reference("IngestQueue").unwrap();
    for body in bodies {
        sqs.send_message()
            .queue_url(queue)
            .message_body(*body)
            .send()
            .await
            .unwrap();
    }
}

async fn depth(local: &LocalStack, queue: &str) -> u64 {
    let sqs = aws_sdk_sqs::Client::new(&local.sdk);
    queue_depth(&sqs, local.stack.reference(queue).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_stack_follows_the_template_queue_names_and_batch_size() {
    let template = edited_template(&[(
        "${AWS::StackName}-ingest\n",
        "${AWS::StackName}-renamed-ingest\n",
    )]);
    let local = LocalStack::start(&Options {
        template: Some(template.path().to_owned()),
        parameter_overrides: HashMap::from([("IngestBatchSize".to_owned(), "3".to_owned())]),
        ..Options::default()
    })
    .await
    .expect("local stack");

    assert!(
        local
            .stack
            .reference("IngestQueue")
            .unwrap()
            .ends_with("/geotag-local-renamed-ingest")
    );
    let function = local.stack.function("IngestFunction").unwrap();
    let EventSource::Sqs(source) = &function.events[0] else {
        panic!("IngestFunction is triggered by SQS: {:?}", function.events);
    };
    assert_eq!(source.batch_size, 3);
    assert!(source.queue_url.ends_with("/geotag-local-renamed-ingest"));
    assert!(source.report_batch_item_failures);

    let recorder = Arc::new(Recorder::default());
    let pump = Pump::start(&local.stack, &local.sdk, recorder.invoker());
    let bodies: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    send(
        &local,
        &bodies.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    pump.wait_drained(Duration::from_secs(60)).await.unwrap();
    pump.stop().await;

    let sizes = recorder.batch_sizes();
    assert!(sizes.iter().all(|&n| (1..=3).contains(&n)), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 10);
    for body in &bodies {
        assert_eq!(recorder.deliveries(body), 1, "{body}");
    }
}

#[tokio::test]
async fn failures_are_redelivered_after_the_visibility_timeout_then_dead_lettered() {
    let (_template, local) = quick_stack(3).await;
    let sqs = aws_sdk_sqs::Client::new(&local.sdk);
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(local.stack.reference("IngestQueue").unwrap())
        .attribute_names(QueueAttributeName::VisibilityTimeout)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    assert_eq!(attributes[&QueueAttributeName::VisibilityTimeout], "1");

    let recorder = Arc::new(Recorder::default());
    let pump = Pump::start(&local.stack, &local.sdk, recorder.invoker());

    // A batch item failure: only that record is retried, until the redrive limit.
    send(&local, &["ok-1", "fail", "ok-2"]).await;
    pump.wait_drained(Duration::from_secs(60)).await.unwrap();
    assert_eq!(recorder.deliveries("fail"), 3);
    assert_eq!(recorder.deliveries("ok-1"), 1);
    assert_eq!(recorder.deliveries("ok-2"), 1);
    assert_eq!(depth(&local, "IngestDLQ").await, 1);
    assert!(pump.stats.snapshot()["batch item failures"] >= 3);

    // A function error: nothing in its batch is deleted, so every record of it
    // is retried until the redrive limit; a record in another batch is not.
    send(&local, &["crash", "ok-3"]).await;
    pump.wait_drained(Duration::from_secs(60)).await.unwrap();
    let stats = pump.stats.snapshot();
    pump.stop().await;
    assert_eq!(recorder.deliveries("crash"), 3);
    // Each receive batches what is visible then, so ok-3 may share some of
    // crash's batches and not others: every shared batch fails and is
    // delivered again, the first one without crash is deleted.
    let ok_3 = recorder.deliveries("ok-3");
    let shared_batches = recorder
        .batches
        .lock()
        .unwrap()
        .iter()
        .filter(|batch| batch.contains(&"crash".to_owned()) && batch.contains(&"ok-3".to_owned()))
        .count();
    assert_eq!(ok_3, (shared_batches + 1).min(3), "{shared_batches} shared");
    assert_eq!(depth(&local, "IngestQueue").await, 0);
    assert_eq!(
        depth(&local, "IngestDLQ").await,
        if shared_batches >= 3 { 3 } else { 2 }
    );
    assert!(stats["function errors"] >= 3, "{stats:?}");
}

#[tokio::test]
async fn an_unknown_item_identifier_fails_the_whole_batch() {
    let (_template, local) = quick_stack(2).await;
    let calls = Arc::new(Mutex::new(0));
    let counter = Arc::clone(&calls);
    let invoker = Invoker::Closure(Arc::new(move |_, _| {
        *counter.lock().unwrap() += 1;
        async { Ok(json!({"batchItemFailures": [{"itemIdentifier": "not-in-this-batch"}]})) }
            .boxed()
    }));
    let pump = Pump::start(&local.stack, &local.sdk, invoker);
    send(&local, &["a"]).await;
    pump.wait_drained(Duration::from_secs(60)).await.unwrap();
    let stats = pump.stats.snapshot();
    pump.stop().await;
    assert_eq!(*calls.lock().unwrap(), 2, "delivered until maxReceiveCount");
    assert_eq!(stats["records deleted"], 0);
    assert_eq!(depth(&local, "IngestDLQ").await, 1);
}

#[tokio::test]
async fn the_demo_stores_every_valid_reading_once_and_dead_letters_the_rest() {
    let fleet = geotag_simulation::simulate::FleetConfig {
        devices: 10,
        readings_per_device: 12,
        interval_secs: 60,
        bad_ratio: 0.2,
        dup_ratio: 0.2,
        seed: 7,
        end_ms: geotag::clock::now_ms(),
        readings_per_message: None,
        flood: None,
    };
    // `run` audits Telemetry, DeviceStats, the DLQ and the alerts' inboxes
    // against the plan.
    let summary = geotag_simulation::demo::run(geotag_simulation::demo::DemoOptions {
        stack: Options::default(),
        fleet,
        invoker: None,
        launch: None,
        time_scale: 1.0,
        drain_timeout: Duration::from_secs(120),
        chaos: None,
        device_rows: true,
        output_dir: None,
        via: Default::default(),
        publish_speedup: None,
        stepped: None,
    })
    .await
    .expect("the demo runs");
    assert!(summary.ok, "{summary:?}");
    assert_eq!((summary.lost, summary.double_counted), (0, 0));
    // The functions' EMF lines: valid, from all three, and (checked by `run`
    // as part of `ok`) agreeing with the DLQ, Telemetry and the operator's inbox.
    let metrics = &summary.metrics;
    assert!(metrics.invalid.is_empty(), "{:?}", metrics.invalid);
    // Duplicates in separate batches are written again (idempotently).
    assert!(
        metrics.total("ingest", "ReadingsStored") >= summary.readings_stored as f64,
        "{metrics:?}"
    );
    assert_eq!(
        metrics.total("ingest", "WriteUnits"),
        metrics.total("ingest", "ReadingsStored"),
        "a reading item is under 1 KB"
    );
    let rejected = metrics.by("ingest", "Reason", "ReadingsRejected");
    assert_eq!(
        rejected.values().sum::<f64>(),
        metrics.total("ingest", "ReadingsRejected")
    );
    assert!(rejected.len() > 3, "{rejected:?}");
    assert!(metrics.total("stats", "ItemsWritten") > 0.0);
    assert!(
        !metrics
            .by("alerts", "AlertType", "AlertsPublished")
            .is_empty()
    );

    // Every metric of the geotag namespace the dashboard draws is one the
    // functions report (a renamed metric would leave a graph empty).
    let charted = dashboard_metrics();
    assert!(charted.len() > 10, "{charted:?}");
    for (function, dimension, metric) in charted {
        // Written only when the store fails, which the demo's does not:
        // functions/api/tests/sample_events.rs makes it fail.
        if (function.as_str(), metric.as_str()) == ("api", "RequestsFailed") {
            continue;
        }
        let reported = match &dimension {
            None => metrics
                .totals
                .contains_key(&(function.clone(), metric.clone())),
            Some(dimension) => !metrics.by(&function, dimension, &metric).is_empty(),
        };
        assert!(
            reported,
            "the dashboard charts {function} {metric} (by {dimension:?}), which no function reported"
        );
    }
}

/// The (function, extra dimension, metric) of each `geotag` metric in the
/// template's dashboard, with the function dimension's value as the binary.
fn dashboard_metrics() -> Vec<(String, Option<String>, String)> {
    let root = geotag_local_cloud::project::root().unwrap();
    let template =
        geotag_local_cloud::template::Template::load(&root.join("template.yaml")).unwrap();
    let body = template.resources["Dashboard"].properties["DashboardBody"]["Fn::Sub"]
        .as_str()
        .expect("DashboardBody is a !Sub string")
        .replace("${IngestFunction}", "ingest")
        .replace("${StatsFunction}", "stats")
        .replace("${AlertsFunction}", "alerts")
        .replace("${ApiFunction}", "api");
    let mut substituted = String::new();
    let mut rest = body.as_str();
    while let Some(start) = rest.find("${") {
        substituted.push_str(&rest[..start]);
        substituted.push_str("placeholder");
        rest = &rest[start + rest[start..].find('}').unwrap() + 1..];
    }
    substituted.push_str(rest);
    let dashboard: serde_json::Value = serde_json::from_str(&substituted).unwrap();
    let mut charted = Vec::new();
    for widget in dashboard["widgets"].as_array().unwrap() {
        // CloudWatch's shorthand: "." repeats the field above, "..." all but the last.
        let mut previous: Vec<serde_json::Value> = Vec::new();
        for row in widget["properties"]["metrics"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let row = row.as_array().unwrap();
            if let Some(expression) = row[0]["expression"].as_str() {
                let quoted = |key: &str| {
                    let start = expression.find(&format!("{key}=\"")).unwrap() + key.len() + 2;
                    let value = &expression[start..];
                    value[..value.find('"').unwrap()].to_owned()
                };
                let schema =
                    &expression[expression.find('{').unwrap() + 1..expression.find('}').unwrap()];
                let schema: Vec<&str> = schema.split(',').collect();
                if schema[0] == "geotag" {
                    charted.push((
                        quoted("Function"),
                        schema.get(2).map(|d| (*d).to_owned()),
                        quoted("MetricName"),
                    ));
                }
                continue;
            }
            let fields: Vec<serde_json::Value> = row
                .iter()
                .filter(|field| !field.is_object())
                .cloned()
                .collect();
            let fields: Vec<serde_json::Value> = if fields[0] == "..." {
                let mut full = previous[..previous.len() - 1].to_vec();
                full.extend(fields[1..].iter().cloned());
                full
            } else {
                fields
                    .iter()
                    .enumerate()
                    .map(|(i, field)| {
                        if field == "." {
                            previous[i].clone()
                        } else {
                            field.clone()
                        }
                    })
                    .collect()
            };
            if fields[0] == "geotag" {
                charted.push((
                    fields[3].as_str().unwrap().to_owned(),
                    None,
                    fields[1].as_str().unwrap().to_owned(),
                ));
            }
            previous = fields;
        }
    }
    charted
}

/// The chaos run, small: 2,000 readings through malformed and duplicate
/// messages, 10% of the functions' AWS requests refused, 2% of their writes
/// applied with the answer lost, 1% of invocations dying half-way, and one
/// tag flooding at 20 times its rate against a budget of 5 a minute,
/// audited to nothing lost, nothing counted twice, and the flood held to its
/// budget with the rest parked.
///
/// On a multi-threaded runtime, as `geotag chaos` runs: on one thread the 34
/// tags' event loops, the broker's emulator calls, the pump and the functions
/// take turns, and CI once saw 7 tags' keep-alive pings unanswered for 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chaos_run_loses_nothing_and_counts_nothing_twice() {
    let fleet = geotag_simulation::simulate::FleetConfig {
        devices: 34,
        readings_per_device: 60,
        interval_secs: 60,
        bad_ratio: 0.05,
        dup_ratio: 0.10,
        seed: 11,
        end_ms: geotag::clock::now_ms(),
        readings_per_message: None,
        flood: Some(geotag_simulation::simulate::Flood {
            factor: 20,
            share: 0.1,
        }),
    };
    let summary = geotag_simulation::demo::run(geotag_simulation::demo::DemoOptions {
        stack: Options {
            parameter_overrides: [("DeviceReadingsPerMinute".to_owned(), "5".to_owned())].into(),
            ..Options::default()
        },
        fleet,
        invoker: None,
        launch: None,
        time_scale: 1.0,
        drain_timeout: Duration::from_secs(900),
        chaos: Some(geotag_simulation::demo::Chaos {
            store_fault_rate: 0.10,
            crash_rate: 0.01,
            lost_answer_rate: 0.02,
            seed: 11,
        }),
        device_rows: false,
        output_dir: None,
        via: Default::default(),
        publish_speedup: None,
        stepped: None,
    })
    .await
    .expect("the chaos run runs");
    assert!(summary.faults_injected > 100, "{summary:?}");
    assert!(summary.answers_lost > 10, "{summary:?}");
    let flood = summary.flood.as_ref().expect("the run had a flood");
    assert!(flood.within_budget(), "{flood:?}");
    assert!(flood.parked > 0 && flood.stored > 0, "{flood:?}");
    assert_eq!(flood.budget, 5);
    assert_eq!(
        (summary.lost, summary.double_counted),
        (0, 0),
        "{summary:?}"
    );
    assert!(summary.ok, "{summary:?}");
}
