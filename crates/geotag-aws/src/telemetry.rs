//! The Telemetry table: one item per reading, keyed as `geotag::reading`
//! explains, written with BatchWriteItem in chunks of 25, concurrent across
//! devices and in time order within each (see [`write_plan`]). The
//! item's layout lives here alone: [`reading_item`] writes it, and
//! [`reading_from_item`] reads it back, from the SDK and from the table's
//! stream alike.

use std::collections::HashMap;
use std::time::Instant as StdInstant;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use futures::StreamExt;
use geotag::Reading;
use geotag::store::{ReadingStore, StoreError, TelemetryReader, WriteReport};
use tokio::time::Instant;

use crate::item::ItemView;
use crate::retry::{AttemptError, Attempts, Backoff, drive};

/// Attribute names of a Telemetry item.
pub mod attr {
    pub const DEVICE_ID: &str = "device_id";
    pub const SORT_KEY: &str = "sk";
    pub const TS: &str = "ts";
    pub const LAT: &str = "lat";
    pub const LON: &str = "lon";
    pub const ALT: &str = "alt";
    pub const SPEED: &str = "speed";
    pub const HEADING: &str = "heading";
    pub const BATTERY: &str = "battery";
    pub const ACCURACY: &str = "accuracy";
    pub const SEQ: &str = "seq";
    /// When the edge received the reading's message, epoch milliseconds.
    pub const RECEIVED_AT: &str = "received_at";
    /// When ingest wrote it, epoch milliseconds: `stored_at - received_at`
    /// is the reading's time from the edge to the table.
    pub const STORED_AT: &str = "stored_at";
    /// The customer that owned the tag when the reading was stored; absent
    /// for a tag nobody owned.
    pub const CUSTOMER_ID: &str = "customer_id";
    /// TTL attribute, epoch seconds.
    pub const EXPIRES_AT: &str = "expires_at";
}

/// BatchWriteItem's limit of items per request.
pub const MAX_BATCH_WRITE: usize = 25;

/// Writes readings to the Telemetry table.
#[derive(Debug, Clone)]
pub struct DynamoReadingStore {
    client: Client,
    table: String,
    retention_days: u32,
    /// Chunks in flight at once. DynamoDB on-demand absorbs this easily; the
    /// bound keeps one invocation from opening hundreds of connections.
    concurrency: usize,
    backoff: Backoff,
}

impl DynamoReadingStore {
    pub fn new(client: Client, table: impl Into<String>, retention_days: u32) -> Self {
        DynamoReadingStore {
            client,
            table: table.into(),
            retention_days,
            concurrency: 8,
            backoff: Backoff::default(),
        }
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Builds and writes one chunk of readings, given by their indices in
    /// `readings`. Returns the readings not written, the requests sent, and
    /// the write units of the items written.
    async fn write_readings(
        &self,
        readings: &[Reading],
        chunk: &[usize],
        deadline: Instant,
    ) -> (Vec<(usize, StoreError)>, Attempts, u64) {
        let mut failed = Vec::new();
        let mut requests = Vec::with_capacity(chunk.len());
        let mut units = Vec::with_capacity(chunk.len());
        for &index in chunk {
            match write_request(&readings[index], self.retention_days) {
                Ok(request) => {
                    units.push((index, request_write_units(&request)));
                    requests.push((index, request));
                }
                Err(error) => failed.push((index, error)),
            }
        }
        let (mut unwritten, attempts) = self.write_chunk(requests, deadline).await;
        let write_units = units
            .iter()
            .filter(|(index, _)| !unwritten.iter().any(|(failed, _)| failed == index))
            .map(|(_, units)| units)
            .sum();
        failed.append(&mut unwritten);
        (failed, attempts, write_units)
    }

    async fn write_chunk(
        &self,
        chunk: Vec<(usize, WriteRequest)>,
        deadline: Instant,
    ) -> (Vec<(usize, StoreError)>, Attempts) {
        let mut attempts = Attempts::default();
        let outcome = drive(chunk, self.backoff, deadline, &mut attempts, |pending| {
            self.send_once(pending)
        })
        .await;
        let failed = match outcome {
            Ok(()) => Vec::new(),
            Err((pending, error)) => pending
                .into_iter()
                .map(|(index, _)| (index, error.clone()))
                .collect(),
        };
        (failed, attempts)
    }

    /// One BatchWriteItem call; returns the entries DynamoDB left unprocessed.
    async fn send_once(
        &self,
        pending: Vec<(usize, WriteRequest)>,
    ) -> Result<Vec<(usize, WriteRequest)>, (Vec<(usize, WriteRequest)>, AttemptError)> {
        let requests = pending.iter().map(|(_, request)| request.clone()).collect();
        let output = match self
            .client
            .batch_write_item()
            .request_items(&self.table, requests)
            .send()
            .await
        {
            Ok(output) => output,
            Err(error) => return Err((pending, classify(error))),
        };
        let Some(unprocessed) = output
            .unprocessed_items()
            .and_then(|tables| tables.get(&self.table))
            .filter(|requests| !requests.is_empty())
        else {
            return Ok(Vec::new());
        };
        let unprocessed_keys: Vec<_> = unprocessed.iter().filter_map(request_key).collect();
        Ok(pending
            .into_iter()
            .filter(|(_, request)| {
                request_key(request).is_some_and(|key| unprocessed_keys.contains(&key))
            })
            .collect())
    }
}

impl ReadingStore for DynamoReadingStore {
    async fn put_readings(&self, readings: &[Reading], deadline: StdInstant) -> WriteReport {
        let deadline = Instant::from_std(deadline);
        let mut report = WriteReport::default();
        // Items are built a chunk at a time, as each chunk's turn comes: a
        // whole batch of items at once would be the invocation's largest
        // allocation (about a kilobyte a reading).
        // Futures do nothing until polled, so this builds no item yet.
        let chains: Vec<_> = write_plan(readings)
            .into_iter()
            .map(|chain| async move {
                let mut results = Vec::with_capacity(chain.len());
                for chunk in &chain {
                    results.push(self.write_readings(readings, chunk, deadline).await);
                }
                results
            })
            .collect();
        let mut results = futures::stream::iter(chains).buffer_unordered(self.concurrency);
        while let Some(chain) = results.next().await {
            for (failed, attempts, write_units) in chain {
                report.failed.extend(failed);
                report.requests += attempts.requests;
                report.retries += attempts.retries;
                report.write_units += write_units;
            }
        }
        report.failed.sort_by_key(|(index, _)| *index);
        report
    }
}

/// The order in which a batch's readings are written: chunks of at most
/// [`MAX_BATCH_WRITE`] readings (indices into `readings`), grouped into
/// chains whose chunks are written one after another; chains run
/// concurrently. Each device's readings are taken in time order and fill
/// consecutive chunks of one chain, so that they reach the table's stream in
/// time order. Stats takes the stream in batches: a backlog written in any
/// other order would have its later readings in the first batch, move the
/// latest state past the readings of the next, and turn those into late
/// readings the alerts never judge. A batch of many tags with one reading
/// each still packs 25 to a chunk, every chunk a chain of its own.
pub fn write_plan(readings: &[Reading]) -> Vec<Vec<Vec<usize>>> {
    let mut order: Vec<usize> = (0..readings.len()).collect();
    // Stable: readings of one time keep the order they came in.
    order.sort_by(|&a, &b| {
        let (a, b) = (&readings[a], &readings[b]);
        a.device_id.cmp(&b.device_id).then(a.ts_ms.cmp(&b.ts_ms))
    });
    let mut chains: Vec<Vec<Vec<usize>>> = Vec::new();
    for chunk in order.chunks(MAX_BATCH_WRITE) {
        let continues_a_device = chains
            .last()
            .and_then(|chain| chain.last())
            .and_then(|previous| previous.last())
            .is_some_and(|&last| readings[last].device_id == readings[chunk[0]].device_id);
        match chains.last_mut() {
            Some(chain) if continues_a_device => chain.push(chunk.to_vec()),
            _ => chains.push(vec![chunk.to_vec()]),
        }
    }
    chains
}

/// Readings read back from the Telemetry table (stats' buckets). Apart
/// from [`DynamoReadingStore`] because reading needs no retention, which
/// only sets the items' expiry when they are written.
#[derive(Debug, Clone)]
pub struct DynamoTelemetryReader {
    client: Client,
    table: String,
}

impl DynamoTelemetryReader {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoTelemetryReader {
            client,
            table: table.into(),
        }
    }
}

impl TelemetryReader for DynamoTelemetryReader {
    /// One strongly consistent Query on the device's partition between the
    /// sort keys of the two times. Whole items: a projection would cost the
    /// same read units, which count the items' full size.
    async fn readings_between(
        &self,
        device_id: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Reading>, StoreError> {
        let mut low = String::new();
        geotag::reading::write_rfc3339_millis(&mut low, from_ms);
        let mut high = String::new();
        geotag::reading::write_rfc3339_millis(&mut high, to_ms - 1);
        // `~` sorts after the `#sequence` suffix of any key at that millisecond.
        high.push_str("#~");
        let items = crate::batch_get::query_sort_key_range(
            &self.client,
            &self.table,
            device_id,
            &low,
            &high,
        )
        .await?;
        let mut readings = Vec::with_capacity(items.len());
        for item in items {
            match reading_from_item(&item) {
                Some(reading) => readings.push(reading),
                None => tracing::error!(?item, "a Telemetry item that is not a reading"),
            }
        }
        Ok(readings)
    }
}

/// The Telemetry item of a reading, written at `stored_at_ms`: the one place
/// a reading becomes attributes.
pub fn reading_item(
    reading: &Reading,
    retention_days: u32,
    stored_at_ms: i64,
) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::with_capacity(13);
    item.insert(
        attr::DEVICE_ID.into(),
        AttributeValue::S(reading.device_id.clone()),
    );
    item.insert(attr::SORT_KEY.into(), AttributeValue::S(reading.sort_key()));
    item.insert(attr::TS.into(), integer(reading.ts_ms));
    item.insert(attr::LAT.into(), number(reading.lat));
    item.insert(attr::LON.into(), number(reading.lon));
    for (name, value) in [
        (attr::ALT, reading.alt),
        (attr::SPEED, reading.speed),
        (attr::HEADING, reading.heading),
        (attr::BATTERY, reading.battery),
        (attr::ACCURACY, reading.accuracy),
    ] {
        if let Some(value) = value {
            item.insert(name.into(), number(value));
        }
    }
    if let Some(seq) = reading.seq {
        item.insert(attr::SEQ.into(), integer(seq));
    }
    if let Some(received_at) = reading.received_at_ms {
        item.insert(attr::RECEIVED_AT.into(), integer(received_at));
    }
    if let Some(owner) = &reading.owner {
        item.insert(attr::CUSTOMER_ID.into(), AttributeValue::S(owner.clone()));
    }
    item.insert(attr::STORED_AT.into(), integer(stored_at_ms));
    item.insert(
        attr::EXPIRES_AT.into(),
        integer(reading.expires_at(retention_days)),
    );
    item
}

/// Reads a Telemetry item back, from the SDK or from a stream image
/// ([`crate::stream::Image`]); `None` if it is not one.
pub fn reading_from_item(item: &impl ItemView) -> Option<Reading> {
    Some(Reading {
        device_id: item.text(attr::DEVICE_ID)?.to_owned(),
        ts_ms: item.number(attr::TS)?,
        lat: item.number(attr::LAT)?,
        lon: item.number(attr::LON)?,
        alt: item.number(attr::ALT),
        speed: item.number(attr::SPEED),
        heading: item.number(attr::HEADING),
        battery: item.number(attr::BATTERY),
        accuracy: item.number(attr::ACCURACY),
        seq: item.optional_number(attr::SEQ)?,
        received_at_ms: item.optional_number(attr::RECEIVED_AT)?,
        owner: item.optional_text(attr::CUSTOMER_ID)?.map(str::to_owned),
    })
}

impl crate::stream::FromImage for Reading {
    fn from_image(image: &crate::stream::Image) -> Option<Reading> {
        reading_from_item(image)
    }
}

/// The table's stream as stats reads it: each image a reading, or `None`.
pub type TelemetryStreamEvent = crate::stream::StreamEvent<crate::stream::ReadAs<Reading>>;
pub type TelemetryStreamRecord = crate::stream::StreamRecord<crate::stream::ReadAs<Reading>>;

/// What DynamoDB bills a put of the request's item.
fn request_write_units(request: &WriteRequest) -> u64 {
    request.put_request().map_or(0, |put| {
        crate::capacity::write_units(crate::capacity::item_size(put.item()))
    })
}

pub fn write_request(reading: &Reading, retention_days: u32) -> Result<WriteRequest, StoreError> {
    let put = PutRequest::builder()
        .set_item(Some(reading_item(
            reading,
            retention_days,
            geotag::clock::now_ms(),
        )))
        .build()
        .map_err(|err| StoreError::Service {
            code: "BuildError".into(),
            message: err.to_string(),
        })?;
    Ok(WriteRequest::builder().put_request(put).build())
}

fn request_key(request: &WriteRequest) -> Option<(&str, &str)> {
    let item = request.put_request()?.item();
    Some((
        item.get(attr::DEVICE_ID)?.as_s().ok()?,
        item.get(attr::SORT_KEY)?.as_s().ok()?,
    ))
}

/// DynamoDB numbers are decimal strings: the shortest form that reads back
/// as the same f64. `ryu` writes it several times faster than `Display`
/// (number formatting was a tenth of ingest's time); its exponent form
/// (below 1e-5 or from 1e16) is left to `Display`, which writes plain
/// decimals, the form every DynamoDB client reads.
fn number(value: f64) -> AttributeValue {
    // -0.0 would be written "-0"; it is the same position as 0.
    let value = if value == 0.0 { 0.0 } else { value };
    if !value.is_finite() {
        return AttributeValue::N(value.to_string());
    }
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(value);
    if text.contains('e') {
        return AttributeValue::N(value.to_string());
    }
    // ryu writes whole numbers as "35.0"; DynamoDB stores 35 either way.
    AttributeValue::N(text.strip_suffix(".0").unwrap_or(text).to_owned())
}

fn integer(value: impl itoa::Integer) -> AttributeValue {
    AttributeValue::N(itoa::Buffer::new().format(value).to_owned())
}

/// An SDK failure as the domain's error, for callers that retry by the
/// stream or the queue rather than in place.
pub(crate) fn store_error<E>(error: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match classify(error) {
        AttemptError::Transient(error) | AttemptError::Permanent(error) => error,
    }
}

/// Sorts an SDK failure into worth-retrying-now or not.
pub(crate) fn classify<E>(error: SdkError<E, HttpResponse>) -> AttemptError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    const RETRYABLE_CODES: &[&str] = &[
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionInProgressException",
    ];
    let transient = match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            service
                .err()
                .code()
                .is_some_and(|code| RETRYABLE_CODES.contains(&code))
                || error
                    .raw_response()
                    .is_some_and(|raw| raw.status().is_server_error())
        }
        _ => false,
    };
    let store_error = StoreError::Service {
        code: error.code().unwrap_or("SdkError").to_owned(),
        message: aws_sdk_dynamodb::error::DisplayErrorContext(&error).to_string(),
    };
    if transient {
        AttemptError::Transient(store_error)
    } else {
        AttemptError::Permanent(store_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn numbers_read_back_exactly_and_never_in_exponent_form(value in any::<f64>().prop_filter("finite", |v| v.is_finite())) {
            let AttributeValue::N(text) = number(value) else { unreachable!() };
            prop_assert!(!text.contains(['e', 'E']), "{text}");
            prop_assert_eq!(text.parse::<f64>().unwrap(), if value == 0.0 { 0.0 } else { value });
        }
    }

    fn reading_of(device: &str, ts_ms: i64) -> Reading {
        Reading {
            device_id: device.to_owned(),
            ts_ms,
            lat: 0.0,
            lon: 0.0,
            alt: None,
            speed: None,
            heading: None,
            battery: None,
            accuracy: None,
            seq: None,
            received_at_ms: None,
            owner: None,
        }
    }

    #[test]
    fn a_backlog_is_written_in_time_order_one_chunk_after_another() {
        // 1,440 readings of one tag and 60 of single-reading tags, shuffled
        // as an SQS batch of several messages can hold them.
        let mut readings: Vec<Reading> = (0..1_440)
            .map(|minute| reading_of("tag-day", minute * 60_000))
            .collect();
        readings.extend((0..60).map(|tag| reading_of(&format!("tag-{tag:02}"), 5)));
        fastrand::Rng::with_seed(7).shuffle(&mut readings);

        let chains = write_plan(&readings);
        let mut seen: Vec<usize> = chains.iter().flatten().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..readings.len()).collect::<Vec<_>>(),
            "each reading once"
        );
        assert!(
            chains
                .iter()
                .flatten()
                .all(|chunk| chunk.len() <= MAX_BATCH_WRITE)
        );

        let backlog: Vec<&Vec<Vec<usize>>> = chains
            .iter()
            .filter(|chain| {
                chain
                    .iter()
                    .flatten()
                    .any(|&i| readings[i].device_id == "tag-day")
            })
            .collect();
        assert_eq!(backlog.len(), 1, "one chain holds the whole backlog");
        let times: Vec<i64> = backlog[0]
            .iter()
            .flatten()
            .filter(|&&i| readings[i].device_id == "tag-day")
            .map(|&i| readings[i].ts_ms)
            .collect();
        assert_eq!(times, (0..1_440).map(|m| m * 60_000).collect::<Vec<_>>());
        // The single-reading tags still share chunks of 25, not one a request.
        assert_eq!(
            chains.iter().flatten().count(),
            1_500usize.div_ceil(MAX_BATCH_WRITE)
        );
    }

    #[test]
    fn tags_of_one_reading_each_are_written_concurrently() {
        let readings: Vec<Reading> = (0..100)
            .map(|tag| reading_of(&format!("tag-{tag:03}"), 1))
            .collect();
        let chains = write_plan(&readings);
        assert_eq!(chains.len(), 4);
        assert!(
            chains
                .iter()
                .all(|chain| chain.len() == 1 && chain[0].len() == 25)
        );
    }

    #[test]
    fn item_round_trips_and_stays_small() {
        let reading = Reading {
            device_id: "a".repeat(64),
            ts_ms: 1_795_680_000_123,
            lat: -33.868_820_123_456_7,
            lon: 151.209_295_987_654_3,
            alt: Some(-0.0),
            speed: Some(299.999_999_999),
            heading: Some(359.999_999_999),
            battery: Some(99.999_999_999),
            accuracy: Some(99_999.999_999),
            seq: Some(u64::MAX),
            received_at_ms: Some(1_795_680_001_000),
            owner: None,
        };
        let item = reading_item(&reading, 30, 0);
        let back = reading_from_item(&item).expect("a Telemetry item");
        assert_eq!(
            back,
            Reading {
                alt: Some(0.0),
                ..reading
            }
        );
        // DynamoDB's item size: attribute names plus values (numbers count about
        // one byte per two digits; counting a byte per character bounds it).
        let size: usize = item
            .iter()
            .map(|(name, value)| {
                name.len()
                    + match value {
                        AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
                        _ => 0,
                    }
            })
            .sum();
        assert!(size < 400, "{size} bytes");
        assert_eq!(
            item[attr::EXPIRES_AT].as_n().unwrap(),
            &(1_795_680_000 + 30 * 86_400).to_string()
        );
    }
}
