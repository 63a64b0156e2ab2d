//! Ingest's configuration, from the environment variables template.yaml sets.

use geotag::Limits;
use geotag::budget::RateLimit;
use geotag::store::UnregisteredDevices;
use geotag_runtime::emf;
use geotag_runtime::{ConfigError, Environment, FromEnvironment};

/// Configuration from the environment variables that template.yaml sets.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `TELEMETRY_TABLE`
    pub telemetry_table: String,
    /// `INGEST_REJECTIONS_URL`: where refused messages go.
    pub rejections_queue_url: String,
    /// `INGEST_QUARANTINE_URL`: where messages over their tag's budget are parked.
    pub quarantine_queue_url: String,
    /// `DEVICE_RATES_TABLE`: each tag's readings counted by the minute.
    pub device_rates_table: String,
    /// `DEVICE_READINGS_PER_MINUTE` (60): a tag's budget; 0 parks every
    /// counted minute (a tag never counted is never parked).
    pub rate_limit: RateLimit,
    /// `DEVICES_TABLE`: the registry's tags.
    pub devices_table: String,
    /// `UNREGISTERED_DEVICES`: `refuse` (the default) or `admit`.
    pub unregistered: UnregisteredDevices,
    /// `METRICS_NAMESPACE` and `AWS_LAMBDA_FUNCTION_NAME`
    pub metrics: emf::Settings,
    /// `RETENTION_DAYS` (30), `MAX_FUTURE_SKEW_SECONDS` (300),
    /// `MAX_MESSAGE_BYTES` (262144)
    pub limits: Limits,
}

impl FromEnvironment for Config {
    fn read(env: &Environment) -> Result<Config, ConfigError> {
        let defaults = Limits::default();
        Ok(Config {
            telemetry_table: env.required("TELEMETRY_TABLE")?,
            rejections_queue_url: env.required("INGEST_REJECTIONS_URL")?,
            quarantine_queue_url: env.required("INGEST_QUARANTINE_URL")?,
            device_rates_table: env.required("DEVICE_RATES_TABLE")?,
            rate_limit: RateLimit {
                readings_per_minute: env.parsed("DEVICE_READINGS_PER_MINUTE", 60)?,
            },
            devices_table: env.required("DEVICES_TABLE")?,
            unregistered: env.parsed("UNREGISTERED_DEVICES", UnregisteredDevices::Refuse)?,
            metrics: env.metrics("ingest"),
            limits: Limits {
                retention_days: env.parsed("RETENTION_DAYS", defaults.retention_days)?,
                max_future_skew_ms: env
                    .parsed(
                        "MAX_FUTURE_SKEW_SECONDS",
                        defaults.max_future_skew_ms / 1000,
                    )?
                    .saturating_mul(1000),
                max_message_bytes: env.parsed("MAX_MESSAGE_BYTES", defaults.max_message_bytes)?,
            },
        })
    }
}
