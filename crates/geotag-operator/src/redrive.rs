//! `geotag redrive`: the messages ingest refused (IngestRejections) and those
//! it failed on five times (IngestDLQ) sent back through ingest after a fix
//! (a tag registered, a bug fixed), crash-safe.
//!
//! Both queues hold the message ingest received, unchanged, so redriving is
//! sending its body to the ingest queue again. Each one is sent first and
//! deleted only once SQS took the copy: a redrive that dies in between leaves
//! the original behind, and the next run sends it again. That is safe
//! because storing is idempotent (a reading's key is derived from the
//! reading) and because a run sends each distinct body once: a message whose
//! body this run already sent is deleted as a duplicate. Messages that are
//! still bad come back, refused by ingest with their reason and the id of the
//! copy that was sent (`source_message_id`): the run recognises those, counts
//! them by reason, and leaves them in the queue.
//!
//! `--quarantine` redrives IngestQuarantine instead: the messages ingest
//! parked because their tag ran over its budget (see `geotag::budget`),
//! once someone has looked at the tag. Every message a redrive sends carries
//! the attribute `redriven_from` (the queue it came from), which ingest
//! admits past the budget: else a quarantine redriven would be parked again,
//! its readings still stamped in the minutes that ran over.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageAttributeValue, SendMessageBatchRequestEntry,
};
use geotag_aws::clients::SdkConfig;
use geotag_aws::dead_letters::attr;
use geotag_local_cloud::provision::Stack;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
pub struct RedriveOptions {
    /// How long to wait, once the source queues are drained, for the ingest
    /// queue to empty, so that the messages still bad are back and counted.
    /// Zero: do not wait.
    pub wait_for_returns: Duration,
    /// How long a received message stays invisible while its batch is sent
    /// and deleted (and a returned one until the run ends): after a crash,
    /// what the run held reappears when this runs out.
    pub hold: Duration,
    /// For tests of crash safety: stop, as a crash would, once this many
    /// batches were sent and before they are deleted.
    pub crash_after_sending: Option<usize>,
}

impl Default for RedriveOptions {
    fn default() -> Self {
        RedriveOptions {
            wait_for_returns: Duration::from_secs(60),
            hold: Duration::from_secs(300),
            crash_after_sending: None,
        }
    }
}

/// What a redrive did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RedriveReport {
    /// Distinct messages sent back to the ingest queue.
    pub redriven: usize,
    /// Messages deleted because a copy of the same body was redriven by this
    /// run (left by an earlier run that died before deleting, or come back).
    pub duplicates: usize,
    /// Redriven messages that came back refused, by reason.
    pub returned: BTreeMap<String, usize>,
    /// Whether the ingest queue emptied within the wait (if not, some
    /// messages may come back after the report).
    pub ingest_drained: bool,
}

pub struct Redrive {
    pub sqs: Client,
    /// The queues redriven, in order: refusals first, then failures (or the quarantine alone).
    pub sources: Vec<String>,
    /// Where ingest sends what comes back refused (IngestRejections).
    pub returns_url: String,
    pub ingest_queue_url: String,
}

/// Which queues a redrive empties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sources {
    /// IngestRejections, then IngestDLQ: after a fix.
    #[default]
    RefusedAndFailed,
    /// IngestQuarantine: messages held back over their tag's budget.
    Quarantine,
}

impl Sources {
    /// The template's logical ids of the queues, in order.
    fn logical_ids(self) -> &'static [&'static str] {
        match self {
            Sources::RefusedAndFailed => &["IngestRejections", "IngestDLQ"],
            Sources::Quarantine => &["IngestQuarantine"],
        }
    }
}

/// The name suffix template.yaml gives each queue after the stack's name.
fn queue_suffix(logical_id: &str) -> &'static str {
    match logical_id {
        "IngestRejections" => "ingest-rejections",
        "IngestDLQ" => "ingest-dlq",
        "IngestQuarantine" => "ingest-quarantine",
        _ => "ingest",
    }
}

/// A message received from one of the sources.
struct Received {
    queue_url: String,
    message: Message,
}

impl Received {
    fn body(&self) -> &str {
        self.message.body().unwrap_or_default()
    }

    fn attribute(&self, name: &str) -> Option<String> {
        self.message
            .message_attributes()
            .and_then(|attributes| attributes.get(name))
            .and_then(|value| value.string_value())
            .map(str::to_owned)
    }
}

/// What one run has sent, and what it holds invisible until it ends.
#[derive(Default)]
struct Run {
    report: RedriveReport,
    sent_ids: HashSet<String>,
    sent_bodies: HashSet<[u8; 32]>,
    /// (queue, receipt handle) of the messages held.
    held: Vec<(String, String)>,
    /// Returned messages counted, by message id: one whose hold ran out
    /// during the run is received again.
    counted_returns: HashSet<String>,
}

impl Run {
    /// Whether `received` is one this run redrove, back with its reason (held).
    fn took_back(&mut self, received: &Received) -> bool {
        let returned = received
            .attribute(attr::SOURCE_MESSAGE_ID)
            .is_some_and(|source| self.sent_ids.contains(&source));
        if returned {
            let first_time = received
                .message
                .message_id()
                .is_none_or(|id| self.counted_returns.insert(id.to_owned()));
            if first_time {
                let reason = received
                    .attribute(attr::REASON)
                    .unwrap_or_else(|| "(none)".into());
                *self.report.returned.entry(reason).or_default() += 1;
            }
            self.hold(received);
        }
        returned
    }

    fn hold(&mut self, received: &Received) {
        if let Some(handle) = received.message.receipt_handle() {
            self.held
                .push((received.queue_url.clone(), handle.to_owned()));
        }
    }
}

/// SQS's limit of messages per receive and of entries per batch request.
const SQS_BATCH: usize = 10;

/// Receipt handles as the batch requests take them: one queue each, at most
/// [`SQS_BATCH`] entries, each with an id unique in its request.
fn batches_by_queue<'a>(
    handles: impl Iterator<Item = (&'a str, &'a str)>,
) -> Vec<(&'a str, Vec<(String, &'a str)>)> {
    let mut grouped: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (queue_url, handle) in handles {
        grouped.entry(queue_url).or_default().push(handle);
    }
    let mut batches = Vec::new();
    for (queue_url, handles) in grouped {
        for chunk in handles.chunks(SQS_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(index, handle)| (index.to_string(), *handle))
                .collect();
            batches.push((queue_url, entries));
        }
    }
    batches
}

fn digest(body: &str) -> [u8; 32] {
    Sha256::digest(body.as_bytes()).into()
}

impl Redrive {
    /// The queues of a local stack.
    pub fn for_local(stack: &Stack, sdk: &SdkConfig, sources: Sources) -> Result<Redrive> {
        let url =
            |logical_id: &str| -> Result<String> { Ok(stack.reference(logical_id)?.to_owned()) };
        Ok(Redrive {
            sqs: Client::new(sdk),
            sources: (sources.logical_ids().iter())
                .map(|id| url(id))
                .collect::<Result<_>>()?,
            returns_url: url("IngestRejections")?,
            ingest_queue_url: url("IngestQueue")?,
        })
    }

    /// The queues of a stack deployed as `stack_name`: template.yaml names
    /// them `<stack>-ingest-rejections`, `<stack>-ingest-dlq`,
    /// `<stack>-ingest-quarantine` and `<stack>-ingest`.
    pub async fn for_deployed(
        sdk: &SdkConfig,
        stack_name: &str,
        sources: Sources,
    ) -> Result<Redrive> {
        let sqs = Client::new(sdk);
        let url = async |logical_id: &str| -> Result<String> {
            let name = format!("{stack_name}-{}", queue_suffix(logical_id));
            sqs.get_queue_url()
                .queue_name(&name)
                .send()
                .await
                .with_context(|| format!("no queue {name}: is the stack deployed?"))?
                .queue_url
                .with_context(|| format!("{name} has no URL"))
        };
        let mut source_urls = Vec::new();
        for logical_id in sources.logical_ids() {
            source_urls.push(url(logical_id).await?);
        }
        Ok(Redrive {
            returns_url: url("IngestRejections").await?,
            ingest_queue_url: url("IngestQueue").await?,
            sources: source_urls,
            sqs,
        })
    }

    /// Where this run looks for what it sent: its sources, and where
    /// refusals come back to.
    fn watched(&self) -> Vec<&str> {
        let mut queues: Vec<&str> = self.sources.iter().map(String::as_str).collect();
        if !queues.contains(&self.returns_url.as_str()) {
            queues.push(&self.returns_url);
        }
        queues
    }

    pub async fn run(&self, options: &RedriveOptions) -> Result<RedriveReport> {
        let mut run = Run::default();
        let result = self.drive(options, &mut run).await;
        // Whatever happened, what was held goes back into view.
        self.release(&run.held).await;
        result.map(|()| run.report)
    }

    async fn drive(&self, options: &RedriveOptions, run: &mut Run) -> Result<()> {
        let mut batches_sent = 0;
        for source in &self.sources {
            let mut empty_receives = 0;
            while empty_receives < 2 {
                let received = self.receive(source, options.hold).await?;
                if received.is_empty() {
                    empty_receives += 1;
                    continue;
                }
                empty_receives = 0;
                let mut to_send: Vec<&Received> = Vec::new();
                let mut to_delete: Vec<&Received> = Vec::new();
                let mut bodies_in_batch: HashSet<[u8; 32]> = HashSet::new();
                for message in &received {
                    if run.took_back(message) {
                        continue;
                    }
                    let hash = digest(message.body());
                    if run.sent_bodies.contains(&hash) || !bodies_in_batch.insert(hash) {
                        run.report.duplicates += 1;
                        to_delete.push(message);
                    } else {
                        to_send.push(message);
                    }
                }
                let sent = self.send(&to_send).await?;
                batches_sent += 1;
                if options.crash_after_sending == Some(batches_sent) {
                    bail!(
                        "stopped after sending {batches_sent} batches, before deleting them (a test's crash)"
                    );
                }
                for (message, id) in &sent {
                    run.sent_ids.insert(id.clone());
                    run.sent_bodies.insert(digest(message.body()));
                }
                run.report.redriven += sent.len();
                to_delete.extend(sent.iter().map(|(message, _)| *message));
                self.delete(&to_delete).await?;
            }
        }
        run.report.ingest_drained = self.collect_returns(options, run).await?;
        Ok(())
    }

    /// Waits for the ingest queue to empty, then takes in what came back.
    async fn collect_returns(&self, options: &RedriveOptions, run: &mut Run) -> Result<bool> {
        if run.sent_ids.is_empty() {
            return Ok(true);
        }
        let started = Instant::now();
        let mut drained = false;
        while started.elapsed() < options.wait_for_returns {
            if geotag_local_cloud::pump::queue_depth(&self.sqs, &self.ingest_queue_url).await? == 0
            {
                drained = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        for source in self.watched() {
            loop {
                let received = self.receive(source, options.hold).await?;
                if received.is_empty() {
                    break;
                }
                let mut duplicates = Vec::new();
                for message in &received {
                    if run.took_back(message) {
                        continue;
                    }
                    if run.sent_bodies.contains(&digest(message.body())) {
                        run.report.duplicates += 1;
                        duplicates.push(message);
                    } else {
                        // Refused meanwhile by the live stack: not ours.
                        run.hold(message);
                    }
                }
                self.delete(&duplicates).await?;
            }
        }
        Ok(drained)
    }

    async fn receive(&self, queue_url: &str, hold: Duration) -> Result<Vec<Received>> {
        let messages = self
            .sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(SQS_BATCH as i32)
            .message_attribute_names("All")
            .visibility_timeout(i32::try_from(hold.as_secs()).unwrap_or(i32::MAX).max(1))
            .wait_time_seconds(1)
            .send()
            .await
            .with_context(|| format!("receiving from {queue_url}"))?
            .messages
            .unwrap_or_default();
        Ok(messages
            .into_iter()
            .map(|message| Received {
                queue_url: queue_url.to_owned(),
                message,
            })
            .collect())
    }

    /// Sends each message's body to the ingest queue; the messages SQS took,
    /// with the id of their copy.
    async fn send<'a>(&self, messages: &[&'a Received]) -> Result<Vec<(&'a Received, String)>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let entries = messages
            .iter()
            .enumerate()
            .map(|(index, message)| {
                let from = message
                    .queue_url
                    .rsplit('/')
                    .next()
                    .unwrap_or(&message.queue_url);
                SendMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .message_body(message.body())
                    .message_attributes(
                        attr::REDRIVEN_FROM,
                        MessageAttributeValue::builder()
                            .data_type("String")
                            .string_value(from)
                            .build()?,
                    )
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = self
            .sqs
            .send_message_batch()
            .queue_url(&self.ingest_queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .context("sending to the ingest queue")?;
        for failed in output.failed() {
            // Left where it was, visible again after the hold.
            tracing::warn!(
                entry = failed.id(),
                code = failed.code(),
                "the ingest queue refused a redriven message; it stays where it was"
            );
        }
        let by_index: HashMap<usize, String> = output
            .successful()
            .iter()
            .filter_map(|entry| Some((entry.id().parse().ok()?, entry.message_id().to_owned())))
            .collect();
        Ok(messages
            .iter()
            .enumerate()
            .filter_map(|(index, message)| Some((*message, by_index.get(&index)?.clone())))
            .collect())
    }

    async fn delete(&self, messages: &[&Received]) -> Result<()> {
        let handles = messages.iter().filter_map(|message| {
            Some((
                message.queue_url.as_str(),
                message.message.receipt_handle()?,
            ))
        });
        for (queue_url, batch) in batches_by_queue(handles) {
            let entries = batch
                .into_iter()
                .filter_map(|(id, handle)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(id)
                        .receipt_handle(handle)
                        .build()
                        .ok()
                })
                .collect();
            let output = self
                .sqs
                .delete_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .context("deleting redriven messages")?;
            if !output.failed().is_empty() {
                // Their copies were sent: the next run finds them again and
                // deletes them as duplicates, or redrives them, harmlessly.
                tracing::warn!(
                    failed = output.failed().len(),
                    "some redriven messages were not deleted"
                );
            }
        }
        Ok(())
    }

    /// Makes held messages visible again at once (best effort: otherwise
    /// they reappear when their hold runs out).
    async fn release(&self, held: &[(String, String)]) {
        let handles = held
            .iter()
            .map(|(queue_url, handle)| (queue_url.as_str(), handle.as_str()));
        for (queue_url, batch) in batches_by_queue(handles) {
            let entries = batch
                .into_iter()
                .filter_map(|(id, handle)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(id)
                        .receipt_handle(handle)
                        .visibility_timeout(0)
                        .build()
                        .ok()
                })
                .collect();
            if let Err(error) = self
                .sqs
                .change_message_visibility_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&error), "held messages reappear when their hold runs out");
            }
        }
    }
}
