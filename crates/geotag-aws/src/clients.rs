//! SDK configuration, loaded once per cold start.

use aws_config::BehaviorVersion;
pub use aws_config::SdkConfig;

/// Loads the shared SDK configuration from the environment.
///
/// In Lambda the credentials come from the function's environment variables,
/// which the chain reads first: no profile files or IMDS round trips at cold
/// start (the slow-chain trap of aws-sdk-rust #894). Locally, `AWS_ENDPOINT_URL`
/// points every client at the emulator.
pub async fn load() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}
