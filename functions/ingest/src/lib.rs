//! The ingest handler: an SQS batch of device messages in, readings stored in
//! Telemetry, refused messages in the rejections queue, and a partial batch
//! response naming exactly the records to deliver again.
//!
//! # What happens to a record
//!
//! | the record                                  | Telemetry        | IngestRejections  | response          |
//! |---------------------------------------------|------------------|-------------------|-------------------|
//! | all readings valid, stored                  | readings written | -                 | done              |
//! | not usable at all (bad JSON, no edge envelope) | -             | body + reason now | done              |
//! | from a tag the registry does not know (refused by config) | -  | body + reason now | done              |
//! | a batch with some invalid readings          | valid ones       | body + first reason | done            |
//! | a store failure left a reading unwritten    | the rest         | -                 | **batch item failure** |
//! | the rejection send failed                   | valid ones       | -                 | **batch item failure** |
//! | over its tag's budget for a minute          | -                | IngestQuarantine, body + reason | done |
//! | the quarantine send failed                  | -                | -                 | **batch item failure** |
//!
//! Who sent a record is the tag the edge authenticated (the edge envelope's
//! `thing_name`, see `geotag::decode`), never the body's word: a reading
//! naming another tag is refused as `device_id_mismatch`, and a tag missing
//! from the registry is refused as `unregistered_device` unless the stack
//! admits such tags (`UNREGISTERED_DEVICES`). Every reading stored carries
//! the customer that owned its tag then (see `geotag::tenancy`): what the
//! API shows a customer, and nobody else.
//!
//! A record refused for good goes to the rejections queue at once, with its
//! reason in message attributes, instead of being received five times first.
//! Anything that failed for a reason that may pass (throttling, a 5xx, the
//! clock) is a batch item failure: SQS delivers it again after the visibility
//! timeout, and its redrive policy moves it to the dead-letter queue after
//! `maxReceiveCount` receives. The two are kept apart so that a message in
//! the dead-letter queue means something broke, and refusals (the devices'
//! doing) are a rate. Storage is idempotent (see `geotag::reading`), so
//! writing a record's readings again is harmless, and a record's refusal is
//! only sent once its valid readings are stored, so a retried record is not
//! refused twice.
//!
//! A tag that sends more readings stamped in one minute than its budget
//! (`DEVICE_READINGS_PER_MINUTE`, see `geotag::budget`) has the messages
//! beyond it parked in the quarantine queue, whole and unchanged, with the
//! reason `rate_exceeded`: one tag in a publish loop cannot fill Telemetry,
//! the stream and stats ahead of everybody else. What `geotag redrive` sends
//! back carries the attribute `redriven_from` and is admitted past the budget:
//! the operator has decided. If the count cannot be read, the records of the
//! tags being counted are batch item failures, retried by SQS; the rest of
//! the batch is stored: a budget table in trouble delays the suspects only.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::SqsBatchResponse;
use geotag::budget::{RateLedger, Unlimited};
use geotag::store::{
    DeadLetter, DeadLetterSink, DeviceDirectory, NoRegistry, ReadingStore, UnregisteredDevices,
};
use geotag::{BodyForm, Limits, Reading, Reason, Rejection, decode_message};
use geotag_aws::{DynamoDevices, DynamoRateLedger, DynamoReadingStore, SqsDeadLetters};
use geotag_runtime::emf::{Emitter, Invocation, Metrics};
use geotag_runtime::responses::sqs_batch_response;
use lambda_runtime::{Error, LambdaEvent};

mod config;
mod event;
mod throttle;

pub use config::Config;
pub use event::{IngestEvent, IngestRecord, RecordAttributes, StringAttribute};
pub use throttle::Throttle;
use throttle::{park_floods, send_to_quarantine};

/// Time kept back from the invocation's deadline for answering Lambda.
const DEADLINE_MARGIN: Duration = Duration::from_millis(500);
/// Retry budget when the context carries no deadline (hand-made test contexts).
const DEFAULT_BUDGET: Duration = Duration::from_secs(10);

/// The handler's dependencies.
pub struct Ingest<S, D, R = NoRegistry, L = Unlimited> {
    pub store: S,
    pub dead_letters: D,
    /// Whose each tag is (and, when `unregistered` is `Refuse`, whether it
    /// may be stored at all).
    pub directory: R,
    pub unregistered: UnregisteredDevices,
    pub limits: Limits,
    /// Milliseconds since the epoch; a fixed clock makes tests repeatable.
    pub clock: fn() -> i64,
    /// Where each invocation's metrics go (EMF lines on stdout in Lambda).
    pub metrics: Emitter,
    /// The tags' budget; `None`: every tag may send at any rate.
    pub throttle: Option<Throttle<L, D>>,
}

impl<S: ReadingStore, D: DeadLetterSink> Ingest<S, D> {
    /// Ingest admitting every tag, for nobody; [`Ingest::with_directory`] gives it a registry.
    pub fn new(store: S, dead_letters: D, limits: Limits) -> Self {
        Ingest {
            store,
            dead_letters,
            directory: NoRegistry,
            unregistered: UnregisteredDevices::Admit,
            limits,
            clock: geotag::clock::now_ms,
            metrics: Emitter::for_binary("ingest"),
            throttle: None,
        }
    }
}

impl<S: ReadingStore, D: DeadLetterSink, R: DeviceDirectory> Ingest<S, D, R, Unlimited> {
    /// Parks what a tag sends over `throttle.limit` in `throttle.quarantine`.
    pub fn with_throttle<L2: RateLedger>(self, throttle: Throttle<L2, D>) -> Ingest<S, D, R, L2> {
        Ingest {
            store: self.store,
            dead_letters: self.dead_letters,
            directory: self.directory,
            unregistered: self.unregistered,
            limits: self.limits,
            clock: self.clock,
            metrics: self.metrics,
            throttle: Some(throttle),
        }
    }
}

impl<S: ReadingStore, D: DeadLetterSink, R: DeviceDirectory, L> Ingest<S, D, R, L> {
    pub fn with_metrics(mut self, metrics: Emitter) -> Self {
        self.metrics = metrics;
        self
    }

    /// Checks each tag against `directory`, and does `unregistered` with the
    /// tags it does not know.
    pub fn with_directory<R2: DeviceDirectory>(
        self,
        directory: R2,
        unregistered: UnregisteredDevices,
    ) -> Ingest<S, D, R2, L> {
        Ingest {
            store: self.store,
            dead_letters: self.dead_letters,
            directory,
            unregistered,
            limits: self.limits,
            clock: self.clock,
            metrics: self.metrics,
            throttle: self.throttle,
        }
    }
}

/// Ingest as deployed.
pub type AwsIngest = Ingest<DynamoReadingStore, SqsDeadLetters, DynamoDevices, DynamoRateLedger>;

/// The production wiring: DynamoDB and SQS clients from one SDK configuration.
pub fn on_aws(sdk: &geotag_aws::clients::SdkConfig, config: &Config) -> AwsIngest {
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    Ingest::new(
        DynamoReadingStore::new(
            dynamodb.clone(),
            &config.telemetry_table,
            config.limits.retention_days,
        ),
        SqsDeadLetters::new(sqs.clone(), &config.rejections_queue_url),
        config.limits.clone(),
    )
    .with_throttle(Throttle::new(
        DynamoRateLedger::new(dynamodb.clone(), &config.device_rates_table),
        SqsDeadLetters::new(sqs, &config.quarantine_queue_url),
        config.rate_limit,
    ))
    .with_directory(
        DynamoDevices::new(dynamodb, &config.devices_table),
        config.unregistered,
    )
    .with_metrics(Emitter::new(config.metrics.clone()))
}

/// What one invocation did; logged as one line, and asserted on by tests.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// Message ids to report as batch item failures.
    pub failures: Vec<String>,
    /// Records whose every reading is stored (or dead-lettered) for good.
    pub records_done: usize,
    /// Distinct readings written.
    pub readings_stored: usize,
    /// Readings that appeared more than once in this batch (written once).
    pub duplicates_in_batch: usize,
    /// Refusals by reason: readings, or whole messages where nothing was usable.
    pub rejected: BTreeMap<Reason, usize>,
    /// Messages sent to the dead-letter queue.
    pub dead_lettered: usize,
    /// Messages parked in the quarantine queue, over their tag's budget, and
    /// the readings they hold.
    pub quarantined: usize,
    pub readings_quarantined: usize,
    /// Tag-minutes counted against the budget (one UpdateItem each), and
    /// those whose count could not be read (their records retried).
    pub rate_checks: usize,
    pub rate_checks_failed: usize,
    /// Messages that arrived wrapped in the SNS envelope.
    pub enveloped: usize,
    pub write_requests: u32,
    pub write_retries: u32,
    /// Write units the stored readings cost.
    pub write_units: u64,
}

/// The Lambda entry point.
pub async fn handle<S: ReadingStore, D: DeadLetterSink, R: DeviceDirectory, L: RateLedger>(
    ingest: &Ingest<S, D, R, L>,
    event: LambdaEvent<IngestEvent>,
) -> Result<SqsBatchResponse, Error> {
    let records = &event.payload.records;
    let invocation = Invocation::start(&ingest.metrics, &event.context.request_id, records.len());
    let deadline = deadline_of(event.context.deadline);
    let outcome = process(ingest, records, deadline).await?;
    invocation.finish(|metrics| count_outcome(metrics, &outcome));
    tracing::info!(
        request_id = %event.context.request_id,
        records = records.len(),
        records_done = outcome.records_done,
        batch_item_failures = outcome.failures.len(),
        readings_stored = outcome.readings_stored,
        duplicates_in_batch = outcome.duplicates_in_batch,
        rejected = outcome.rejected.values().sum::<usize>(),
        dead_lettered = outcome.dead_lettered,
        quarantined = outcome.quarantined,
        rate_checks = outcome.rate_checks,
        write_requests = outcome.write_requests,
        write_retries = outcome.write_retries,
        "batch processed"
    );
    Ok(sqs_batch_response(outcome.failures))
}

/// The invocation's own metrics: what was stored, refused (by reason) and
/// retried, and what it cost.
fn count_outcome(metrics: &mut Metrics, outcome: &Outcome) {
    metrics
        .count("ReadingsStored", outcome.readings_stored)
        .count("DuplicatesInBatch", outcome.duplicates_in_batch)
        .count("ReadingsRejected", outcome.rejected.values().sum())
        .count("MessagesRejected", outcome.dead_lettered)
        .count("MessagesQuarantined", outcome.quarantined)
        .count("ReadingsQuarantined", outcome.readings_quarantined)
        .count("RateChecks", outcome.rate_checks)
        .count("RateChecksFailed", outcome.rate_checks_failed)
        .count("BatchItemFailures", outcome.failures.len())
        .count("WriteRequests", outcome.write_requests as usize)
        .count("WriteRetries", outcome.write_retries as usize)
        .count("WriteUnits", outcome.write_units as usize);
    for (reason, count) in &outcome.rejected {
        metrics.count_by("Reason", reason.code(), "ReadingsRejected", *count);
    }
}

/// Converts the context's deadline (epoch ms; 0 when unknown) to an Instant.
fn deadline_of(deadline_epoch_ms: u64) -> Instant {
    let now = Instant::now();
    if deadline_epoch_ms == 0 {
        return now + DEFAULT_BUDGET;
    }
    let now_ms = u64::try_from(geotag::clock::now_ms()).unwrap_or(0);
    let left = Duration::from_millis(deadline_epoch_ms.saturating_sub(now_ms));
    now + left.saturating_sub(DEADLINE_MARGIN)
}

/// One record's fate while the batch is processed.
struct RecordState {
    message_id: String,
    /// The tag the edge authenticated, once the body named one.
    thing_name: Option<String>,
    rejection: Option<Rejection>,
    rejected_readings: usize,
    /// The refusals' reasons, each with the readings it refused; counted
    /// when the batch is done, unless the record is parked (a redrive counts
    /// them then).
    reasons: Vec<(Reason, usize)>,
    readings: usize,
    store_failed: bool,
    /// Why the record is parked in the quarantine queue, with how many of
    /// its readings were valid, if it is.
    parked: Option<(Rejection, usize)>,
}

/// Processes the records of one batch; `Err` only when the batch cannot be
/// answered record by record (a record without a message id).
pub async fn process<S: ReadingStore, D: DeadLetterSink, R: DeviceDirectory, L: RateLedger>(
    ingest: &Ingest<S, D, R, L>,
    records: &[IngestRecord],
    deadline: Instant,
) -> Result<Outcome, Error> {
    let mut outcome = Outcome::default();
    let mut batch = decode_batch(ingest, records, &mut outcome)?;
    resolve_owners(ingest, &mut batch).await;
    park_floods(ingest, records, &mut batch, &mut outcome).await;
    store_readings(ingest, &mut batch, deadline, &mut outcome).await;
    let mut unsent = dead_letter_refusals(ingest, records, &batch.states, &mut outcome).await;
    unsent.extend(send_to_quarantine(ingest, records, &batch.states, &mut outcome).await);
    for state in &batch.states {
        if state.parked.is_none() {
            for &(reason, readings) in &state.reasons {
                *outcome.rejected.entry(reason).or_default() += readings;
            }
        }
        if state.store_failed || unsent.contains(&state.message_id) {
            outcome.failures.push(state.message_id.clone());
        } else {
            outcome.records_done += 1;
        }
    }
    Ok(outcome)
}

/// A batch decoded: each record's state, and every valid reading with the
/// record it came from.
struct DecodedBatch {
    states: Vec<RecordState>,
    readings: Vec<Reading>,
    record_of: Vec<usize>,
}

fn decode_batch<S, D, R, L>(
    ingest: &Ingest<S, D, R, L>,
    records: &[IngestRecord],
    outcome: &mut Outcome,
) -> Result<DecodedBatch, Error> {
    let now_ms = (ingest.clock)();
    let mut batch = DecodedBatch {
        states: Vec::with_capacity(records.len()),
        readings: Vec::with_capacity(records.len()),
        record_of: Vec::with_capacity(records.len()),
    };
    for (record_index, record) in records.iter().enumerate() {
        let Some(message_id) = record.message_id.clone().filter(|id| !id.is_empty()) else {
            // Lambda treats an answer it cannot match as a failure of the whole
            // batch; say so plainly rather than drop the record.
            return Err("an SQS record without a messageId cannot be acknowledged alone".into());
        };
        let mut state = RecordState {
            message_id,
            thing_name: None,
            rejection: None,
            rejected_readings: 0,
            reasons: Vec::new(),
            readings: 0,
            store_failed: false,
            parked: None,
        };
        let decoded = match record.body.as_deref() {
            None => Err(Rejection::new(
                Reason::BodyMissing,
                "$",
                "the SQS record has no body",
            )),
            Some(body) => decode_message(body, &ingest.limits, now_ms),
        };
        match decoded {
            Err(rejection) => {
                log_rejection(&state.message_id, &rejection);
                state.reasons.push((rejection.reason, 1));
                state.rejection = Some(rejection);
            }
            Ok(decoded) => {
                if decoded.form == BodyForm::SnsEnvelope {
                    outcome.enveloped += 1;
                }
                for rejection in &decoded.rejected {
                    log_rejection(&state.message_id, rejection);
                    state.reasons.push((rejection.reason, 1));
                }
                state.thing_name = Some(decoded.identity.thing_name);
                state.rejected_readings = decoded.rejected.len();
                state.rejection = decoded.rejected.into_iter().next();
                state.readings = decoded.readings.len();
                batch
                    .record_of
                    .extend(std::iter::repeat_n(record_index, decoded.readings.len()));
                batch.readings.extend(decoded.readings);
            }
        }
        batch.states.push(state);
    }
    Ok(batch)
}

/// Stamps every reading with its tag's owner, as the registry says now, and
/// takes out the readings of tags it does not know, refusing their records
/// as `unregistered_device`, when the stack refuses such tags. If the
/// registry cannot be read, the records wait for a retry instead: a reading
/// stored without its owner would be lost to its customer.
async fn resolve_owners<S, D, R: DeviceDirectory, L>(
    ingest: &Ingest<S, D, R, L>,
    batch: &mut DecodedBatch,
) {
    let mut devices: Vec<String> = batch
        .readings
        .iter()
        .map(|reading| reading.device_id.clone())
        .collect();
    devices.sort_unstable();
    devices.dedup();
    if devices.is_empty() {
        return;
    }
    let owners = match ingest.directory.owners(&devices).await {
        Ok(owners) => Some(owners),
        Err(error) => {
            tracing::warn!(%error, "the registry could not be read; the batch's records will be retried");
            None
        }
    };
    let mut keep = vec![true; batch.states.len()];
    for (index, state) in batch.states.iter_mut().enumerate() {
        if state.readings == 0 {
            continue;
        }
        let Some(owners) = &owners else {
            state.store_failed = true;
            keep[index] = false;
            continue;
        };
        let Some(thing) = state.thing_name.as_deref() else {
            continue;
        };
        if ingest.unregistered == UnregisteredDevices::Refuse && !owners.contains_key(thing) {
            let rejection = Rejection::new(
                Reason::UnregisteredDevice,
                "thing_name",
                format!(
                    "{thing:?} is not in the registry (Devices); register it (`geotag device provision`) \
                     and redrive, or deploy with UnregisteredDevices=admit"
                ),
            );
            log_rejection(&state.message_id, &rejection);
            state
                .reasons
                .push((Reason::UnregisteredDevice, state.readings));
            state.rejected_readings += state.readings;
            state.readings = 0;
            state.rejection = Some(rejection);
            keep[index] = false;
        }
    }
    let owner_of = |reading: &Reading| {
        owners
            .as_ref()
            .and_then(|owners| owners.get(&reading.device_id).cloned())
    };
    batch.retain_records(&keep, |reading| reading.owner = owner_of(reading));
}

impl DecodedBatch {
    /// Keeps the readings of the records `keep` says, passing each to `then`.
    fn retain_records(&mut self, keep: &[bool], mut then: impl FnMut(&mut Reading)) {
        let readings = std::mem::take(&mut self.readings);
        let record_of = std::mem::take(&mut self.record_of);
        for (mut reading, record) in readings.into_iter().zip(record_of) {
            if keep[record] {
                then(&mut reading);
                self.readings.push(reading);
                self.record_of.push(record);
            }
        }
    }
}

/// Writes each distinct reading once. BatchWriteItem refuses two writes of
/// one key in a request, and a batch often holds the same reading twice
/// (SNS retries): a failure to write a key fails every record that carried it.
async fn store_readings<S: ReadingStore, D, R, L>(
    ingest: &Ingest<S, D, R, L>,
    batch: &mut DecodedBatch,
    deadline: Instant,
    outcome: &mut Outcome,
) {
    let (unique, slot_of) = deduplicate(std::mem::take(&mut batch.readings));
    outcome.duplicates_in_batch = slot_of.len() - unique.len();
    let report = ingest.store.put_readings(&unique, deadline).await;
    outcome.write_requests = report.requests;
    outcome.write_retries = report.retries;
    outcome.write_units = report.write_units;
    outcome.readings_stored = unique.len() - report.failed.len();
    if report.failed.is_empty() {
        return;
    }
    let failed: HashMap<usize, &geotag::store::StoreError> = report
        .failed
        .iter()
        .map(|(slot, error)| (*slot, error))
        .collect();
    for (slot, &record_index) in slot_of.iter().zip(&batch.record_of) {
        let Some(error) = failed.get(slot) else {
            continue;
        };
        let state = &mut batch.states[record_index];
        if !state.store_failed {
            tracing::warn!(message_id = %state.message_id, error = %error, "readings not stored; the record will be retried");
        }
        state.store_failed = true;
    }
}

/// Sends each refused record (whose valid readings, if any, are stored) to
/// the dead-letter queue with its first reason. Returns the message ids
/// whose letters could not be sent.
async fn dead_letter_refusals<S, D: DeadLetterSink, R, L>(
    ingest: &Ingest<S, D, R, L>,
    records: &[IngestRecord],
    states: &[RecordState],
    outcome: &mut Outcome,
) -> Vec<String> {
    let letters: Vec<DeadLetter> = states
        .iter()
        .enumerate()
        .filter(|(_, state)| !state.store_failed && state.parked.is_none())
        .filter_map(|(record_index, state)| {
            let rejection = state.rejection.clone()?;
            Some(DeadLetter {
                source_message_id: state.message_id.clone(),
                body: records[record_index].body.clone().unwrap_or_default(),
                rejected_readings: state.rejected_readings.max(1),
                stored_readings: state.readings,
                rejection,
            })
        })
        .collect();
    let unsent = if letters.is_empty() {
        Vec::new()
    } else {
        ingest.dead_letters.send(&letters).await
    };
    outcome.dead_lettered = letters.len() - unsent.len();
    unsent
}

/// The distinct readings, in order of first appearance, and for each reading
/// given the index of its copy among them. Readings are the same when their
/// Telemetry keys are: device, time and sequence number.
fn deduplicate(readings: Vec<Reading>) -> (Vec<Reading>, Vec<usize>) {
    let mut slot_of = Vec::with_capacity(readings.len());
    let mut first = vec![false; readings.len()];
    let mut distinct = 0;
    {
        let mut slots: HashMap<(&str, i64, Option<u64>), usize> =
            HashMap::with_capacity(readings.len());
        for (index, reading) in readings.iter().enumerate() {
            let slot = *slots
                .entry((reading.device_id.as_str(), reading.ts_ms, reading.seq))
                .or_insert_with(|| {
                    first[index] = true;
                    distinct += 1;
                    distinct - 1
                });
            slot_of.push(slot);
        }
    }
    let unique = if distinct == readings.len() {
        readings
    } else {
        readings
            .into_iter()
            .zip(first)
            .filter_map(|(reading, first)| first.then_some(reading))
            .collect()
    };
    (unique, slot_of)
}

fn log_rejection(message_id: &str, rejection: &Rejection) {
    tracing::warn!(
        message_id,
        reason = rejection.reason.code(),
        field = %rejection.field,
        detail = %rejection.detail,
        "rejected"
    );
}
