//! SDK configuration, loaded once per cold start.

use aws_config::BehaviorVersion;
pub use aws_config::SdkConfig;
use aws_sdk_dynamodb::config::{Credentials, Region, SharedHttpClient};

/// The region the local stack plays (moto's default account lives there too).
pub const LOCAL_REGION: &str = "us-east-1";

/// Loads the shared SDK configuration from the environment.
///
/// In Lambda the credentials come from the function's environment variables,
/// which the chain reads first: no profile files or IMDS round trips at cold
/// start (the slow-chain trap of aws-sdk-rust #894). Locally, `AWS_ENDPOINT_URL`
/// points every client at the emulator.
pub async fn load() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client())
        .load()
        .await
}

/// The HTTPS client every SDK client of a stack shares: rustls on `ring`.
///
/// The SDK's own default is rustls on aws-lc-rs, whose C library made up a
/// seventh of each function's code on x86_64 (`cargo bloat`, 2026-12-06;
/// on arm64 not measured side by side); `ring` is
/// in the workspace for the broker already, and is what rustls was built on
/// for years. The choice is the workspace's `aws-smithy-http-client`
/// features: nothing enables the SDK's `default-https-client`.
pub fn https_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// SDK configuration for an emulator (moto, LocalStack) or a local Lambda
/// Invoke API (`cargo lambda watch`) at `endpoint`: the local region and
/// static dummy credentials, which none of them checks.
pub async fn for_emulator(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client())
        .endpoint_url(endpoint)
        .region(Region::new(LOCAL_REGION))
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "geotag-local",
        ))
        .load()
        .await
}

/// The same configuration, its requests sent through `http_client` (the
/// chaos run's fault injector, the request counter).
pub fn with_http_client(sdk: &SdkConfig, http_client: SharedHttpClient) -> SdkConfig {
    sdk.to_builder().http_client(http_client).build()
}
