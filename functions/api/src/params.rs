//! Query parameters, parsed strictly: an unknown or repeated parameter, a
//! malformed value, a limit or a time span out of bounds is a 400 naming the
//! parameter, never a guess (a typo such as `?limt=` must not silently return
//! a default page).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::problem::Problem;

/// The parameters of one request, checked against what its route accepts.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

/// The earliest and latest times the API accepts: readings are refused
/// outside these years anyway, and the bounds keep every sum in range.
const EARLIEST_MS: i64 = 946_684_800_000; // 2000-01-01
const LATEST_MS: i64 = 4_102_444_800_000; // 2100-01-01

impl Query {
    /// `pairs` as the request has them (decoded, in order); `allowed` is
    /// every name the route reads.
    pub fn new(pairs: Vec<(String, String)>, allowed: &[&str]) -> Result<Query, Problem> {
        for (index, (name, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&name.as_str()) {
                return Err(Problem::invalid(
                    name,
                    "unknown_parameter",
                    format!(
                        "this route takes no parameter {name:?}; it takes {}",
                        if allowed.is_empty() {
                            "none".to_owned()
                        } else {
                            allowed.join(", ")
                        }
                    ),
                ));
            }
            if pairs[..index].iter().any(|(earlier, _)| earlier == name) {
                return Err(Problem::invalid(
                    name,
                    "repeated_parameter",
                    format!("{name} is given more than once"),
                ));
            }
        }
        Ok(Query { pairs })
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The page size: `default` if absent, else 1 to `max`.
    pub fn limit(&self, default: usize, max: usize) -> Result<usize, Problem> {
        let Some(text) = self.text("limit") else {
            return Ok(default);
        };
        match text.parse::<usize>() {
            Ok(limit) if (1..=max).contains(&limit) => Ok(limit),
            _ => Err(Problem::invalid(
                "limit",
                "limit_out_of_range",
                format!("limit {text:?} is not a whole number from 1 to {max}"),
            )),
        }
    }

    /// A time: RFC 3339 (`2026-12-01T08:00:00Z`) or epoch milliseconds.
    pub fn time(&self, name: &str) -> Result<Option<i64>, Problem> {
        let Some(text) = self.text(name) else {
            return Ok(None);
        };
        let parsed = if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() {
            text.parse::<i64>().ok()
        } else {
            OffsetDateTime::parse(text, &Rfc3339)
                .ok()
                .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
        };
        match parsed {
            Some(ms) if (EARLIEST_MS..=LATEST_MS).contains(&ms) => Ok(Some(ms)),
            Some(_) => Err(Problem::invalid(
                name,
                "time_out_of_range",
                format!("{name} {text:?} is not between 2000 and 2100"),
            )),
            None => Err(Problem::invalid(
                name,
                "invalid_time",
                format!(
                    "{name} {text:?} is neither RFC 3339 (2026-12-01T08:00:00Z) nor epoch milliseconds"
                ),
            )),
        }
    }

    /// `[start, end)` from two time parameters: `end` defaults to now,
    /// `start` to `end - default_span_ms`; the span is at most `max_span_ms`.
    pub fn range(
        &self,
        start: &str,
        end: &str,
        default_span_ms: i64,
        max_span_ms: i64,
        now_ms: i64,
    ) -> Result<(i64, i64), Problem> {
        let end_ms = self
            .time(end)?
            .unwrap_or(now_ms.clamp(EARLIEST_MS, LATEST_MS));
        let start_ms = self.time(start)?.unwrap_or(end_ms - default_span_ms);
        if start_ms >= end_ms {
            return Err(Problem::invalid(
                start,
                "empty_range",
                format!("{start} must be before {end}"),
            ));
        }
        if end_ms - start_ms > max_span_ms {
            return Err(Problem::invalid(
                start,
                "range_too_long",
                format!(
                    "{start} to {end} spans more than {} hours; ask in pieces",
                    max_span_ms / 3_600_000
                ),
            ));
        }
        Ok((start_ms, end_ms))
    }

    /// One of `choices` by name, or `None` if absent.
    pub fn choice<T: Copy>(&self, name: &str, choices: &[(&str, T)]) -> Result<Option<T>, Problem> {
        let Some(text) = self.text(name) else {
            return Ok(None);
        };
        choices
            .iter()
            .find(|(choice, _)| *choice == text)
            .map(|(_, value)| Some(*value))
            .ok_or_else(|| {
                let names: Vec<&str> = choices.iter().map(|(choice, _)| *choice).collect();
                Problem::invalid(
                    name,
                    "invalid_choice",
                    format!("{name} {text:?} is not one of {}", names.join(", ")),
                )
            })
    }

    /// The parameters a cursor must be issued with again: all but the
    /// cursor and the page size.
    pub fn continued(&self) -> Vec<(&str, String)> {
        self.pairs
            .iter()
            .filter(|(name, _)| name != "cursor" && name != "limit")
            .map(|(name, value)| (name.as_str(), value.clone()))
            .collect()
    }

    /// The query string of the next page.
    pub fn next_page(&self, cursor: &str) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (name, value) in &self.pairs {
            if name != "cursor" {
                out.append_pair(name, value);
            }
        }
        out.append_pair("cursor", cursor);
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn query(pairs: &[(&str, &str)]) -> Result<Query, Problem> {
        Query::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            &["from", "to", "limit", "cursor", "format"],
        )
    }

    fn code<T>(result: Result<T, Problem>) -> Result<T, (&'static str, Option<String>)> {
        result.map_err(|p| (p.code, p.parameter))
    }

    #[test]
    fn unknown_and_repeated_parameters_are_named() {
        assert_eq!(
            code(query(&[("limt", "5")]).map(|_| ())),
            Err(("unknown_parameter", Some("limt".into())))
        );
        assert_eq!(
            code(query(&[("limit", "5"), ("limit", "6")]).map(|_| ())),
            Err(("repeated_parameter", Some("limit".into())))
        );
    }

    #[test]
    fn limits_and_times_are_bounded() {
        let q = query(&[("limit", "100000")]).unwrap();
        assert_eq!(code(q.limit(10, 1000)).unwrap_err().0, "limit_out_of_range");
        let q = query(&[("limit", "0")]).unwrap();
        assert_eq!(code(q.limit(10, 1000)).unwrap_err().0, "limit_out_of_range");
        let q = query(&[("from", "2026-12-01T08:00:00Z"), ("to", "1796112000000")]).unwrap();
        assert_eq!(q.time("from").unwrap(), Some(1_796_112_000_000));
        assert_eq!(
            code(q.range("from", "to", 1, 10, 0)).unwrap_err().0,
            "empty_range"
        );
        let q = query(&[
            ("from", "2026-11-01T00:00:00Z"),
            ("to", "2026-12-01T00:00:00Z"),
        ])
        .unwrap();
        assert_eq!(
            code(q.range("from", "to", 1, 7 * 86_400_000, 0)).unwrap_err(),
            ("range_too_long", Some("from".into()))
        );
        let q = query(&[("from", "99999999999999999999")]).unwrap();
        assert_eq!(code(q.time("from")).unwrap_err().0, "invalid_time");
        let q = query(&[("from", "3000-01-01T00:00:00Z")]).unwrap();
        assert_eq!(code(q.time("from")).unwrap_err().0, "time_out_of_range");
    }

    #[test]
    fn the_next_page_repeats_the_query_with_the_cursor() {
        let q = query(&[
            ("from", "2026-12-01T08:00:00+01:00"),
            ("cursor", "old"),
            ("limit", "5"),
        ])
        .unwrap();
        assert_eq!(
            q.next_page("abc_-"),
            "from=2026-12-01T08%3A00%3A00%2B01%3A00&limit=5&cursor=abc_-"
        );
        assert_eq!(
            q.continued(),
            vec![("from", "2026-12-01T08:00:00+01:00".to_owned())]
        );
    }

    proptest! {
        /// Any value of any parameter is accepted or refused with a 400 naming it.
        #[test]
        fn any_value_is_parsed_or_named(value in ".{0,80}", name in "(from|to|limit|format)") {
            let q = query(&[(name.as_str(), value.as_str())]).unwrap();
            let outcomes = [
                q.limit(10, 1000).map(|_| ()),
                q.range("from", "to", 3_600_000, 86_400_000, 1_796_112_000_000).map(|_| ()),
                q.choice("format", &[("gpx", 1), ("geojson", 2)]).map(|_| ()),
            ];
            for outcome in outcomes {
                if let Err(problem) = outcome {
                    prop_assert_eq!(problem.status.as_u16(), 400);
                    prop_assert!(problem.parameter.is_some());
                }
            }
        }
    }
}
