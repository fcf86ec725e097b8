//! Puts records for the proxy's `target: kinesis` and for replies: whatever waits when a call
//! starts goes in one `PutRecords` per stream (at most 500 records, Kinesis's limit); entries
//! Kinesis fails (throttling, internal errors) are put again with back-off; each request is
//! answered once its record is acknowledged, or with the reason it could not be.

use super::{Ctx, PutError, PutJob};
use crate::broker::aws::aws_error;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const MAX_BATCH: usize = 500;
const ATTEMPTS: u32 = 4;

pub(super) async fn serve(
    ctx: Arc<Ctx>,
    client: aws_sdk_kinesis::Client,
    jobs: async_channel::Receiver<PutJob>,
) {
    while let Ok(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let mut by_stream: BTreeMap<String, Vec<PutJob>> = BTreeMap::new();
        for j in batch {
            by_stream.entry(j.req.stream.clone()).or_default().push(j);
        }
        for (stream, jobs) in by_stream {
            tokio::spawn(put(ctx.clone(), client.clone(), stream, jobs));
        }
    }
}

async fn put(ctx: Arc<Ctx>, client: aws_sdk_kinesis::Client, stream: String, jobs: Vec<PutJob>) {
    let mut pending: Vec<PutJob> = jobs;
    let mut backoff = Duration::from_millis(100);
    for attempt in 1..=ATTEMPTS {
        let entries: Result<Vec<_>, _> = pending
            .iter()
            .map(|j| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(j.req.data.clone()))
                    .partition_key(&j.req.partition_key)
                    .build()
            })
            .collect();
        let entries = match entries {
            Ok(e) => e,
            Err(e) => {
                answer_all(&ctx, pending, PutError::Rejected(e.to_string()));
                return;
            }
        };
        let sent = client
            .put_records()
            .stream_name(&stream)
            .set_records(Some(entries))
            .send()
            .await;
        let out = match sent {
            Ok(o) => o,
            Err(e) => {
                let svc = e.as_service_error();
                let refused = svc.is_some_and(|s| {
                    s.is_resource_not_found_exception()
                        || s.is_invalid_argument_exception()
                        || s.is_access_denied_exception()
                });
                if refused {
                    answer_all(
                        &ctx,
                        pending,
                        PutError::Rejected(format!("stream {stream:?}: {}", aws_error(&e))),
                    );
                    return;
                }
                if attempt == ATTEMPTS {
                    ctx.metrics.up.set(0);
                    answer_all(&ctx, pending, PutError::Unavailable(aws_error(&e)));
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                continue;
            }
        };
        ctx.metrics.up.set(1);
        let mut retry = Vec::new();
        for (job, result) in pending.into_iter().zip(out.records()) {
            match (
                result.shard_id(),
                result.sequence_number(),
                result.error_code(),
            ) {
                (Some(shard), Some(seq), None) => {
                    ctx.metrics.put_ok.inc();
                    let (_, reply) = job.split();
                    reply.send(Ok((shard.to_string(), seq.to_string())));
                }
                (_, _, code) => {
                    if attempt == ATTEMPTS {
                        ctx.metrics.put_failed.inc();
                        let msg = format!(
                            "{} {}",
                            code.unwrap_or("no sequence number"),
                            result.error_message().unwrap_or_default()
                        );
                        let (_, reply) = job.split();
                        reply.send(Err(PutError::Unavailable(msg.trim().to_string())));
                    } else {
                        retry.push(job);
                    }
                }
            }
        }
        if retry.is_empty() {
            return;
        }
        pending = retry;
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
}

fn answer_all(ctx: &Ctx, jobs: Vec<PutJob>, e: PutError) {
    for j in jobs {
        ctx.metrics.put_failed.inc();
        let (_, reply) = j.split();
        reply.send(Err(e.clone()));
    }
}
