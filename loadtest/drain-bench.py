#!/usr/bin/env python3
"""A graceful drain under load (issue 15): SIGTERM to a node holding CLIENTS SSE streams while
events flow through Kafka; the clients follow the `retry:` hint to a second node with their
Last-Event-ID and must miss nothing.

usage: loadtest/drain-bench.py [CLIENTS=10000] [RATE=10] [SECONDS=8]

Needs the test broker on 127.0.0.1:19092 (kafka-up) and the release binary. Starts nodes A and
B (same topic, 3 partitions), connects CLIENTS SSE streams to A (spread over 127.0.0.2-5, two
processes), produces RATE events/s numbered from 0 for SECONDS, sends A SIGTERM halfway, and
reports how long A took from SIGTERM to exit (and its exit status), how long the clients took
to be back on B, and per client whether it got every event from its first one on exactly once.
Bounded: every wait has a deadline. Loopback only.
"""
import asyncio
import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from benchlib import BIN, free_port, open_sse, sse_lines

BROKER = "127.0.0.1:19092"
NUM = re.compile(rb'"i":(\d+)')


def start(topic, tuning):
    inbound, api = free_port(), free_port()
    env = dict(os.environ, INBOUND_PORT=str(inbound), API_HTTP_PORT=str(api), CB_INBOUND_BIND="0.0.0.0",
               KAFKA_BROKERS=BROKER, KAFKA_SOURCE_TOPICS=topic, CB_KAFKA_TOPIC_REFRESH_MS="300",
               CB_KAFKA_FETCH_WAIT_MS="20", MAX_CONNECTIONS_PER_MINUTE="10000000", LOG_LEVEL="warn")
    p = subprocess.Popen([BIN, "--tuning", tuning], env=env)
    for _ in range(300):
        try:
            m = urllib.request.urlopen(f"http://127.0.0.1:{api}/metrics", timeout=2).read().decode()
            if m.count(f'corebridge_kafka_consumer_lag{{topic="{topic}"') >= 3:
                return p, inbound, api
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit("node did not start reading the topic")


async def client(src, port_a, port_b, deadline, out):
    """One EventSource-like client: on A until its stream ends, then (after the retry hint)
    on B with its last id. Records the event numbers it got and when it was back."""
    got, last_id, retry_ms, port, back_at = [], None, 1000, port_a, None
    while time.time() < deadline:
        try:
            r, w = await open_sse(port, src, "d.event", last_id)
        except OSError:
            await asyncio.sleep(0.2)
            continue
        if port == port_b:
            back_at = time.time()
        try:
            async for line in sse_lines(r, deadline):
                if line.startswith(b"id: "):
                    last_id = line[4:].rstrip(b"\r").decode()
                elif line.startswith(b"retry: "):
                    retry_ms = int(line[7:])
                elif line.startswith(b"data: ") and b'"d.event"' in line:
                    m = NUM.search(line)
                    if m:
                        got.append(int(m.group(1)))
        except (ConnectionError, OSError):
            pass
        w.close()
        if port == port_b:
            break
        port = port_b
        await asyncio.sleep(retry_ms / 1000)
    out.append((got, back_at))


def worker(src_ips, n, port_a, port_b, deadline, q):
    async def main():
        out = []
        tasks = []
        for i in range(n):
            tasks.append(asyncio.create_task(client(src_ips[i % len(src_ips)], port_a, port_b, deadline, out)))
            if i % 500 == 499:
                await asyncio.sleep(0.1)
        await asyncio.gather(*tasks)
        return out
    q.put(asyncio.run(main()))


def main(clients, rate, seconds):
    topic = f"drain-bench-{os.getpid()}"
    admin = AdminClient({"bootstrap.servers": BROKER})
    for f in admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)]).values():
        f.result(20)
    tuning = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    tuning.write("[runtime]\n[shutdown]\ndrain_s = 5\n")
    tuning.close()
    a, port_a, api_a = start(topic, tuning.name)
    b, port_b, api_b = start(topic, tuning.name)
    try:
        deadline = time.time() + 60 + seconds
        q = mp.Queue()
        ips = [f"127.0.0.{i}" for i in range(2, 6)]
        procs = [mp.Process(target=worker, args=(ips[k::2], clients // 2, port_a, port_b, deadline, q))
                 for k in range(2)]
        for p in procs:
            p.start()
        while True:
            m = urllib.request.urlopen(f"http://127.0.0.1:{api_a}/metrics").read().decode()
            conns = sum(float(l.split()[-1]) for l in m.splitlines() if l.startswith('corebridge_connections{transport="sse"}'))
            if conns >= clients or time.time() > deadline - seconds - 10:
                break
            time.sleep(0.2)
        prod = Producer({"bootstrap.servers": BROKER, "linger.ms": 2})
        total = int(rate * seconds)
        sigterm_at = exit_at = None
        status = None
        t0 = time.time()
        for i in range(total):
            ev = {"specversion": "1.0", "type": "d.event", "source": "drain", "id": f"d{i}", "data": {"i": i}}
            prod.produce(topic, json.dumps(ev, separators=(",", ":")).encode(), key=f"k{i}".encode())
            prod.poll(0)
            if i == total // 2:
                sigterm_at = time.time()
                a.send_signal(signal.SIGTERM)
            if sigterm_at and exit_at is None and a.poll() is not None:
                exit_at, status = time.time(), a.returncode
            time.sleep(max(0, t0 + (i + 1) / rate - time.time()))
        prod.flush(10)
        if exit_at is None:
            try:
                status = a.wait(30)
            except subprocess.TimeoutExpired:
                status = None
            exit_at = time.time()
        results = []
        for _ in procs:
            results.extend(q.get(timeout=max(1, deadline - time.time() + 30)))
        for p in procs:
            p.join(10)
        exact = lost = dup = 0
        back = []
        for got, back_at in results:
            if back_at:
                back.append(back_at - sigterm_at)
            if not got:
                continue
            want = set(range(got[0], total))
            s = set(got)
            lost += len(want - s)
            dup += len(got) - len(s)
            exact += s == want and len(got) == len(s)
        back.sort()
        pct = lambda p: round(back[min(len(back) - 1, int(len(back) * p))], 2) if back else None
        print(json.dumps({
            "clients": clients, "events": total, "rate_per_s": rate,
            "clients_with_events": sum(1 for g, _ in results if g),
            "clients_exact": exact, "events_lost": lost, "duplicates": dup,
            "drain_s_sigterm_to_exit": round(exit_at - sigterm_at, 2), "exit_status": status,
            "back_on_b_s_p50_p99_max": [pct(0.5), pct(0.99), round(back[-1], 2) if back else None],
            "clients_back_on_b": len(back),
        }, indent=1))
        return 0 if exact == clients and status == 0 else 1
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.terminate()
                p.wait(10)
        os.unlink(tuning.name)


if __name__ == "__main__":
    args = [int(x) for x in sys.argv[1:]]
    sys.exit(main(args[0] if args else 10000, args[1] if len(args) > 1 else 10,
                  args[2] if len(args) > 2 else 8))
