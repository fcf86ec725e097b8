//! The end of the retry chain: messages whose retries are exhausted, written to
//! `ER_CLICKSTREAM_RETRY_S3_BUCKET` at `<CLICKSTREAM_RETRY_S3_PATH_PREFIX>/<name>` with the AWS
//! SDK (path-style addressing when a custom endpoint is set). A write that fails is tried
//! again with back-off until it succeeds: the message's offset waits, nothing is dropped.

use aws_sdk_s3::primitives::ByteStream;
use std::time::Duration;

pub struct Bucket {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

impl Bucket {
    pub async fn new(
        bucket: String,
        prefix: String,
        region: String,
        endpoint: Option<String>,
    ) -> Bucket {
        let sdk = crate::broker::aws::sdk_config(&region).await;
        let mut conf = aws_sdk_s3::config::Builder::from(&sdk);
        if let Some(e) = endpoint {
            conf = conf.endpoint_url(e).force_path_style(true);
        }
        Bucket {
            client: aws_sdk_s3::Client::from_conf(conf.build()),
            bucket,
            prefix,
        }
    }

    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    pub async fn put(&self, name: &str, body: &[u8]) {
        let key = self.key(name);
        let mut backoff = Duration::from_millis(200);
        let mut logged = false;
        loop {
            let sent = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .content_type("application/json")
                .body(ByteStream::from(body.to_vec()))
                .send()
                .await;
            match sent {
                Ok(_) => return,
                Err(e) => {
                    if !logged {
                        tracing::warn!(bucket = %self.bucket, key = %key,
                            error = %crate::broker::aws::aws_error(&e),
                            "S3 write failed (whose fault: S3 or the network); retrying until it succeeds");
                        logged = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}
