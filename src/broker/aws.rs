//! What every AWS SDK client of the process shares (Kinesis, DynamoDB, S3): one HTTP client
//! on rustls with ring (the SDK's default would bring aws-lc, a second TLS stack), the default
//! credential chain, and error text that includes the service's own message.

/// The SDK's configuration with an HTTP client on rustls with ring (the default would bring
/// aws-lc) and the default credential chain.
pub async fn sdk_config(region: &str) -> aws_config::SdkConfig {
    use aws_smithy_http_client::tls;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .http_client(http)
        .load()
        .await
}

/// An SDK error with its service message when there is one (the `Display` of the outer
/// error is only "service error").
pub fn aws_error<E, R>(e: &aws_sdk_kinesis::error::SdkError<E, R>) -> String
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use std::error::Error;
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
