//! Issue 19's goals, judged from this run's own figures: each one met, or
//! missed by how much and why, or said to be unmeasured and why.

use std::fmt::Write as _;

use super::cold_start::Footprint;
use super::cost::{RequestRun, kind_costs};
use super::{HotPaths, INGEST_CASES, mb, ms};

/// One goal as this run judged it.
struct Goal {
    figure: &'static str,
    target: String,
    measured: String,
    verdict: Verdict,
}

enum Verdict {
    Met,
    /// By how much, and why.
    Missed(String, String),
    /// Why there is no figure.
    Unmeasured(String),
}

impl Verdict {
    /// Met if every `(name, value)` is at most `limit`; otherwise missed by
    /// the excess of each one over it, with `why`.
    fn at_most(
        values: &[(&str, f64)],
        limit: f64,
        unit: impl Fn(f64) -> String,
        why: &str,
    ) -> Verdict {
        let over: Vec<String> = (values.iter())
            .filter(|(_, value)| *value > limit)
            .map(|(name, value)| {
                let by = unit(value - limit);
                if name.is_empty() {
                    by
                } else {
                    format!("{name} by {by}")
                }
            })
            .collect();
        if over.is_empty() {
            Verdict::Met
        } else {
            Verdict::Missed(over.join(", "), why.to_owned())
        }
    }
}

pub(super) fn table(hot: &HotPaths, footprints: &[Footprint], runs: &[RequestRun]) -> String {
    let mut goals = cost_goals(hot, runs);
    goals.extend(hot_path_goals(hot));
    goals.extend(footprint_goals(footprints));
    let mut table = String::from(
        "## Goals (issue 19), as this run measured them\n\n\
         Every figure is from this run; the tables below hold the rest of each.\n\n\
         | figure | goal | this run | |\n|---|---|---|---|\n",
    );
    let mut reasons = String::new();
    for goal in &goals {
        let verdict = match &goal.verdict {
            Verdict::Met => "met".to_owned(),
            Verdict::Missed(by, why) => {
                let _ = writeln!(reasons, "- **{}**, missed by {by}: {why}", goal.figure);
                format!("missed by {by}")
            }
            Verdict::Unmeasured(why) => {
                let _ = writeln!(reasons, "- **{}**, not measured: {why}", goal.figure);
                "not measured".to_owned()
            }
        };
        let _ = writeln!(
            table,
            "| {} | {} | {} | {verdict} |",
            goal.figure, goal.target, goal.measured
        );
    }
    let met = goals
        .iter()
        .filter(|goal| matches!(goal.verdict, Verdict::Met))
        .count();
    let _ = writeln!(table, "\n{met} of {} goals met.\n", goals.len());
    if !reasons.is_empty() {
        let _ = writeln!(table, "{reasons}");
    }
    table
}

fn cost_goals(hot: &HotPaths, runs: &[RequestRun]) -> Vec<Goal> {
    let kinds = kind_costs(runs, hot);
    let mut goals = Vec::new();
    for (per_message, figure, limit) in [
        (
            1,
            "cost per million stored readings, 1 reading a message (a gateway publishing to SNS)",
            1.44,
        ),
        (
            50,
            "cost per million stored readings, 50 readings a message",
            0.35,
        ),
    ] {
        let Some(kind) = kinds
            .iter()
            .find(|kind| kind.readings_per_message == per_message)
        else {
            goals.push(Goal {
                figure,
                target: format!("≤ ${limit:.2}"),
                measured: "-".into(),
                verdict: Verdict::Unmeasured(
                    "the counting runs were left out (`--readings 0`, as `--quick` does)".into(),
                ),
            });
            continue;
        };
        let why = format!(
            "SNS, SQS and the Telemetry items alone cost ${:.2} a million at this run's counts, {}; \
             stats wrote {:.2} DeviceStats write units and made {:.2} Queries a reading",
            kind.floor,
            if kind.floor > limit {
                "above the goal before stats or alerts write anything".to_owned()
            } else {
                format!("${:.2} of the goal's ${limit:.2}", kind.floor)
            },
            kind.stats_units,
            kind.queries,
        );
        goals.push(Goal {
            figure,
            target: format!("≤ ${limit:.2}"),
            measured: format!("${:.3} (naive ${:.3})", kind.total, kind.naive),
            verdict: Verdict::at_most(&[("", kind.total)], limit, |by| format!("${by:.2}"), &why),
        });
    }
    let spreads: Vec<(String, f64)> = (kinds.iter())
        .filter(|kind| kind.totals.len() > 1)
        .map(|kind| {
            (
                format!("{} a message", kind.readings_per_message),
                kind.spread,
            )
        })
        .collect();
    goals.push(Goal {
        figure: "two counting runs of the same code agree",
        target: "within 5%".into(),
        measured: if spreads.is_empty() {
            "-".into()
        } else {
            (kinds.iter())
                .map(|kind| {
                    let totals: Vec<String> = kind.totals.iter().map(|t| format!("${t:.3}")).collect();
                    format!("{} ({:.2}%)", totals.join(" and "), kind.spread)
                })
                .collect::<Vec<_>>()
                .join("; ")
        },
        verdict: if spreads.is_empty() {
            Verdict::Unmeasured("no kind of fleet was counted twice".into())
        } else {
            let named: Vec<(&str, f64)> = spreads.iter().map(|(name, s)| (name.as_str(), *s)).collect();
            Verdict::at_most(&named, 5.0, |by| format!("{by:.1} points"), "the stepped runs should count the same requests: a difference is a batching the pump did not fix")
        },
    });
    goals
}

fn hot_path_goals(hot: &HotPaths) -> Vec<Goal> {
    let mut goals = Vec::new();
    for (id, figure, why) in [
        (
            "stats/stream/10000",
            "stats, ns a reading from the stream event's JSON",
            "most of it is parsing the event: serde_json scanning each record and building each image's attribute list before it is read (a callgrind profile, README's Hot paths)",
        ),
        (
            "alerts/latest-changes/10000",
            "alerts, ns a reading",
            "not profiled this round; its event is read by the same lean stream parser as stats'",
        ),
    ] {
        let measured = hot.rust_ns.get(id).copied();
        goals.push(Goal {
            figure,
            target: "≤ 2,000".into(),
            measured: measured.map_or("-".into(), |ns| format!("{ns:.0}")),
            verdict: match measured {
                None => Verdict::Unmeasured(format!("criterion left no result for {id}")),
                Some(ns) => Verdict::at_most(
                    &[("", ns)],
                    2000.0,
                    |by| format!("{:.0}%", 100.0 * by / 2000.0),
                    why,
                ),
            },
        });
    }
    let ratios: Vec<(&str, f64)> = INGEST_CASES
        .iter()
        .filter_map(|(id, _, _)| Some((*id, hot.python_ns.get(*id)? / hot.rust_ns.get(*id)?)))
        .collect();
    let lowest = ratios.iter().map(|(_, r)| *r).fold(f64::INFINITY, f64::min);
    let highest = ratios.iter().map(|(_, r)| *r).fold(0.0, f64::max);
    goals.push(Goal {
        figure: "ingest ÷ the Python baseline, every row",
        target: "≥ 30×".into(),
        measured: if ratios.is_empty() { "-".into() } else { format!("{lowest:.0}–{highest:.0}×") },
        verdict: if ratios.len() < INGEST_CASES.len() {
            Verdict::Unmeasured("a row has no Rust or no Python figure".into())
        } else if lowest >= 30.0 {
            Verdict::Met
        } else {
            let (lowest_id, _) = (ratios.iter())
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .copied()
                .unwrap_or_default();
            Verdict::Missed(
                format!("{:.0}× at the lowest row ({lowest_id}, {lowest:.0}×)", 30.0 - lowest),
                "both languages do little but the work they must (unescaping each body out of the SQS record, building the SDK's item maps); a leaner request path than the SDK's AttributeValue maps was not measured".into(),
            )
        },
    });
    goals
}

fn footprint_goals(footprints: &[Footprint]) -> Vec<Goal> {
    let functions: Vec<&Footprint> = footprints.iter().filter(|f| f.binary.is_some()).collect();
    let list = |value: &dyn Fn(&Footprint) -> String| {
        (functions.iter())
            .map(|f| value(f))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    // Every figure here is of the three functions: one missing leaves each
    // goal unmeasured rather than judged on the others.
    let goal = |figure: &'static str, target: &str, measured: String, verdict: Verdict| {
        let (measured, verdict) = if functions.len() == 3 {
            (measured, verdict)
        } else {
            let why = "the three functions' release binaries were not all built and started";
            ("-".to_owned(), Verdict::Unmeasured(why.into()))
        };
        Goal {
            figure,
            target: target.into(),
            measured,
            verdict,
        }
    };
    let arm64: Vec<(&str, Option<u64>)> = functions.iter().map(|f| (f.name, f.sam_arm64)).collect();
    vec![
        goal(
            "peak RSS on a 6 MB batch (ingest / stats / alerts)",
            "≤ 32 MB each",
            list(&|f| format!("{:.1} MB", mb(f.peak_rss()))),
            Verdict::at_most(
                &functions
                    .iter()
                    .map(|f| (f.name, mb(f.peak_rss())))
                    .collect::<Vec<_>>(),
                32.0,
                |by| format!("{by:.1} MB"),
                "the batch is held parsed while its requests are built",
            ),
        ),
        goal(
            "arm64 `bootstrap` from `sam build` (the shipped profile)",
            "≤ 8 MB each (MB: 2^20 bytes, as every size here)",
            list(&|f| {
                f.sam_arm64
                    .map_or("-".into(), |bytes| format!("{:.1} MB", mb(bytes)))
            }),
            if arm64.iter().any(|(_, size)| size.is_none()) {
                Verdict::Unmeasured(
                    "scripts/bench's own `sam build` (left out by `--quick`) left no bootstrap of every function in target/bench/sam-build".into(),
                )
            } else {
                Verdict::at_most(
                    &arm64
                        .iter()
                        .map(|(name, size)| (*name, mb(size.unwrap_or(0))))
                        .collect::<Vec<_>>(),
                    8.0,
                    |by| format!("{by:.2} MB"),
                    "the AWS SDK clients and their aws-smithy runtime are the bulk of each binary (`cargo bloat` of the x86_64 ingest, 2026-12-06; not broken down on arm64)",
                )
            },
        ),
        goal(
            "cold start to first answer, local Runtime API (median)",
            "≤ 8 ms each",
            list(&|f| format!("{:.1} ms", ms(f.answer_median))),
            Verdict::at_most(
                &functions
                    .iter()
                    .map(|f| (f.name, ms(f.answer_median)))
                    .collect::<Vec<_>>(),
                8.0,
                |by| format!("{by:.1} ms"),
                "a first answer includes the SDK's first signed requests in turn (stats: its latest items read, then written)",
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_goal_missed_names_each_figure_over_it_and_by_how_much() {
        let unit = |by: f64| format!("{by:.1} MB");
        assert!(matches!(
            Verdict::at_most(&[("ingest", 24.9), ("stats", 32.0)], 32.0, unit, "why"),
            Verdict::Met
        ));
        match Verdict::at_most(
            &[("ingest", 24.9), ("stats", 33.5), ("alerts", 40.0)],
            32.0,
            unit,
            "why",
        ) {
            Verdict::Missed(by, why) => {
                assert_eq!(by, "stats by 1.5 MB, alerts by 8.0 MB");
                assert_eq!(why, "why");
            }
            _ => panic!("33.5 and 40.0 are over 32"),
        }
    }

    #[test]
    fn without_counting_runs_the_cost_goals_say_they_were_not_measured() {
        let hot = HotPaths {
            table: String::new(),
            rust_ns: [("stats/stream/10000".to_owned(), 2500.0)].into(),
            python_ns: Default::default(),
        };
        let table = table(&hot, &[], &[]);
        assert!(table.contains("| ≤ $1.44 | - | not measured |"), "{table}");
        assert!(table.contains("| stats, ns a reading from the stream event's JSON | ≤ 2,000 | 2500 | missed by 25% |"), "{table}");
        assert!(table.contains("0 of 9 goals met"), "{table}");
        assert!(
            table.contains("| ≤ 8 ms each | - | not measured |"),
            "{table}"
        );
    }
}
