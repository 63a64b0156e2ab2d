//! The functions' EMF lines, read back as CloudWatch would: checked, summed
//! per function and metric, and set beside the audit's own counts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use geotag_runtime::emf::{FUNCTION_DIMENSION, check_document};
use serde_json::Value;

/// Sums of the functions' metrics over a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricTotals {
    pub lines: usize,
    /// Lines CloudWatch would not turn into metrics, with the reason.
    pub invalid: Vec<String>,
    /// (function, metric) to its sum, from the documents with the function
    /// dimension only.
    pub totals: BTreeMap<(String, String), f64>,
    /// (function, dimension, value, metric) to its sum.
    pub breakdowns: BTreeMap<(String, String, String, String), f64>,
}

impl MetricTotals {
    /// `function_of` maps the `Function` dimension (the deployed name) to the
    /// name a report uses (the cargo binary).
    pub fn of_lines(lines: &[String], function_of: impl Fn(&str) -> String) -> MetricTotals {
        let mut totals = MetricTotals {
            lines: lines.len(),
            ..MetricTotals::default()
        };
        for line in lines {
            let document: Value = match serde_json::from_str(line) {
                Ok(document) => document,
                Err(error) => {
                    totals.invalid.push(format!("not JSON ({error}): {line}"));
                    continue;
                }
            };
            if let Err(reason) = check_document(&document) {
                totals.invalid.push(format!("{reason}: {line}"));
                continue;
            }
            let function = function_of(document[FUNCTION_DIMENSION].as_str().unwrap_or_default());
            for directive in document["_aws"]["CloudWatchMetrics"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let dimensions: Vec<&str> = directive["Dimensions"][0]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .filter(|name| *name != FUNCTION_DIMENSION)
                    .collect();
                for metric in directive["Metrics"].as_array().into_iter().flatten() {
                    let name = metric["Name"].as_str().unwrap_or_default();
                    let value = document[name].as_f64().unwrap_or_default();
                    match dimensions.as_slice() {
                        [] => {
                            *totals
                                .totals
                                .entry((function.clone(), name.to_owned()))
                                .or_default() += value;
                        }
                        [dimension] => {
                            let key = (
                                function.clone(),
                                (*dimension).to_owned(),
                                document[*dimension].as_str().unwrap_or_default().to_owned(),
                                name.to_owned(),
                            );
                            *totals.breakdowns.entry(key).or_default() += value;
                        }
                        _ => {}
                    }
                }
            }
        }
        totals
    }

    /// The sum of one function's metric (0 when it never reported it).
    pub fn total(&self, function: &str, metric: &str) -> f64 {
        self.totals
            .get(&(function.to_owned(), metric.to_owned()))
            .copied()
            .unwrap_or_default()
    }

    /// The counts of a function's metric by the values of a dimension.
    pub fn by(&self, function: &str, dimension: &str, metric: &str) -> BTreeMap<String, f64> {
        self.breakdowns
            .iter()
            .filter(|((f, d, _, m), _)| f == function && d == dimension && m == metric)
            .map(|((_, _, value, _), sum)| (value.clone(), *sum))
            .collect()
    }

    /// One row per function: its counts, durations left out.
    pub fn render(&self) -> String {
        let mut functions: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for ((function, metric), sum) in &self.totals {
            if metric.ends_with("Duration") {
                continue;
            }
            functions
                .entry(function)
                .or_default()
                .push(format!("{metric} {sum:.0}"));
        }
        let mut text = String::new();
        for (function, metrics) in functions {
            let _ = writeln!(text, "    {function:<8} {}", metrics.join(", "));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geotag_runtime::emf::{Emitter, Metrics, Sink};
    use std::sync::{Arc, Mutex};

    #[test]
    fn sums_by_function_and_by_dimension_and_reports_broken_lines() {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let emitter =
            Emitter::for_binary("geotag-local-ingest").with_sink(Sink::Memory(Arc::clone(&buffer)));
        for stored in [3, 4] {
            emitter.emit(Metrics::new().count("ReadingsStored", stored).count_by(
                "Reason",
                "bad_json",
                "ReadingsRejected",
                1,
            ));
        }
        let mut lines = buffer.lock().unwrap().clone();
        lines.push("plain text".to_owned());
        let totals = MetricTotals::of_lines(&lines, |name| {
            name.trim_start_matches("geotag-local-").to_owned()
        });
        assert_eq!(totals.lines, 5);
        assert_eq!(totals.invalid.len(), 1);
        assert_eq!(totals.total("ingest", "ReadingsStored"), 7.0);
        assert_eq!(
            totals.by("ingest", "Reason", "ReadingsRejected"),
            BTreeMap::from([("bad_json".to_owned(), 2.0)])
        );
    }
}
