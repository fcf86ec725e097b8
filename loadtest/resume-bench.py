#!/usr/bin/env python3
"""Cost of resuming many SSE clients at once (issue 14's benchmark).

usage: loadtest/resume-bench.py [CLIENTS=1000] [MISSED=100] [PARTITIONS=3]

Starts the release binary against the test broker on 127.0.0.1:19092 (kafka-up), opens
CLIENTS SSE streams, lets each see one event, closes them, produces MISSED events with
confluent-kafka, waits until the node has read them, then reconnects every client at once
with its Last-Event-ID and waits until each has received exactly the MISSED events it
missed. Prints the server CPU (utime+stime of the process, from /proc) spent on the resume,
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

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

BROKER = "127.0.0.1:19092"
HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.join(HERE, "..", "target", "release", "corebridge")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_ms(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / TICK


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def metric(api, prefix):
    text = urllib.request.urlopen(f"http://127.0.0.1:{api}/metrics", timeout=5).read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(prefix))


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


async def main(clients, missed, partitions):
    topic = f"resume-bench-{os.getpid()}"
    admin = AdminClient({"bootstrap.servers": BROKER})
    for f in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
        f.result(20)
    inbound, api = free_port(), free_port()
    tuning = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    tuning.write("[runtime]\nio_memory = 262144\n[sessions]\nresume_max_events = 256\n")
    tuning.close()
    env = dict(os.environ, INBOUND_PORT=str(inbound), API_HTTP_PORT=str(api), CB_INBOUND_BIND="127.0.0.1",
               KAFKA_BROKERS=BROKER, KAFKA_SOURCE_TOPICS=topic, CB_KAFKA_TOPIC_REFRESH_MS="300",
               MAX_CONNECTIONS_PER_MINUTE="100000", LOG_LEVEL="warn")
    srv = subprocess.Popen([BIN, "--tuning", tuning.name], env=env)
    try:
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
            for i in range(start, start + n):
                ev = {"specversion": "1.0", "type": "b.event", "source": "bench", "id": f"e{i}", "data": {"i": i}}
                prod.produce(topic, json.dumps(ev).encode(), key=f"k{i}".encode())
            prod.flush(30)

        # Every client sees one event, then goes away.
        deadline = time.time() + 60
        tasks = [asyncio.create_task(sse(inbound, None, 1, deadline)) for _ in range(clients)]
        await asyncio.sleep(2)
        produce(1, 0)
        first = await asyncio.gather(*tasks)
        assert all(len(g) == 1 for g, _ in first), "not every client saw the first event"
        read_before = metric(api, f'corebridge_kafka_records_consumed_total{{topic="{topic}"}}')
        produce(missed, 1)
        while metric(api, f'corebridge_kafka_records_consumed_total{{topic="{topic}"}}') < read_before + missed:
            time.sleep(0.05)
        # Everyone back at once.
        cpu0, t0 = cpu_ms(srv.pid), time.time()
        deadline = t0 + 120
        back = await asyncio.gather(*[sse(inbound, last, missed, deadline) for _, last in first])
        t1, cpu1 = time.time(), cpu_ms(srv.pid)
        want = {f"e{i}" for i in range(1, missed + 1)}
        exact = sum(1 for g, _ in back if len(g) == missed and set(g) == want)
        rss_kb = int([l for l in open(f"/proc/{srv.pid}/status") if l.startswith("VmRSS")][0].split()[1])
        cpu = cpu1 - cpu0
        print(json.dumps({
            "clients": clients, "missed_each": missed, "partitions": partitions,
            "clients_exact": exact,
            "server_cpu_ms": round(cpu, 1),
            "server_cpu_us_per_client": round(cpu * 1000 / clients, 1),
            "server_cpu_us_per_replayed_event": round(cpu * 1000 / (clients * missed), 2),
            "wall_s_until_all_caught_up": round(t1 - t0, 2),
            "server_rss_mb_after": round(rss_kb / 1024, 1),
            "resumes": metric(api, "corebridge_resumes_total"),
        }, indent=1))
        return 0 if exact == clients else 1
    finally:
        srv.terminate()
        srv.wait(10)
        os.unlink(tuning.name)


if __name__ == "__main__":
    a = [int(x) for x in sys.argv[1:]]
    sys.exit(asyncio.run(main(a[0] if a else 1000, a[1] if len(a) > 1 else 100, a[2] if len(a) > 2 else 3)))
