//! The DynamoDB stream event source, as Lambda plays it
//! (<https://docs.aws.amazon.com/lambda/latest/dg/with-ddb.html>):
//!
//! - one worker per shard, reading in order from `StartingPosition`. With
//!   `ParallelizationFactor` 1 a shard's batches are invoked one after
//!   another; with N, records are dealt to N lanes by item (partition and
//!   sort key), and the lanes' batches run at once: order holds per item
//!   only, as Lambda promises, so one device's readings (each its own item)
//!   can be in two batches in flight together;
//! - a shard split, where [`PumpOptions::split_shards_after`] asks for one
//!   (moto never splits): the parent is read to its end and its records
//!   processed first, then the rest of its records go to two children by
//!   item, each numbered in a sequence of its own that does not compare
//!   with the other's or the parent's, the children processed concurrently;
//! - up to `BatchSize` records per invocation, gathered for at most
//!   `MaximumBatchingWindowInSeconds`; records that no `FilterCriteria`
//!   pattern admits are dropped before batching, as Lambda drops them;
//! - a function error retries the batch (after a short backoff), split in two
//!   first when `BisectBatchOnFunctionError` is set, until
//!   `MaximumRetryAttempts` is exhausted; then a description of the batch
//!   (not its records) goes to the `OnFailure` destination queue and the
//!   lane moves on;
//! - records older than `MaximumRecordAgeInSeconds` are not invoked (first
//!   time or retry): they are described to the `OnFailure` destination;
//! - with `ReportBatchItemFailures`, the lowest failed sequence number is the
//!   checkpoint: the records before it are done, and the batch is retried from
//!   it; an identifier that is not in the batch fails the whole batch.
//!
//! moto's shard iterators can go stale (after a failed transaction, for one);
//! a worker that gets an error from GetRecords takes a fresh iterator after
//! the last sequence number it read.
//!
//! [`PumpOptions::split_shards_after`]: super::PumpOptions::split_shards_after

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{Gate, IDLE_POLL, PumpStats, filter};
use crate::emulator::{ACCOUNT_ID, REGION};
use crate::invoker::{Invoker, request_id};
use crate::provision::{FunctionSpec, StartingPosition, StreamSource};

/// How often the shard list is read again, for shards opened since.
const SHARD_DISCOVERY: Duration = Duration::from_secs(2);

pub(super) struct StreamPoller {
    pub streams: aws_sdk_dynamodbstreams::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub source: StreamSource,
    pub function: FunctionSpec,
    pub invoker: Invoker,
    pub stats: Arc<PumpStats>,
    /// Plays a split of each shard after this many of its records.
    pub split_after: Option<usize>,
    /// A stepped run's gate (see [`super::Pump::play_step`]).
    pub gate: Option<Gate>,
}

/// Where a record is processed: the shard (or, after a split, which child)
/// and the lane of its item within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct LaneId {
    child: Option<u8>,
    lane: usize,
}

/// Records of one lane waiting to be invoked, and since when.
struct Lane {
    pending: Vec<Value>,
    since: tokio::time::Instant,
}

/// A stable hash of a record's item key (FNV-1a over its `Keys` JSON, whose
/// object keys serde_json keeps sorted).
fn item_hash(record: &Value) -> u64 {
    record["dynamodb"]["Keys"]
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// The sequence number a child shard gives its `number`-th record: each
/// child counts in a range of its own, so that numbers of different shards
/// do not compare (child 1's are all below child 0's).
fn child_sequence(child: u8, number: u64) -> String {
    format!("{}{number:020}", 2 - u64::from(child))
}

impl StreamPoller {
    pub(super) async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let poller = Arc::new(self);
        let mut workers = JoinSet::new();
        let mut started: HashMap<String, ()> = HashMap::new();
        let mut listed = false;
        loop {
            match poller.shards().await {
                Ok(shards) => {
                    for shard in shards {
                        if started.insert(shard.clone(), ()).is_none() {
                            // Each new shard is busy until read to its end
                            // once (the worker clears it), counted before the
                            // stream's own mark below is taken off.
                            poller.stats.busy_streams.fetch_add(1, Ordering::SeqCst);
                            workers
                                .spawn(Arc::clone(&poller).shard_worker(shard, shutdown.clone()));
                        }
                    }
                    if !listed {
                        listed = true;
                        poller.stats.busy_streams.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                Err(error) => {
                    tracing::warn!(stream = %poller.source.stream_arn, error = %format!("{error:#}"), "describing the stream failed");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(SHARD_DISCOVERY) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
        }
        while workers.join_next().await.is_some() {}
    }

    async fn shards(&self) -> Result<Vec<String>> {
        let description = self
            .streams
            .describe_stream()
            .stream_arn(&self.source.stream_arn)
            .send()
            .await?
            .stream_description
            .ok_or_else(|| anyhow!("no stream description"))?;
        Ok(description
            .shards
            .unwrap_or_default()
            .into_iter()
            .filter_map(|shard| shard.shard_id)
            .collect())
    }

    async fn iterator(&self, shard: &str, after: Option<&str>) -> Result<Option<String>> {
        let mut request = self
            .streams
            .get_shard_iterator()
            .stream_arn(&self.source.stream_arn)
            .shard_id(shard);
        request = match (after, self.source.starting_position) {
            (Some(sequence), _) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(sequence),
            (None, StartingPosition::TrimHorizon) => {
                request.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            (None, StartingPosition::Latest) => {
                request.shard_iterator_type(ShardIteratorType::Latest)
            }
        };
        Ok(request.send().await?.shard_iterator)
    }

    async fn shard_worker(self: Arc<Self>, shard: String, mut shutdown: watch::Receiver<bool>) {
        // Counted busy by the poller when it spawned this worker.
        let mut busy = true;
        let mut set_busy = |now: bool, stats: &PumpStats| {
            if now != busy {
                if now {
                    stats.busy_streams.fetch_add(1, Ordering::SeqCst);
                } else {
                    stats.busy_streams.fetch_sub(1, Ordering::SeqCst);
                }
                busy = now;
            }
        };
        let mut last_read: Option<String> = None;
        let mut iterator = None;
        let window = Duration::from_secs(self.source.batching_window_secs);
        let factor = self.source.parallelization_factor.max(1);
        let mut lanes: BTreeMap<LaneId, Lane> = BTreeMap::new();
        let mut records_read = 0usize;
        let mut split = false;
        let mut child_counts = [0u64; 2];
        let mut gate = self.gate.clone();
        let poller = format!("{}/{shard}", self.source.stream_arn);
        // The step being played, in a stepped run.
        let mut step: Option<u64> = None;
        loop {
            let nothing_pending = lanes.values().all(|lane| lane.pending.is_empty());
            if *shutdown.borrow() && nothing_pending {
                break;
            }
            if let Some(gate) = gate.as_mut()
                && step.is_none()
            {
                set_busy(false, &self.stats);
                step = gate.next_step(&poller, &mut shutdown).await;
                if step.is_none() {
                    break;
                }
                set_busy(true, &self.stats);
            }
            if iterator.is_none() {
                match self.iterator(&shard, last_read.as_deref()).await {
                    Ok(Some(fresh)) => iterator = Some(fresh),
                    Ok(None) => break, // a closed shard, read to its end
                    Err(error) => {
                        tracing::warn!(%shard, error = %format!("{error:#}"), "no shard iterator");
                        tokio::time::sleep(IDLE_POLL * 4).await;
                        continue;
                    }
                }
            }
            let fullest = lanes.values().map(|lane| lane.pending.len()).max();
            let want = (self.source.batch_size - fullest.unwrap_or(0)).clamp(1, 1000) as i32;
            let read = self
                .streams
                .get_records()
                .shard_iterator(iterator.clone().unwrap_or_default())
                .limit(want)
                .send()
                .await;
            let records = match read {
                Ok(output) => {
                    iterator = output.next_shard_iterator;
                    output.records.unwrap_or_default()
                }
                Err(error) => {
                    tracing::debug!(%shard, error = %aws_sdk_dynamodbstreams::error::DisplayErrorContext(&error), "GetRecords failed; taking a fresh iterator");
                    iterator = None;
                    tokio::time::sleep(IDLE_POLL).await;
                    continue;
                }
            };
            let got_some = !records.is_empty();
            for record in &records {
                if let Some(sequence) = record
                    .dynamodb()
                    .and_then(|change| change.sequence_number())
                {
                    last_read = Some(sequence.to_owned());
                }
                if !split && self.split_after.is_some_and(|after| records_read >= after) {
                    // The parent is read to its end, and all of it
                    // processed, before either child starts.
                    split = true;
                    set_busy(true, &self.stats);
                    while lanes.values().any(|lane| !lane.pending.is_empty()) {
                        self.dispatch(&shard, &mut lanes).await;
                    }
                    tracing::info!(%shard, records_read, "the shard splits in two");
                }
                records_read += 1;
                let mut json = record_json(record, &self.source.stream_arn);
                if !filter::admits(&self.source.filters, &json) {
                    self.stats
                        .records_filtered_out
                        .fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let hash = item_hash(&json);
                let child = split.then_some(((hash >> 32) % 2) as u8);
                if let Some(child) = child {
                    child_counts[child as usize] += 1;
                    json["dynamodb"]["SequenceNumber"] =
                        json!(child_sequence(child, child_counts[child as usize]));
                }
                let id = LaneId {
                    child,
                    lane: (hash % factor as u64) as usize,
                };
                let lane = lanes.entry(id).or_insert_with(|| Lane {
                    pending: Vec::new(),
                    since: tokio::time::Instant::now(),
                });
                if lane.pending.is_empty() {
                    lane.since = tokio::time::Instant::now();
                }
                lane.pending.push(json);
            }
            // A stepped run's batch ends when it is full or the shard has no
            // more, never on the clock.
            let window_closed = |lane: &Lane| match step {
                Some(_) => !got_some,
                None => window.is_zero() || lane.since.elapsed() >= window,
            };
            let ready = lanes.values().any(|lane| {
                !lane.pending.is_empty()
                    && (lane.pending.len() >= self.source.batch_size
                        || window_closed(lane)
                        || *shutdown.borrow())
            });
            if ready {
                set_busy(true, &self.stats);
                self.dispatch(&shard, &mut lanes).await;
                continue;
            }
            let nothing_pending = lanes.values().all(|lane| lane.pending.is_empty());
            if !got_some
                && nothing_pending
                && let (Some(gate), Some(done)) = (&gate, step.take())
            {
                gate.finish(&poller, done);
                continue;
            }
            if !got_some {
                // Caught up with the shard: nothing read, nothing held back.
                set_busy(!nothing_pending, &self.stats);
                tokio::time::sleep(IDLE_POLL).await;
            } else {
                set_busy(true, &self.stats);
            }
            if iterator.is_none() && nothing_pending {
                break;
            }
        }
        set_busy(false, &self.stats);
    }

    /// Invokes one batch of every lane that holds records, all at once, and
    /// waits for them: lanes are concurrent, each lane's batches in order.
    async fn dispatch(&self, shard: &str, lanes: &mut BTreeMap<LaneId, Lane>) {
        let mut batches = Vec::new();
        for (id, lane) in lanes.iter_mut() {
            if lane.pending.is_empty() {
                continue;
            }
            let take = lane.pending.len().min(self.source.batch_size);
            let fit =
                super::records_that_fit(lane.pending[..take].iter().map(|r| r.to_string().len()));
            let rest = lane.pending.split_off(fit);
            let batch = std::mem::replace(&mut lane.pending, rest);
            let label = match id.child {
                None => shard.to_owned(),
                Some(child) => format!("{shard}-child-{child}"),
            };
            batches.push((label, batch));
        }
        futures::future::join_all(
            batches
                .iter()
                .map(|(label, batch)| self.process(label, batch.clone())),
        )
        .await;
    }

    /// Invokes the function on `batch` until it succeeds or is given up on.
    async fn process(&self, shard: &str, batch: Vec<Value>) {
        let mut work: VecDeque<(Vec<Value>, u32)> = VecDeque::from([(batch, 0)]);
        while let Some((records, attempts)) = work.pop_front() {
            let records = self.without_expired(shard, records, attempts).await;
            if records.is_empty() {
                continue;
            }
            self.stats.invocations.fetch_add(1, Ordering::Relaxed);
            self.stats
                .records_delivered
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            let outcome = self
                .invoker
                .invoke(&self.function, json!({ "Records": records }))
                .await;
            let retry_from = match outcome {
                Ok(response) if self.source.report_batch_item_failures => {
                    match checkpoint(&response, &records) {
                        Ok(None) => None,
                        Ok(Some(index)) => {
                            self.stats
                                .batch_item_failures
                                .fetch_add(1, Ordering::Relaxed);
                            Some((index, false))
                        }
                        Err(()) => {
                            self.stats.function_errors.fetch_add(1, Ordering::Relaxed);
                            Some((0, true))
                        }
                    }
                }
                Ok(_) => None,
                Err(error) => {
                    self.stats.function_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(function = %self.function.logical_id, %shard, error = %format!("{error:#}"), "function error on a stream batch");
                    Some((0, true))
                }
            };
            let Some((from, function_error)) = retry_from else {
                continue;
            };
            let remaining: Vec<Value> = records[from..].to_vec();
            let attempts = attempts + 1;
            if self
                .source
                .maximum_retry_attempts
                .is_some_and(|limit| attempts > limit)
            {
                self.give_up(shard, &remaining, attempts, "RetryAttemptsExhausted")
                    .await;
                continue;
            }
            tokio::time::sleep(Duration::from_millis(50 * 2u64.pow(attempts.min(5)))).await;
            if function_error && self.source.bisect_on_error && remaining.len() > 1 {
                let (first, second) = remaining.split_at(remaining.len() / 2);
                work.push_front((second.to_vec(), attempts));
                work.push_front((first.to_vec(), attempts));
            } else {
                work.push_front((remaining, attempts));
            }
        }
    }

    /// `records` without those older than `MaximumRecordAgeInSeconds`, which
    /// are described to the on-failure destination instead of invoked.
    async fn without_expired(&self, shard: &str, records: Vec<Value>, attempts: u32) -> Vec<Value> {
        let Some(maximum_age) = self.source.maximum_record_age_secs else {
            return records;
        };
        let now_secs = geotag::clock::now_ms() as f64 / 1000.0;
        let (expired, live): (Vec<Value>, Vec<Value>) = records
            .into_iter()
            .partition(|record| older_than(record, maximum_age, now_secs));
        if !expired.is_empty() {
            self.stats
                .records_expired
                .fetch_add(expired.len() as u64, Ordering::Relaxed);
            self.give_up(shard, &expired, attempts, "RecordAgeExceeded")
                .await;
        }
        live
    }

    /// Sends the batch's description to the on-failure destination, as Lambda does.
    async fn give_up(&self, shard: &str, records: &[Value], attempts: u32, condition: &str) {
        if condition == "RetryAttemptsExhausted" {
            self.stats
                .records_given_up
                .fetch_add(records.len() as u64, Ordering::Relaxed);
        }
        let sequence = |record: Option<&Value>| {
            record
                .and_then(|r| r["dynamodb"]["SequenceNumber"].as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let arrival = |record: Option<&Value>| {
            record
                .and_then(|r| r["dynamodb"]["ApproximateCreationDateTime"].as_f64())
                .map(|seconds| rfc3339((seconds * 1000.0) as i64))
                .unwrap_or_default()
        };
        let description = json!({
            "requestContext": {
                "requestId": request_id(),
                "functionArn": format!("arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{}", self.function.name),
                "condition": condition,
                "approximateInvokeCount": attempts,
            },
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "version": "1.0",
            "timestamp": rfc3339(geotag::clock::now_ms()),
            "DDBStreamBatchInfo": {
                "shardId": shard,
                "startSequenceNumber": sequence(records.first()),
                "endSequenceNumber": sequence(records.last()),
                "approximateArrivalOfFirstRecord": arrival(records.first()),
                "approximateArrivalOfLastRecord": arrival(records.last()),
                "batchSize": records.len(),
                "streamArn": self.source.stream_arn,
            },
        });
        tracing::warn!(function = %self.function.logical_id, %shard, records = records.len(), condition, "batch sent to the on-failure destination");
        if let Some(queue) = &self.source.on_failure_queue_url
            && let Err(error) = self
                .sqs
                .send_message()
                .queue_url(queue)
                .message_body(description.to_string())
                .send()
                .await
                .context("sending to the on-failure destination")
        {
            tracing::error!(error = %format!("{error:#}"), "the on-failure destination refused the batch description");
        }
    }
}

/// Whether a stream record was created more than `maximum_age_secs` before
/// `now_secs` (a record without a creation time never expires).
fn older_than(record: &Value, maximum_age_secs: u64, now_secs: f64) -> bool {
    record["dynamodb"]["ApproximateCreationDateTime"]
        .as_f64()
        .is_some_and(|created| now_secs - created > maximum_age_secs as f64)
}

/// The index of the lowest-sequence failed record, `Ok(None)` if none failed,
/// `Err` if the response names a record not in the batch.
fn checkpoint(response: &Value, records: &[Value]) -> Result<Option<usize>, ()> {
    let Some(failures) = response.get("batchItemFailures").and_then(Value::as_array) else {
        return Ok(None);
    };
    let mut lowest: Option<usize> = None;
    for failure in failures {
        let id = failure
            .get("itemIdentifier")
            .and_then(Value::as_str)
            .ok_or(())?;
        let index = records
            .iter()
            .position(|record| record["dynamodb"]["SequenceNumber"].as_str() == Some(id))
            .ok_or(())?;
        lowest = Some(lowest.map_or(index, |low| low.min(index)));
    }
    Ok(lowest)
}

/// A stream record as Lambda puts it in an event (DynamoDB JSON images).
pub fn record_json(record: &Record, stream_arn: &str) -> Value {
    let mut change = Map::new();
    if let Some(stream) = record.dynamodb() {
        if let Some(created) = stream.approximate_creation_date_time() {
            change.insert(
                "ApproximateCreationDateTime".into(),
                json!(created.as_secs_f64().floor()),
            );
        }
        for (name, image) in [
            ("Keys", stream.keys()),
            ("NewImage", stream.new_image()),
            ("OldImage", stream.old_image()),
        ] {
            if let Some(image) = image {
                change.insert(name.into(), item_json(image));
            }
        }
        if let Some(sequence) = stream.sequence_number() {
            change.insert("SequenceNumber".into(), json!(sequence));
        }
        if let Some(size) = stream.size_bytes() {
            change.insert("SizeBytes".into(), json!(size));
        }
        if let Some(view) = stream.stream_view_type() {
            change.insert("StreamViewType".into(), json!(view.as_str()));
        }
    }
    json!({
        "eventID": record.event_id().unwrap_or_default(),
        "eventName": record.event_name().map(|name| name.as_str()).unwrap_or_default(),
        "eventVersion": record.event_version().unwrap_or("1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": REGION,
        "eventSourceARN": stream_arn,
        "dynamodb": change,
    })
}

fn item_json(item: &HashMap<String, AttributeValue>) -> Value {
    Value::Object(
        item.iter()
            .map(|(name, value)| (name.clone(), attribute_json(value)))
            .collect(),
    )
}

fn attribute_json(value: &AttributeValue) -> Value {
    use aws_smithy_types::base64::encode;
    match value {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::B(b) => json!({ "B": encode(b.as_ref()) }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        AttributeValue::Null(_) => json!({ "NULL": true }),
        AttributeValue::M(m) => json!({ "M": item_json(m) }),
        AttributeValue::L(l) => json!({ "L": l.iter().map(attribute_json).collect::<Vec<_>>() }),
        AttributeValue::Ss(ss) => json!({ "SS": ss }),
        AttributeValue::Ns(ns) => json!({ "NS": ns }),
        AttributeValue::Bs(bs) => {
            json!({ "BS": bs.iter().map(|b| encode(b.as_ref())).collect::<Vec<_>>() })
        }
        _ => Value::Null,
    }
}

fn rfc3339(ms: i64) -> String {
    let mut text = String::new();
    geotag::reading::write_rfc3339_millis(&mut text, ms);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(sequences: &[&str]) -> Vec<Value> {
        sequences
            .iter()
            .map(|s| json!({"dynamodb": {"SequenceNumber": s}}))
            .collect()
    }

    #[test]
    fn records_expire_past_the_maximum_age_only() {
        let created = |secs: f64| json!({"dynamodb": {"ApproximateCreationDateTime": secs}});
        assert!(!older_than(&created(1_000.0), 60, 1_060.0));
        assert!(older_than(&created(1_000.0), 60, 1_061.0));
        assert!(!older_than(&json!({"dynamodb": {}}), 60, 1e12));
    }

    #[test]
    fn items_keep_their_lane_and_children_number_apart() {
        let record = |sk: &str| json!({"dynamodb": {"Keys": {"device_id": {"S": "tag-1"}, "sk": {"S": sk}}}});
        assert_eq!(item_hash(&record("a")), item_hash(&record("a")));
        // One device's items spread over lanes and children.
        let lanes: std::collections::BTreeSet<u64> = (0..40)
            .map(|i| item_hash(&record(&i.to_string())) % 2)
            .collect();
        let children: std::collections::BTreeSet<u64> = (0..40)
            .map(|i| (item_hash(&record(&i.to_string())) >> 32) % 2)
            .collect();
        assert_eq!((lanes.len(), children.len()), (2, 2));
        // Child 1's later records number below child 0's first.
        assert_eq!(
            geotag::stats::cmp_sequence(&child_sequence(1, 900), &child_sequence(0, 1)),
            std::cmp::Ordering::Less
        );
    }

    #[test]
    fn the_lowest_failure_is_the_checkpoint() {
        let batch = records(&["100", "200", "300"]);
        assert_eq!(checkpoint(&Value::Null, &batch), Ok(None));
        assert_eq!(
            checkpoint(&json!({"batchItemFailures": []}), &batch),
            Ok(None)
        );
        assert_eq!(
            checkpoint(
                &json!({"batchItemFailures": [{"itemIdentifier": "300"}, {"itemIdentifier": "200"}]}),
                &batch
            ),
            Ok(Some(1))
        );
        assert_eq!(
            checkpoint(
                &json!({"batchItemFailures": [{"itemIdentifier": "999"}]}),
                &batch
            ),
            Err(())
        );
        assert_eq!(
            checkpoint(
                &json!({"batchItemFailures": [{"itemIdentifier": null}]}),
                &batch
            ),
            Err(())
        );
    }
}
