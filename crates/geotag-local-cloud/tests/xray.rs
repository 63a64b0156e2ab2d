//! X-Ray and logs as the functions set them up in Lambda: the ingest handler
//! runs against the emulator under the subscriber `main` installs, with a UDP
//! socket playing the X-Ray daemon. The handler's subsegment must hang under
//! the segment Lambda named in the trace header, each AWS call's under it;
//! the JSON log lines must carry the invocation and, for a refused record,
//! its message id and reason.

use std::io::Write;
use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use geotag_ingest::{IngestEvent, IngestRecord};
use geotag_local_cloud::stack::{LocalStack, Options};
use geotag_runtime::FromEnvironment as _;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;
use tracing::Instrument as _;

const LAMBDA_SEGMENT: &str = "53995c3f42cd8ad8";

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every segment document the "daemon" received, until it has been quiet a while.
fn received_documents(daemon: &UdpSocket) -> Vec<Value> {
    daemon
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut documents = Vec::new();
    let mut buffer = vec![0u8; 65_536];
    while let Ok(length) = daemon.recv(&mut buffer) {
        let datagram = std::str::from_utf8(&buffer[..length]).unwrap();
        let (header, document) = datagram
            .split_once('\n')
            .expect("header line, then document");
        assert_eq!(
            serde_json::from_str::<Value>(header).unwrap(),
            serde_json::json!({"format": "json", "version": 1})
        );
        documents.push(serde_json::from_str(document).unwrap());
    }
    documents
}

#[tokio::test]
async fn the_handler_and_its_aws_calls_are_traced_under_lambdas_segment() {
    // X-Ray trace ids begin with their epoch second, and old ones are refused.
    let trace_root = format!(
        "1-{:08x}-bd862e3fe1be46a994272793",
        time::OffsetDateTime::now_utc().unix_timestamp()
    );
    let daemon = UdpSocket::bind("127.0.0.1:0").unwrap();
    let logs = Logs::default();
    let writer = logs.clone();
    let guard = geotag_runtime::observability::init_with(
        Some(daemon.local_addr().unwrap()),
        true,
        move || writer.clone(),
    );

    let local = LocalStack::start(&Options::default())
        .await
        .expect("the emulator starts");
    let function = local.stack.function("IngestFunction").unwrap();
    let config =
        geotag_ingest::Config::from_lookup(|name| function.environment.get(name).cloned()).unwrap();
    let ingest = geotag_ingest::on_aws(&local.sdk, &config).with_metrics(
        geotag_runtime::emf::Emitter::for_binary("ingest")
            .with_sink(geotag_runtime::emf::Sink::Discard),
    );

    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let event = IngestEvent {
        records: vec![
            IngestRecord {
                message_id: Some("m-good".into()),
                body: Some(geotag::edge_envelope(
                    "tag-0001",
                    geotag::clock::now_ms(),
                    format!(r#"{{"device_id":"tag-0001","ts":"{now}","lat":52.5,"lon":13.4}}"#)
                        .as_bytes(),
                )),
                ..IngestRecord::default()
            },
            IngestRecord {
                message_id: Some("m-bad".into()),
                body: Some("{not json".into()),
                ..IngestRecord::default()
            },
        ],
    };
    let mut context = Context::default();
    context.request_id = "request-7".into();
    context.xray_trace_id = Some(format!(
        "Root={trace_root};Parent={LAMBDA_SEGMENT};Sampled=1"
    ));
    let span = geotag_runtime::observability::invocation_span(
        "ingest",
        &context.request_id,
        context.xray_trace_id.as_deref(),
    );
    let response = geotag_ingest::handle(&ingest, LambdaEvent::new(event, context))
        .instrument(span)
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    drop(ingest);
    drop(local);
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(guard);

    let documents = received_documents(&daemon);
    let handler = documents
        .iter()
        .find(|d| d["name"] == "ingest")
        .unwrap_or_else(|| panic!("no handler subsegment in {documents:#?}"));
    assert_eq!(handler["type"], "subsegment");
    assert_eq!(handler["trace_id"], trace_root);
    assert_eq!(handler["parent_id"], LAMBDA_SEGMENT);
    let calls: Vec<&Value> = documents
        .iter()
        .filter(|d| d["parent_id"] == handler["id"])
        .collect();
    for (service, operation) in [("DynamoDB", "BatchWriteItem"), ("SQS", "SendMessageBatch")] {
        let call = calls
            .iter()
            .find(|d| {
                d["aws"]["operation"] == operation || d["name"] == format!("{service}.{operation}")
            })
            .unwrap_or_else(|| panic!("no {service} {operation} subsegment in {calls:#?}"));
        assert_eq!(call["trace_id"], trace_root);
        assert_eq!(call["namespace"], "aws", "{call:#}");
        assert!(call["end_time"].as_f64() >= call["start_time"].as_f64());
    }

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let rejected = lines
        .iter()
        .find(|line| line["fields"]["message"] == "rejected")
        .unwrap_or_else(|| panic!("no rejection logged in {logs}"));
    assert_eq!(rejected["level"], "WARN");
    assert_eq!(rejected["fields"]["message_id"], "m-bad");
    assert_eq!(rejected["fields"]["reason"], "malformed_json");
    assert_eq!(rejected["span"]["faas.invocation_id"], "request-7");
}
