//! Per-node, per-shard checkpoints in the DynamoDB table `KINESIS_APP_NAME` (created when
//! missing, on demand billing). Key `leaseKey` = `<node id>/<stream>/<shard id>`; attribute
//! `checkpoint` = the last sequence number delivered to the shards' queues, or `SHARD_END`.
//! Every node keeps its own rows: each node reads every shard (no leases to share).

use crate::broker::aws::aws_error;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TableStatus,
};
use std::time::Duration;

pub const SHARD_END: &str = "SHARD_END";

pub struct Table {
    client: aws_sdk_dynamodb::Client,
    name: String,
    node: String,
    ready: tokio::sync::OnceCell<()>,
}

impl Table {
    pub fn new(client: aws_sdk_dynamodb::Client, name: String, node: String) -> Table {
        Table {
            client,
            name,
            node,
            ready: tokio::sync::OnceCell::new(),
        }
    }

    fn key(&self, stream: &str, shard: &str) -> AttributeValue {
        AttributeValue::S(format!("{}/{stream}/{shard}", self.node))
    }

    /// The table exists and is active (created here the first time).
    async fn ensure(&self) -> Result<(), String> {
        self.ready
            .get_or_try_init(|| async {
                match self
                    .client
                    .describe_table()
                    .table_name(&self.name)
                    .send()
                    .await
                {
                    Ok(d)
                        if d.table().and_then(|t| t.table_status())
                            == Some(&TableStatus::Active) =>
                    {
                        return Ok(())
                    }
                    Ok(_) => {}
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_resource_not_found_exception()) =>
                    {
                        let created = self
                            .client
                            .create_table()
                            .table_name(&self.name)
                            .billing_mode(BillingMode::PayPerRequest)
                            .attribute_definitions(
                                AttributeDefinition::builder()
                                    .attribute_name("leaseKey")
                                    .attribute_type(ScalarAttributeType::S)
                                    .build()
                                    .map_err(|e| e.to_string())?,
                            )
                            .key_schema(
                                KeySchemaElement::builder()
                                    .attribute_name("leaseKey")
                                    .key_type(KeyType::Hash)
                                    .build()
                                    .map_err(|e| e.to_string())?,
                            )
                            .send()
                            .await;
                        if let Err(e) = created {
                            // Another node may have created it meanwhile.
                            if !e
                                .as_service_error()
                                .is_some_and(|s| s.is_resource_in_use_exception())
                            {
                                return Err(format!(
                                    "create table {}: {}",
                                    self.name,
                                    aws_error(&e)
                                ));
                            }
                        }
                        tracing::info!(table = %self.name, "created the Kinesis checkpoint table");
                    }
                    Err(e) => {
                        return Err(format!("describe table {}: {}", self.name, aws_error(&e)))
                    }
                }
                for _ in 0..60 {
                    let d = self
                        .client
                        .describe_table()
                        .table_name(&self.name)
                        .send()
                        .await;
                    if let Ok(d) = d {
                        if d.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                            return Ok(());
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(format!(
                    "table {} did not become active within 30 s",
                    self.name
                ))
            })
            .await
            .map(|_| ())
    }

    /// This node's checkpoint for a shard, if any.
    pub async fn get(&self, stream: &str, shard: &str) -> Result<Option<String>, String> {
        self.ensure().await?;
        let got = self
            .client
            .get_item()
            .table_name(&self.name)
            .key("leaseKey", self.key(stream, shard))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| format!("read checkpoint: {}", aws_error(&e)))?;
        Ok(got
            .item()
            .and_then(|i| i.get("checkpoint"))
            .and_then(|v| v.as_s().ok())
            .cloned())
    }

    pub async fn put(&self, stream: &str, shard: &str, checkpoint: &str) -> Result<(), String> {
        self.ensure().await?;
        self.client
            .put_item()
            .table_name(&self.name)
            .item("leaseKey", self.key(stream, shard))
            .item("checkpoint", AttributeValue::S(checkpoint.to_string()))
            .item("node", AttributeValue::S(self.node.clone()))
            .item(
                "updatedMs",
                AttributeValue::N(crate::auth::blacklist::now_ms().to_string()),
            )
            .send()
            .await
            .map_err(|e| format!("write checkpoint: {}", aws_error(&e)))?;
        Ok(())
    }
}
