#!/usr/bin/env python3
"""Cost of resuming many SSE clients at once (issue 14's benchmark).

usage: loadtest/resume-bench.py [CLIENTS=1000] [MISSED=100] [PARTITIONS=3]
       RESUME_SOURCE=http loadtest/resume-bench.py ...   (no Kafka: the node's ring)
       RESUME_SOURCE=http RESUME_REDIS=redis://127.0.0.1:6391/0 loadtest/resume-bench.py ...
           (no Kafka, two nodes: clients resume on the other node, from Redis)

Starts the release binary against the test broker on 127.0.0.1:19092 (kafka-up), opens
CLIENTS SSE streams, lets each see one event, closes them, produces MISSED events with
confluent-kafka (or publishes them over HTTP), waits until the node has them, then
reconnects every client at once with its Last-Event-ID and waits until each has received
exactly the MISSED events it missed. Prints the server CPU (utime+stime of the process, from /proc) spent on the resume,
per client and per replayed event, and the wall time until the last client caught up.
Bounded: 120 s for the resume. Loopback only.
"""
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from benchlib import BIN, cpu_ms, free_port, metric

SOURCE = os.environ.get("RESUME_SOURCE", "kafka")
REDIS = os.environ.get("RESUME_REDIS")
if SOURCE == "kafka":
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

BROKER = "127.0.0.1:19092"


async def sse(port, last_id, want, deadline):
    """Opens a stream, reads until `want` b.event events; returns (ids, last SSE id)."""
    subs = urllib.parse.quote(json.dumps([{"eventType": "b.event"}]))
    r, w = await asyncio.open_connection("127.0.0.1", port)
    head = f"GET /_rig/v1/connection/sse?subscriptions={subs} HTTP/1.1\r\nhost: x\r\n"
    if last_id:
        head += f"last-event-id: {last_id}\r\n"
    w.write((head + "\r\n").encode())
    await w.drain()
    got, last, event, buf, cur_id = [], None, None, b"", None
    while len(got) < want:
        chunk = await asyncio.wait_for(r.read(65536), timeout=max(0.1, deadline - time.time()))
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            line = line.rstrip(b"\r")
            if line.startswith(b"id: "):
                cur_id = line[4:].decode()
            elif line.startswith(b"event: "):
                event = line[7:].decode()
            elif line.startswith(b"data: ") and event == "b.event":
                got.append(json.loads(line[6:])["id"])
                last = cur_id
    w.close()
    return got, last


def start(extra):
    inbound, api = free_port(), free_port()
    tuning = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    tuning.write("[runtime]\n[sessions]\nresume_max_events = 256\n")
    tuning.close()
    env = dict(os.environ, INBOUND_PORT=str(inbound), API_HTTP_PORT=str(api), CB_INBOUND_BIND="127.0.0.1",
               MAX_CONNECTIONS_PER_MINUTE="100000", LOG_LEVEL="warn", **extra)
    srv = subprocess.Popen([BIN, "--tuning", tuning.name], env=env)
    for _ in range(100):
        try:
            metric(api, "corebridge_connections")
            break
        except Exception:
            time.sleep(0.1)
    return srv, inbound, api, tuning.name


def publish(port, ev):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/_rig/v1/events", data=json.dumps(ev).encode(),
                                 headers={"content-type": "application/cloudevents+json"})
    urllib.request.urlopen(req, timeout=10).read()


async def main(clients, missed, partitions):
    topic = f"resume-bench-{os.getpid()}"
    extra = {}
    if SOURCE == "kafka":
        admin = AdminClient({"bootstrap.servers": BROKER})
        for f in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
            f.result(20)
        extra = dict(KAFKA_BROKERS=BROKER, KAFKA_SOURCE_TOPICS=topic, CB_KAFKA_TOPIC_REFRESH_MS="300")
    elif REDIS:
        extra = dict(CB_REDIS_URL=REDIS, CB_REDIS_KEY_PREFIX=f"bench{os.getpid()}:")
    servers = [start(extra)]
    if SOURCE != "kafka" and REDIS:
        servers.append(start(extra))
    srv, inbound, api, _ = servers[0]
    # Where clients come back: the other node when there is one.
    back_srv, back_inbound, back_api, _ = servers[-1]
    try:
        if SOURCE == "kafka":
            for _ in range(200):
                try:
                    if metric(api, f'corebridge_kafka_consumer_lag{{topic="{topic}"') >= 0 and \
                            urllib.request.urlopen(f"http://127.0.0.1:{api}/metrics").read().decode().count(f'topic="{topic}",partition=') >= partitions:
                        break
                except Exception:
                    pass
                time.sleep(0.1)
            prod = Producer({"bootstrap.servers": BROKER, "linger.ms": 5})

        def produce(n, start):
            evs = [{"specversion": "1.0", "type": "b.event", "source": "bench", "id": f"e{i}", "data": {"i": i}}
                   for i in range(start, start + n)]
            if SOURCE != "kafka":
                for ev in evs:
                    publish(inbound, ev)
                return
            for i, ev in zip(range(start, start + n), evs):
                prod.produce(topic, json.dumps(ev).encode(), key=f"k{i}".encode())
            prod.flush(30)

        def wait_for(total):
            if SOURCE == "kafka":
                name = f'corebridge_kafka_records_consumed_total{{topic="{topic}"}}'
            elif REDIS:
                name = "corebridge_redis_events_written_total"
            else:
                time.sleep(0.5)  # a 202 means queued on every shard; let them apply it
                return
            while metric(api, name) < total:
                time.sleep(0.05)

        # Every client sees one event, then goes away.
        deadline = time.time() + 60
        tasks = [asyncio.create_task(sse(inbound, None, 1, deadline)) for _ in range(clients)]
        await asyncio.sleep(2)
        produce(1, 0)
        first = await asyncio.gather(*tasks)
        assert all(len(g) == 1 for g, _ in first), "not every client saw the first event"
        produce(missed, 1)
        wait_for(missed + 1)
        # Everyone back at once.
        cpu0, t0 = cpu_ms(back_srv.pid), time.time()
        deadline = t0 + 120
        back = await asyncio.gather(*[sse(back_inbound, last, missed, deadline) for _, last in first])
        t1, cpu1 = time.time(), cpu_ms(back_srv.pid)
        want = {f"e{i}" for i in range(1, missed + 1)}
        exact = sum(1 for g, _ in back if len(g) == missed and set(g) == want)
        rss_kb = int([l for l in open(f"/proc/{back_srv.pid}/status") if l.startswith("VmRSS")][0].split()[1])
        cpu = cpu1 - cpu0
        print(json.dumps({
            "source": SOURCE + (" via redis on another node" if len(servers) > 1 else ""),
            "clients": clients, "missed_each": missed,
            "partitions": partitions if SOURCE == "kafka" else "one per shard",
            "clients_exact": exact,
            "server_cpu_ms": round(cpu, 1),
            "server_cpu_us_per_client": round(cpu * 1000 / clients, 1),
            "server_cpu_us_per_replayed_event": round(cpu * 1000 / (clients * missed), 2),
            "wall_s_until_all_caught_up": round(t1 - t0, 2),
            "server_rss_mb_after": round(rss_kb / 1024, 1),
            "resumes": metric(back_api, "corebridge_resumes_total"),
        }, indent=1))
        return 0 if exact == clients else 1
    finally:
        for s, _, _, t in servers:
            s.terminate()
            s.wait(10)
            os.unlink(t)


if __name__ == "__main__":
    a = [int(x) for x in sys.argv[1:]]
    sys.exit(asyncio.run(main(a[0] if a else 1000, a[1] if len(a) > 1 else 100, a[2] if len(a) > 2 else 3)))
