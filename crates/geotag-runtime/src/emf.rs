//! The functions' metrics, as CloudWatch Embedded Metric Format lines.
//!
//! A function writes one JSON line per invocation to its log; CloudWatch Logs
//! turns the line's `_aws` directive into metrics, asynchronously, at no API
//! cost and no added latency (the EMF specification:
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>).
//!
//! Each invocation's metrics are one [`Metrics`] value, filled by the handler
//! and emitted when it ends. Counts broken down by a dimension (rejections by
//! reason, alerts by type) need one document per dimension value, since a
//! document holds one value per dimension key.
//!
//! Written here rather than with `metrics_cloudwatch_embedded` (the one EMF
//! crate): it records through the `metrics` crate's process-global recorder
//! and flushes whatever has accumulated. The local stack runs the three
//! handlers in one process, several invocations at a time, so a global
//! recorder would mix one invocation's counts into another's line. Building
//! the document is forty lines of serde_json.

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};

/// The namespace when `METRICS_NAMESPACE` is not set.
pub const DEFAULT_NAMESPACE: &str = "geotag";
/// The dimension every metric carries: the Lambda function's name.
pub const FUNCTION_DIMENSION: &str = "Function";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    const fn name(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// A metric's name, unit and value, as a document declares and holds it.
type MetricValue<'a> = (&'a str, Unit, Value);

/// One invocation's metrics.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    values: Vec<(&'static str, Unit, f64)>,
    /// (dimension, its value, metric, count)
    breakdowns: Vec<(&'static str, String, &'static str, u64)>,
    properties: Map<String, Value>,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// An invocation's metrics, its lines carrying the request id (the
    /// `requestId` property), so Logs Insights finds them beside its logs.
    pub fn for_request(request_id: &str) -> Metrics {
        let mut metrics = Metrics::default();
        metrics.property("requestId", request_id);
        metrics
    }

    pub fn count(&mut self, metric: &'static str, count: usize) -> &mut Metrics {
        self.values.push((metric, Unit::Count, count as f64));
        self
    }

    pub fn duration(&mut self, metric: &'static str, duration: Duration) -> &mut Metrics {
        self.values
            .push((metric, Unit::Milliseconds, duration.as_secs_f64() * 1000.0));
        self
    }

    /// A count under a second dimension, e.g. `ReadingsRejected` by `Reason`.
    pub fn count_by(
        &mut self,
        dimension: &'static str,
        value: &str,
        metric: &'static str,
        count: usize,
    ) -> &mut Metrics {
        self.breakdowns
            .push((dimension, value.to_owned(), metric, count as u64));
        self
    }

    /// A field searchable in Logs Insights that is not a metric (the request id).
    pub fn property(&mut self, name: &str, value: impl Into<Value>) -> &mut Metrics {
        self.properties.insert(name.to_owned(), value.into());
        self
    }

    /// The EMF documents: the function's metrics, then one per breakdown value.
    pub fn documents(&self, namespace: &str, function: &str, timestamp_ms: i64) -> Vec<Value> {
        let document =
            |dimensions: Vec<&str>, fields: &[(&str, Value)], metrics: &[MetricValue]| {
                let mut root = self.properties.clone();
                root.insert(FUNCTION_DIMENSION.to_owned(), function.into());
                for (name, value) in fields {
                    root.insert((*name).to_owned(), value.clone());
                }
                let mut definitions = Vec::with_capacity(metrics.len());
                for (name, unit, value) in metrics {
                    definitions.push(json!({"Name": name, "Unit": unit.name()}));
                    root.insert((*name).to_owned(), value.clone());
                }
                root.insert(
                    "_aws".to_owned(),
                    json!({
                        "Timestamp": timestamp_ms,
                        "CloudWatchMetrics": [{
                            "Namespace": namespace,
                            "Dimensions": [dimensions],
                            "Metrics": definitions,
                        }],
                    }),
                );
                Value::Object(root)
            };
        let mut documents = Vec::new();
        if !self.values.is_empty() {
            let metrics: Vec<_> = self
                .values
                .iter()
                .map(|(name, unit, value)| (*name, *unit, json!(value)))
                .collect();
            documents.push(document(vec![FUNCTION_DIMENSION], &[], &metrics));
        }
        // One document per (dimension, value), holding every metric under it.
        let mut groups: Vec<(&str, &str, Vec<MetricValue>)> = Vec::new();
        for (dimension, value, metric, count) in &self.breakdowns {
            let entry = (*metric, Unit::Count, json!(count));
            match groups
                .iter_mut()
                .find(|(d, v, _)| d == dimension && v == value)
            {
                Some(group) => group.2.push(entry),
                None => groups.push((dimension, value, vec![entry])),
            }
        }
        for (dimension, value, metrics) in groups {
            documents.push(document(
                vec![FUNCTION_DIMENSION, dimension],
                &[(dimension, value.into())],
                &metrics,
            ));
        }
        documents
    }
}

/// Checks a document against the rules CloudWatch applies before it
/// extracts metrics: a directive with a namespace, every dimension and metric
/// it names present at the root (dimensions as strings, metrics as numbers),
/// at most 30 dimensions and 100 metrics. Returns the first broken rule.
pub fn check_document(document: &Value) -> Result<(), String> {
    let directives = document["_aws"]["CloudWatchMetrics"]
        .as_array()
        .filter(|directives| !directives.is_empty())
        .ok_or("no _aws.CloudWatchMetrics directive")?;
    if !document["_aws"]["Timestamp"].is_i64() {
        return Err("_aws.Timestamp is not an integer".into());
    }
    for directive in directives {
        if directive["Namespace"].as_str().is_none_or(str::is_empty) {
            return Err("a directive without a namespace".into());
        }
        for set in directive["Dimensions"].as_array().ok_or("no Dimensions")? {
            let set = set.as_array().ok_or("a dimension set that is not a list")?;
            if set.len() > 30 {
                return Err("more than 30 dimensions".into());
            }
            for name in set {
                let name = name
                    .as_str()
                    .ok_or("a dimension name that is not a string")?;
                if !document[name].is_string() {
                    return Err(format!("dimension {name} has no string value at the root"));
                }
            }
        }
        let metrics = directive["Metrics"].as_array().ok_or("no Metrics")?;
        if metrics.len() > 100 {
            return Err("more than 100 metrics".into());
        }
        for metric in metrics {
            let name = metric["Name"].as_str().ok_or("a metric without a name")?;
            if !document[name].is_number() {
                return Err(format!("metric {name} has no numeric value at the root"));
            }
        }
    }
    Ok(())
}

/// One batch invocation being measured: its request id, the records it
/// received and when it began. [`Invocation::finish`] writes its metrics with
/// those three, around the counts only the function knows.
pub struct Invocation<'a> {
    emitter: &'a Emitter,
    request_id: &'a str,
    records: usize,
    started: std::time::Instant,
}

impl<'a> Invocation<'a> {
    pub fn start(emitter: &'a Emitter, request_id: &'a str, records: usize) -> Invocation<'a> {
        Invocation {
            emitter,
            request_id,
            records,
            started: std::time::Instant::now(),
        }
    }

    /// Emits `RecordsReceived`, what `counts` adds, and `HandlerDuration`.
    pub fn finish(self, counts: impl FnOnce(&mut Metrics)) {
        let mut metrics = Metrics::for_request(self.request_id);
        metrics.count("RecordsReceived", self.records);
        counts(&mut metrics);
        metrics.duration("HandlerDuration", self.started.elapsed());
        self.emitter.emit(&metrics);
    }
}

/// Where the lines go: the process's stdout in Lambda (the function's log);
/// a shared buffer for the local stack and tests, which read them back.
#[derive(Debug, Clone, Default)]
pub enum Sink {
    #[default]
    Stdout,
    Memory(Arc<Mutex<Vec<String>>>),
    /// For benchmarks, which time the handler and not the terminal.
    Discard,
}

/// The namespace and the function name the metrics go under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub namespace: String,
    pub function: String,
}

impl Settings {
    /// `METRICS_NAMESPACE` and Lambda's `AWS_LAMBDA_FUNCTION_NAME` from
    /// `lookup`, with `binary` as the name outside Lambda.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>, binary: &str) -> Settings {
        Settings {
            namespace: lookup("METRICS_NAMESPACE").unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
            function: lookup("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|| binary.to_owned()),
        }
    }
}

/// Writes each invocation's [`Metrics`] under one namespace and function name.
#[derive(Debug, Clone)]
pub struct Emitter {
    pub settings: Settings,
    pub sink: Sink,
}

impl Emitter {
    pub fn new(settings: Settings) -> Emitter {
        Emitter {
            settings,
            sink: Sink::Stdout,
        }
    }

    /// The emitter of a function running outside Lambda, named by its binary.
    pub fn for_binary(binary: &str) -> Emitter {
        Emitter::new(Settings::from_lookup(|_| None, binary))
    }

    pub fn with_sink(mut self, sink: Sink) -> Emitter {
        self.sink = sink;
        self
    }

    pub fn emit(&self, metrics: &Metrics) {
        if matches!(self.sink, Sink::Discard) {
            return;
        }
        let lines: Vec<String> = metrics
            .documents(
                &self.settings.namespace,
                &self.settings.function,
                geotag::clock::now_ms(),
            )
            .iter()
            .map(Value::to_string)
            .collect();
        match &self.sink {
            Sink::Stdout => {
                let mut text = lines.join("\n");
                text.push('\n');
                // One write: the lines stay whole beside concurrent log lines.
                if let Err(error) = std::io::stdout().lock().write_all(text.as_bytes()) {
                    tracing::error!(%error, "metrics not written");
                }
            }
            Sink::Memory(buffer) => buffer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend(lines),
            Sink::Discard => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emitted(metrics: &Metrics) -> Vec<Value> {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        Emitter::new(Settings::from_lookup(|_| None, "ingest"))
            .with_sink(Sink::Memory(Arc::clone(&buffer)))
            .emit(metrics);
        let lines = buffer.lock().unwrap().clone();
        lines
            .iter()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn each_declared_metric_has_its_value_and_dimensions_at_the_root() {
        let mut metrics = Metrics::new();
        metrics
            .count("ReadingsStored", 7)
            .duration("HandlerDuration", Duration::from_micros(2500))
            .count_by("Reason", "bad_latitude", "ReadingsRejected", 2)
            .count_by("Reason", "bad_json", "ReadingsRejected", 1)
            .property("requestId", "r-1");
        let documents = emitted(&metrics);
        assert_eq!(documents.len(), 3);
        for document in &documents {
            check_document(document).unwrap();
            let directive = &document["_aws"]["CloudWatchMetrics"][0];
            assert_eq!(directive["Namespace"], "geotag");
            for dimension in directive["Dimensions"][0].as_array().unwrap() {
                assert!(document[dimension.as_str().unwrap()].is_string());
            }
            for metric in directive["Metrics"].as_array().unwrap() {
                assert!(document[metric["Name"].as_str().unwrap()].is_number());
            }
            assert_eq!(document["requestId"], "r-1");
            assert_eq!(document["Function"], "ingest");
            assert!(document["_aws"]["Timestamp"].as_i64().unwrap() > 1_700_000_000_000);
        }
        assert_eq!(documents[0]["ReadingsStored"], 7.0);
        assert_eq!(documents[0]["HandlerDuration"], 2.5);
        assert_eq!(
            documents[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"][1]["Unit"],
            "Milliseconds"
        );
        assert_eq!(documents[1]["Reason"], "bad_latitude");
        assert_eq!(documents[1]["ReadingsRejected"], 2);
        assert_eq!(
            documents[2]["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0],
            json!(["Function", "Reason"])
        );
    }

    #[test]
    fn a_metric_without_its_value_is_refused() {
        let mut document = emitted(Metrics::new().count("ReadingsStored", 1))[0].clone();
        document.as_object_mut().unwrap().remove("ReadingsStored");
        assert_eq!(
            check_document(&document),
            Err("metric ReadingsStored has no numeric value at the root".to_owned())
        );
        assert!(check_document(&json!({"message": "plain log line"})).is_err());
    }

    #[test]
    fn nothing_to_report_writes_nothing() {
        assert!(emitted(&Metrics::new()).is_empty());
    }

    #[test]
    fn the_function_name_comes_from_lambda() {
        let settings = Settings::from_lookup(
            |name| match name {
                "AWS_LAMBDA_FUNCTION_NAME" => Some("geotag-prod-ingest".to_owned()),
                "METRICS_NAMESPACE" => Some("fleet".to_owned()),
                _ => None,
            },
            "ingest",
        );
        assert_eq!(settings.function, "geotag-prod-ingest");
        assert_eq!(settings.namespace, "fleet");
    }
}
