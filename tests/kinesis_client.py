#!/usr/bin/env python3
"""The independent Kinesis client of the tests (boto3):

    kinesis_client.py ENDPOINT create STREAM SHARDS     waits until ACTIVE
    kinesis_client.py ENDPOINT put STREAM KEY DATA      prints "shard sequence"
    kinesis_client.py ENDPOINT read STREAM              every record from TRIM_HORIZON, one
                                                        JSON line each {key, data, shard}
    kinesis_client.py ENDPOINT split STREAM             splits the first open shard in two
    kinesis_client.py ENDPOINT shards STREAM            one line per shard: id parent closed
    kinesis_client.py ENDPOINT delete STREAM            (kinesis-local allows 50 shards in all)
    kinesis_client.py ENDPOINT consumers STREAM         registered consumers: name status
"""
import json
import sys
import time

import boto3


def client(endpoint):
    return boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def wait_active(k, stream):
    for _ in range(100):
        if k.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            return
        time.sleep(0.1)
    raise SystemExit(f"{stream} not ACTIVE")


def shards(k, stream):
    return k.list_shards(StreamName=stream)["Shards"]


def main():
    endpoint, cmd, stream = sys.argv[1], sys.argv[2], sys.argv[3]
    k = client(endpoint)
    if cmd == "create":
        k.create_stream(StreamName=stream, ShardCount=int(sys.argv[4]))
        wait_active(k, stream)
    elif cmd == "put":
        r = k.put_record(StreamName=stream, PartitionKey=sys.argv[4], Data=sys.argv[5].encode())
        print(r["ShardId"], r["SequenceNumber"])
    elif cmd == "read":
        for s in shards(k, stream):
            it = k.get_shard_iterator(StreamName=stream, ShardId=s["ShardId"],
                                      ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            while it:
                r = k.get_records(ShardIterator=it, Limit=1000)
                for rec in r["Records"]:
                    print(json.dumps({"key": rec["PartitionKey"], "data": rec["Data"].decode(),
                                      "shard": s["ShardId"]}))
                if not r["Records"]:
                    break
                it = r.get("NextShardIterator")
    elif cmd == "split":
        s = next(s for s in shards(k, stream) if "EndingSequenceNumber" not in s["SequenceNumberRange"])
        lo = int(s["HashKeyRange"]["StartingHashKey"])
        hi = int(s["HashKeyRange"]["EndingHashKey"])
        k.split_shard(StreamName=stream, ShardToSplit=s["ShardId"], NewStartingHashKey=str((lo + hi) // 2))
        wait_active(k, stream)
    elif cmd == "delete":
        k.delete_stream(StreamName=stream, EnforceConsumerDeletion=True)
    elif cmd == "consumers":
        arn = k.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
        for c in k.list_stream_consumers(StreamARN=arn)["Consumers"]:
            print(c["ConsumerName"], c["ConsumerStatus"])
    elif cmd == "shards":
        for s in shards(k, stream):
            closed = "EndingSequenceNumber" in s["SequenceNumberRange"]
            print(s["ShardId"], s.get("ParentShardId", "-"), "closed" if closed else "open")
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
