#!/usr/bin/env python3
"""The independent Kafka client of the integration tests (confluent-kafka / librdkafka).

usage:
  kafka_client.py BROKER create TOPIC PARTITIONS
  kafka_client.py BROKER produce TOPIC VALUE [--key K] [--header NAME=VALUE ...] [--partition N] [--java-partitioner]
                                    [--timestamp-ms MS]
      prints "PARTITION OFFSET" of the acknowledged record
  kafka_client.py BROKER produce-many TOPIC N APP PREFIX [RATE]
      N clickstream messages {"appId": APP, "messageId": "PREFIX-i"}, keyed k<i % 16>
  kafka_client.py BROKER consume TOPIC COUNT [--timeout S] [--from-zero]
      prints one JSON line per record: {"partition", "offset", "key", "value", "headers"}
  kafka_client.py BROKER committed TOPIC GROUP
      prints {"PARTITION": OFFSET, ...}: the group's committed offsets (-1001: none)
"""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def main(argv):
    broker, cmd, topic = argv[1], argv[2], argv[3]
    common = {"bootstrap.servers": broker, "broker.address.family": "v4"}
    # Extra client settings (TLS, SASL) for brokers behind the test fronts, as JSON.
    import os
    common.update(json.loads(os.environ.get("KAFKA_CLIENT_CONFIG") or "{}"))
    if cmd == "create":
        admin = AdminClient(common)
        fs = admin.create_topics([NewTopic(topic, num_partitions=int(argv[4]), replication_factor=1)])
        for f in fs.values():
            try:
                f.result(timeout=20)
            except KafkaException as e:
                if "TOPIC_ALREADY_EXISTS" not in str(e):
                    raise
        print("created")
        return 0
    if cmd == "produce":
        value = argv[4]
        key = None
        headers = []
        partition = None
        extra_ts = {}
        conf = dict(common)
        rest = argv[5:]
        i = 0
        while i < len(rest):
            if rest[i] == "--key":
                key = rest[i + 1]
                i += 2
            elif rest[i] == "--header":
                name, _, v = rest[i + 1].partition("=")
                headers.append((name, v.encode()))
                i += 2
            elif rest[i] == "--partition":
                partition = int(rest[i + 1])
                i += 2
            elif rest[i] == "--timestamp-ms":
                extra_ts = {"timestamp": int(rest[i + 1])}
                i += 2
            elif rest[i] == "--java-partitioner":
                # librdkafka's Java-compatible partitioner: the reference for murmur2.
                conf["partitioner"] = "murmur2_random"
                i += 1
            else:
                raise SystemExit(f"unknown argument {rest[i]}")
        p = Producer(conf)
        result = {}

        def done(err, msg):
            if err is not None:
                result["err"] = err
            else:
                result["pos"] = (msg.partition(), msg.offset())

        extra = dict(extra_ts) if partition is None else {"partition": partition, **extra_ts}
        p.produce(topic, value=value.encode(), key=key.encode() if key else None, headers=headers,
                  on_delivery=done, **extra)
        p.flush(20)
        if "pos" not in result:
            print(f"produce failed: {result.get('err')}", file=sys.stderr)
            return 1
        print(*result["pos"])
        return 0
    if cmd == "produce-all":
        # Every VALUE, in order, to partition 0, in one session (faster than one call each).
        p = Producer(common)
        failed = []
        for v in argv[4:]:
            p.produce(topic, value=v.encode(), partition=0,
                      on_delivery=lambda err, msg: err and failed.append(err))
        p.flush(30)
        if failed:
            print(f"{len(failed)} failed: {failed[0]}", file=sys.stderr)
            return 1
        print(len(argv) - 4)
        return 0
    if cmd == "produce-many":
        # N clickstream messages of app APP, messageId PREFIX-i, keyed by i % 16, RATE per second.
        n, app, prefix = int(argv[4]), argv[5], argv[6]
        rate = float(argv[7]) if len(argv) > 7 else 0
        p = Producer(dict(common, **{"linger.ms": 5}))
        failed = []
        start = time.time()
        for i in range(n):
            v = json.dumps({"appId": app, "messageId": f"{prefix}-{i}", "event": "page", "n": i})
            p.produce(topic, value=v.encode(), key=f"k{i % 16}".encode(),
                      on_delivery=lambda err, msg: err and failed.append(err))
            p.poll(0)
            if rate:
                due = start + (i + 1) / rate
                if due > time.time():
                    time.sleep(due - time.time())
        p.flush(30)
        if failed:
            print(f"{len(failed)} failed: {failed[0]}", file=sys.stderr)
            return 1
        print(n)
        return 0
    if cmd == "consume":
        count = int(argv[4])
        timeout = float(argv[argv.index("--timeout") + 1]) if "--timeout" in argv else 20.0
        # A fresh group each time: every call reads the topic from the start.
        import uuid

        c = Consumer(dict(common, **{"group.id": f"test-{uuid.uuid4()}", "auto.offset.reset": "earliest",
                                     "enable.auto.commit": False}))
        if "--from-zero" in argv:
            # Every partition from offset 0 itself, without asking the broker where the log
            # starts (the test broker has answered past a partition's first record).
            from confluent_kafka import TopicPartition
            c.close()
            c = Consumer(dict(common, **{"group.id": f"test-{uuid.uuid4()}", "enable.auto.commit": False,
                                         "isolation.level": "read_uncommitted"}))
            parts = c.list_topics(topic, timeout=10).topics[topic].partitions
            c.assign([TopicPartition(topic, p, 0) for p in parts])
        else:
            c.subscribe([topic])
        got = 0
        deadline = time.time() + timeout
        while got < count and time.time() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            print(json.dumps({
                "partition": m.partition(),
                "offset": m.offset(),
                "key": m.key().decode() if m.key() else None,
                "value": m.value().decode(),
                "headers": {k: v.decode() for k, v in (m.headers() or [])},
            }), flush=True)
            got += 1
        c.close()
        return 0 if got == count else 1
    if cmd == "committed":
        from confluent_kafka import TopicPartition
        c = Consumer(dict(common, **{"group.id": argv[4], "enable.auto.commit": False}))
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        got = c.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        print(json.dumps({str(tp.partition): tp.offset for tp in got}))
        c.close()
        return 0
    raise SystemExit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
