//! Schedules: an EventBridge `rate(...)` rule invoking a function, played
//! with an optional speed-up so that a demo sees an hourly job within
//! seconds. EventBridge invokes asynchronously, and Lambda retries a failed
//! asynchronous invocation twice; so does this.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use super::PumpStats;
use crate::emulator::{ACCOUNT_ID, REGION};
use crate::invoker::{Invoker, request_id};
use crate::provision::{FunctionSpec, ScheduleSource};

/// Lambda's retries of a failed asynchronous invocation.
const ASYNC_RETRIES: u32 = 2;

/// The event EventBridge sends a function when `source` fires at `at_ms`.
pub fn scheduled_event(function: &FunctionSpec, source: &ScheduleSource, at_ms: i64) -> Value {
    let rule = source
        .rule_name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", function.name, source.name));
    let mut time = String::new();
    geotag::reading::write_rfc3339_millis(&mut time, at_ms);
    json!({
        "version": "0",
        "id": request_id(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": format!("{}Z", &time[..19]),
        "region": REGION,
        "resources": [format!("arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{rule}")],
        "detail": source.input.clone().unwrap_or_else(|| json!({})),
    })
}

pub(super) async fn run_schedule(
    source: ScheduleSource,
    function: FunctionSpec,
    invoker: Invoker,
    stats: Arc<PumpStats>,
    time_scale: f64,
    mut shutdown: watch::Receiver<bool>,
) {
    let period = source.period.div_f64(time_scale.max(f64::MIN_POSITIVE));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            break;
        }
        let event = scheduled_event(&function, &source, geotag::clock::now_ms());
        stats.schedule_ticks.fetch_add(1, Ordering::Relaxed);
        stats.in_flight.fetch_add(1, Ordering::SeqCst);
        for attempt in 0..=ASYNC_RETRIES {
            stats.invocations.fetch_add(1, Ordering::Relaxed);
            match invoker.invoke(&function, event.clone()).await {
                Ok(_) => break,
                Err(error) => {
                    stats.function_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(function = %function.logical_id, schedule = %source.name, attempt, error = %format!("{error:#}"), "scheduled invocation failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        stats.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
