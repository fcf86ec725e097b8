#!/usr/bin/env python3
"""Chaos under load (issue 16): a source or store fails while CLIENTS SSE clients receive RATE
events/s; the gateway must keep every client connected, deliver everything the failure did not
destroy exactly once and in order, stay responsive, and catch up when the failure ends.

usage: loadtest/chaos.py kafka|kinesis|kinesis-efo|redis|net [CLIENTS=2000] [RATE=20]

  kafka    a private test broker (Tansu, in memory) is killed with -9 at t=10 s and started
           again at t=15 s, empty; the topic is created again. Events the broker acknowledged
           and lost with its memory before the gateway read them are the broker's loss (counted
           apart); everything acknowledged after the restart must reach every client.
  kinesis  the same with a private Kinesis mock (kinesis-local, in memory; the stream is
           created again at t=15 s). Checkpoints (DynamoDB on 4567) stay. kinesis-efo: the
           same read with enhanced fan-out (the node's consumer is gone with the stream).
  redis    the gateway publishes over HTTP with a Redis replay store; Redis is killed at
           t=10 s and started again at t=20 s. Live delivery must not notice.
  net      the broker runs in a network namespace the script creates, behind a veth pair;
           inside it, t=10-20 s drops 10% of packets both ways (nftables), t=20-35 s drops all
           (a blackhole: nothing is refused, everything hangs), t=35-45 s limits the link to
           256 kbit/s (tc tbf), then heals. The producer runs inside the namespace, so only
           the gateway's path suffers; nothing may be lost. Needs root (ip netns); the kernel
           here has no sch_netem, so delay is not injected (see the README).

Reports JSON: per phase (by produce time) events acknowledged, delivered to every client,
delivery latency p50/p99/max; health probe latency (GET /_rig/health every 50 ms); streams the
gateway broke; duplicates and reorders seen by clients; events lost by us vs by the broker;
how long after the failure ended the first new event reached every client; the server's RSS
and CPU; the gateway's own counters. Exit status 0 when nothing was lost by us, nothing
duplicated or reordered, no stream broken and every probe answered.

Needs the release binary (cargo build --release -p corebridge), confluent-kafka, boto3, and
for `kinesis` DynamoDB on 4567 (DYNAMODB_PORT=4567 kinesis-up 4568). Bounded: every phase and
wait has a deadline. Loopback and the script's own namespace only.
"""
import array
import asyncio
import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from benchlib import BIN, cpu_ms, free_port, metric, open_sse, sse_lines

HERE = os.path.dirname(os.path.abspath(__file__))
SERVICES = os.path.join(HERE, "..", "..", "shared", "services")
NUM = re.compile(rb'"i":(\d+)')
EVENT_TYPE = "chaos.event"
MAX_EVENTS = 4000
TAIL_S = 15  # after the last event: time to catch up before the clients stop


def sh(*cmd, check=True, **kw):
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)


def service(name, *args, env=None):
    """One of ../shared/services' scripts; its PID file."""
    r = sh(os.path.join(SERVICES, name), *[str(a) for a in args], env=dict(os.environ, **(env or {})))
    return r.stdout.strip().splitlines()[-1] if r.stdout.strip() else None


def kill9(pidfile):
    with open(pidfile) as f:
        pid = int(f.read().strip())
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


# --- clients -------------------------------------------------------------------------------

async def client(src, port, deadline, acc):
    """An EventSource-like client: reconnects with its last id if the stream ends (counted as a
    broken stream: the gateway should never end it here)."""
    seen = bytearray(MAX_EVENTS)
    last_num, last_id = -1, None
    while time.time() < deadline:
        try:
            r, w = await open_sse(port, src, EVENT_TYPE, last_id)
        except OSError:
            acc["connect_failures"] += 1
            await asyncio.sleep(0.5)
            continue
        try:
            async for line in sse_lines(r, deadline):
                if line.startswith(b"id: "):
                    last_id = line[4:].rstrip(b"\r").decode()
                elif line.startswith(b"data: ") and EVENT_TYPE.encode() in line:
                    m = NUM.search(line)
                    if not m:
                        continue
                    n = int(m.group(1))
                    if n >= MAX_EVENTS:
                        continue
                    if seen[n]:
                        acc["duplicates"] += 1
                        continue
                    seen[n] = 1
                    if n < last_num:
                        acc["reordered"] += 1
                    last_num = max(last_num, n)
                    acc["count"][n] += 1
                    acc["arrivals"][n].append(time.time())
            if time.time() < deadline:
                acc["streams_broken"] += 1  # the stream ended
        except (ConnectionError, OSError):
            acc["streams_broken"] += 1
        w.close()
        if time.time() < deadline:
            await asyncio.sleep(0.5)


def worker(srcs, n, port, deadline, q):
    acc = {"connect_failures": 0, "streams_broken": 0, "duplicates": 0, "reordered": 0,
           "count": array.array("i", [0] * MAX_EVENTS),
           "arrivals": [array.array("d") for _ in range(MAX_EVENTS)]}

    async def main():
        tasks = []
        for i in range(n):
            tasks.append(asyncio.create_task(client(srcs[i % len(srcs)], port, deadline, acc)))
            if i % 500 == 499:
                await asyncio.sleep(0.05)
        await asyncio.gather(*tasks)
    asyncio.run(main())
    acc["count"] = acc["count"].tobytes()
    acc["arrivals"] = [a.tobytes() for a in acc["arrivals"]]
    q.put(acc)


# --- the server ----------------------------------------------------------------------------

def start_gateway(env):
    inbound, api = free_port(), free_port()
    tuning = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    tuning.write("[runtime]\n")
    tuning.close()
    env = dict(os.environ, INBOUND_PORT=str(inbound), API_HTTP_PORT=str(api),
               CB_INBOUND_BIND="0.0.0.0", MAX_CONNECTIONS_PER_MINUTE="10000000", LOG_LEVEL="warn",
               **env)
    log = open(os.path.join(tempfile.gettempdir(), f"chaos-gateway-{os.getpid()}.log"), "w")
    p = subprocess.Popen([BIN, "--tuning", tuning.name], env=env, stdout=log, stderr=log)
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{inbound}/_rig/health", timeout=1)
            return p, inbound, api, log.name
        except Exception:
            if p.poll() is not None:
                raise SystemExit(f"gateway exited: see {log.name}")
            time.sleep(0.1)
    raise SystemExit("gateway did not start")


def prober(port, stop, out):
    """GET /_rig/health every 50 ms on a fresh connection; (time, latency or None)."""
    url = f"http://127.0.0.1:{port}/_rig/health"
    while not stop.is_set():
        t = time.time()
        try:
            urllib.request.urlopen(url, timeout=2).read()
            out.append((t, time.time() - t))
        except Exception:
            out.append((t, None))
        stop.wait(max(0, 0.05 - (time.time() - t)))


def counters(api, prefixes):
    """The sums of the /metrics lines starting with each prefix (one scrape)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{api}/metrics", timeout=5).read().decode()
    except Exception as e:
        return {"error": str(e)}
    lines = [l for l in text.splitlines() if not l.startswith("#")]
    return {p: sum(float(l.rsplit(" ", 1)[1]) for l in lines if l.startswith(p)) for p in prefixes}


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(l for l in f if l.startswith("VmRSS")).split()[1])


# --- publishers ----------------------------------------------------------------------------
# Each publishes event i at t0 + i / rate (a CloudEvent whose data is {"i": i}) and records
# when it asked (sent[i]) and which ones were acknowledged (acked).

def cloudevent(i):
    return json.dumps({"specversion": "1.0", "type": EVENT_TYPE, "source": "chaos", "id": f"c{i}",
                       "data": {"i": i}}, separators=(",", ":"))


def kafka_producer(broker, topic, rate, total, t0):
    """Runs in this process or (net) in the namespace through `chaos.py _produce`."""
    from confluent_kafka import Producer
    sent, acked = {}, set()
    prod = Producer({"bootstrap.servers": broker, "linger.ms": 2, "message.timeout.ms": 4000,
                     "socket.timeout.ms": 2000, "reconnect.backoff.max.ms": 500,
                     "topic.metadata.refresh.interval.ms": 1000})

    def done(err, msg, i):
        if err is None:
            acked.add(i)
    for i in range(total):
        time.sleep(max(0, t0 + i / rate - time.time()))
        sent[i] = time.time()
        try:
            prod.produce(topic, cloudevent(i).encode(), key=b"k", on_delivery=lambda e, m, i=i: done(e, m, i))
        except BufferError:
            pass
        prod.poll(0)
    prod.flush(10)
    return sent, acked


def kinesis_producer(endpoint, stream, rate, total, t0):
    import boto3
    from botocore.config import Config
    k = boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x",
                     aws_secret_access_key="x",
                     config=Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}))
    sent, acked = {}, set()
    for i in range(total):
        time.sleep(max(0, t0 + i / rate - time.time()))
        sent[i] = time.time()
        try:
            k.put_record(StreamName=stream, Data=cloudevent(i).encode(), PartitionKey="k")
            acked.add(i)
        except Exception:
            pass
    return sent, acked


def http_producer(port, rate, total, t0):
    import http.client
    sent, acked = {}, set()
    conn = None
    for i in range(total):
        time.sleep(max(0, t0 + i / rate - time.time()))
        sent[i] = time.time()
        try:
            conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("POST", "/_rig/v1/events", cloudevent(i), {"content-type": "application/json"})
            r = conn.getresponse()
            r.read()
            if r.status == 202:
                acked.add(i)
        except Exception:
            conn = None
    return sent, acked


# --- scenarios -----------------------------------------------------------------------------
# Each returns (gateway env, publisher thunk, timeline [(t, label, action)], end of events,
# what the counters to report are, cleanup).

def kafka_gateway(broker, topic):
    """The gateway's environment for reading `topic`, and its readiness check: a partition of
    the topic has a lag gauge once the node reads it."""
    env = {"KAFKA_BROKERS": broker, "KAFKA_SOURCE_TOPICS": topic, "CB_KAFKA_TOPIC_REFRESH_MS": "300",
           "CB_KAFKA_FETCH_WAIT_MS": "20"}

    def ready(api):
        text = urllib.request.urlopen(f"http://127.0.0.1:{api}/metrics", timeout=5).read().decode()
        return f'corebridge_kafka_consumer_lag{{topic="{topic}"' in text
    return env, ready


def kafka_scenario(rate):
    from confluent_kafka.admin import AdminClient, NewTopic
    port = free_port()
    broker, topic = f"127.0.0.1:{port}", "chaos"
    pidfile = [service("kafka-up", port)]

    def create():
        admin = AdminClient({"bootstrap.servers": broker})
        for f in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
            f.result(20)
    create()

    def kill():
        kill9(pidfile[0])

    def restart():
        pidfile[0] = service("kafka-up", port)
        create()
    env, ready = kafka_gateway(broker, topic)
    return dict(env=env, ready=ready,
                publish=lambda total, t0: kafka_producer(broker, topic, rate, total, t0),
                timeline=[(10, "broker killed", kill), (15, "broker back (empty)", restart)],
                end=30, heal=15, broker_loses=(10, 15),
                counters=["corebridge_kafka_up", "corebridge_kafka_log_resets_total",
                          "corebridge_kafka_consumer_lag"],
                cleanup=lambda: sh(os.path.join(SERVICES, "kafka-down"), str(port), check=False))


def kinesis_scenario(rate, efo=False):
    port = free_port()
    endpoint, stream = f"http://127.0.0.1:{port}", f"chaos{os.getpid()}"
    run = os.environ.get("SERVICES_RUN", os.path.join(tempfile.gettempdir(), "gateway-services"))
    pidfile = os.path.join(run, f"kinesis-{port}.pid")
    client = os.path.join(HERE, "..", "tests", "kinesis_client.py")

    def up():
        # kinesis-up also opens the mock's HTTPS port: keep it private too.
        service("kinesis-up", port, env={"KINESIS_TLS_PORT": str(free_port())})
        sh(sys.executable, client, endpoint, "create", stream, "1")
    up()
    env = {"KINESIS_ENABLED": "true", "KINESIS_STREAM": stream, "KINESIS_AWS_REGION": "us-east-1",
           "KINESIS_ENDPOINT": endpoint, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
           "KINESIS_DYNAMODB_ENDPOINT": "http://127.0.0.1:4567", "KINESIS_APP_NAME": f"chaos{os.getpid()}",
           "CB_KINESIS_POLL_MS": "100", "CB_KINESIS_SHARD_REFRESH_MS": "1000",
           "CB_KINESIS_START": "TRIM_HORIZON"}
    if efo:
        env.update(CB_KINESIS_EFO="true", CB_NODE_ID=f"chaos{os.getpid()}")
    ready = lambda api: metric(api, "corebridge_kinesis_up") == 1
    return dict(env=env, ready=ready,
                publish=lambda total, t0: kinesis_producer(endpoint, stream, rate, total, t0),
                timeline=[(10, "kinesis killed", lambda: kill9(pidfile)), (15, "kinesis back (empty)", up)],
                end=30, heal=15, broker_loses=(10, 15),
                counters=["corebridge_kinesis_up", "corebridge_kinesis_position_resets_total"],
                cleanup=lambda: sh(os.path.join(SERVICES, "kinesis-down"), str(port), check=False))


def redis_scenario(rate):
    port = free_port()
    pidfile = [service("redis-up", port)]

    def restart():
        pidfile[0] = service("redis-up", port)
    env = {"CB_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    holder = {}
    return dict(env=env, ready=lambda api: True,
                publish=lambda total, t0: http_producer(holder["inbound"], rate, total, t0),
                holder=holder,
                timeline=[(10, "redis killed", lambda: kill9(pidfile[0])), (20, "redis back (empty)", restart)],
                end=30, heal=20, broker_loses=None,
                counters=["corebridge_redis_up", "corebridge_redis_events_written_total",
                          "corebridge_redis_write_failures_total"],
                after=lambda: {"redis_keys_after": sh("redis-cli", "-p", str(port), "dbsize", check=False).stdout.strip()},
                cleanup=lambda: sh(os.path.join(SERVICES, "redis-down"), str(port), check=False))


def net_scenario(rate):
    from confluent_kafka.admin import AdminClient, NewTopic
    tag = os.getpid() % 10000
    ns, host_if, ns_if = f"cbchaos{tag}", f"cbh{tag}", f"cbn{tag}"
    net = f"10.{200 + tag % 50}.{tag % 250}"
    host_ip, ns_ip = f"{net}.1", f"{net}.2"
    broker, topic = f"{ns_ip}:9092", "chaos"
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", ns)
    sh("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
    sh("ip", "link", "set", host_if, "up")
    nsx = ["ip", "netns", "exec", ns]
    sh(*nsx, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if)
    sh(*nsx, "ip", "link", "set", ns_if, "up")
    sh(*nsx, "ip", "link", "set", "lo", "up")
    tansu = os.environ.get("TANSU_BIN") or os.path.expanduser(
        "~/.cache/gateway-services/tansu-0.6.0-dynostore/bin/tansu")
    if not os.path.exists(tansu):
        service("kafka-up", free_port())  # installs it
    wd = tempfile.mkdtemp()
    log = open(os.path.join(wd, "tansu.log"), "w")
    tansu_p = subprocess.Popen(nsx + ["env", f"LISTENER_URL=tcp://{ns_ip}:9092",
                                      f"ADVERTISED_LISTENER_URL=tcp://{ns_ip}:9092",
                                      "STORAGE_ENGINE=memory://tansu/", "CLUSTER_ID=chaos",
                                      "RUST_LOG=warn", tansu, "broker"], cwd=wd, stdout=log, stderr=log)
    deadline = time.time() + 30
    while True:
        try:
            admin = AdminClient({"bootstrap.servers": broker, "socket.timeout.ms": 2000})
            for f in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
                f.result(5)
            break
        except Exception:
            if time.time() > deadline:
                raise SystemExit(f"broker in {ns} did not start: see {log.name}")
            time.sleep(0.5)

    def nft(rule):
        # Only the veth: the producer inside the namespace reaches the broker over its loopback.
        sh(*nsx, "nft", "flush", "ruleset")
        if rule:
            sh(*nsx, "nft", "add", "table", "inet", "chaos")
            for hook, dev in (("input", "iifname"), ("output", "oifname")):
                sh(*nsx, "nft", f"add chain inet chaos {hook} {{ type filter hook {hook} priority 0; }}")
                sh(*nsx, "nft", f"add rule inet chaos {hook} {dev} {ns_if} {rule}")

    def loss():
        nft("numgen random mod 100 < 10 drop")

    def blackhole():
        nft("drop")

    def slow():
        nft(None)
        sh(*nsx, "tc", "qdisc", "add", "dev", ns_if, "root", "tbf", "rate", "256kbit", "burst", "16kbit",
           "latency", "500ms")

    def heal():
        nft(None)
        sh(*nsx, "tc", "qdisc", "del", "dev", ns_if, "root", check=False)

    def publish(total, t0):
        r = sh(*nsx, sys.executable, os.path.abspath(__file__), "_produce", broker, topic, str(rate),
               str(total), repr(t0), timeout=t0 - time.time() + total / rate + 60)
        out = json.loads(r.stdout)
        return {int(k): v for k, v in out["sent"].items()}, set(out["acked"])

    def cleanup():
        tansu_p.kill()
        tansu_p.wait(5)
        sh("ip", "link", "del", host_if, check=False)
        sh("ip", "netns", "del", ns, check=False)
    env, ready = kafka_gateway(broker, topic)
    return dict(env=env, ready=ready, publish=publish,
                timeline=[(10, "10% loss", loss), (20, "blackhole", blackhole),
                          (35, "256 kbit/s", slow), (45, "healed", heal)],
                end=55, heal=45, broker_loses=None,
                counters=["corebridge_kafka_up", "corebridge_kafka_log_resets_total",
                          "corebridge_kafka_fetch_failures_total"],
                cleanup=cleanup)


SCENARIOS = {"kafka": kafka_scenario, "kinesis": kinesis_scenario,
             "kinesis-efo": lambda rate: kinesis_scenario(rate, efo=True), "redis": redis_scenario,
             "net": net_scenario}


def pct(xs, p):
    return round(xs[min(len(xs) - 1, int(len(xs) * p))] * 1000, 1) if xs else None


def main(name, clients, rate):
    sc = SCENARIOS[name](rate)
    gw = None
    try:
        gw, inbound, api, gw_log = start_gateway(sc["env"])
        if "holder" in sc:
            sc["holder"]["inbound"] = inbound
        deadline = time.time() + 30
        while True:
            try:
                if sc["ready"](api):
                    break
            except Exception:
                pass
            if time.time() > deadline:
                raise SystemExit(f"the gateway is not reading its source: see {gw_log}")
            time.sleep(0.2)
        end, total = sc["end"], int(sc["end"] * rate)
        clients_deadline = time.time() + 30 + end + TAIL_S
        q = mp.Queue()
        ips = [f"127.0.0.{i}" for i in range(2, 6)]
        procs = [mp.Process(target=worker, args=(ips[k::2], clients // 2 + (k < clients % 2), inbound,
                                                  clients_deadline, q)) for k in range(2)]
        for p in procs:
            p.start()
        while metric(api, 'corebridge_connections{transport="sse"}') < clients:
            if time.time() > clients_deadline - end - TAIL_S:
                raise SystemExit("clients did not connect")
            time.sleep(0.2)
        rss0, cpu0 = rss_kib(gw.pid), cpu_ms(gw.pid)
        t0 = time.time() + 0.5
        stop, probes = threading.Event(), []
        pt = threading.Thread(target=prober, args=(inbound, stop, probes), daemon=True)
        pt.start()
        marks, states = [], []

        def chaos():
            for at, label, action in sc["timeline"]:
                time.sleep(max(0, t0 + at - 0.3 - time.time()))
                # The gateway's view at the end of the phase before.
                states.append((round(time.time() - t0, 1), counters(api, sc["counters"])))
                time.sleep(max(0, t0 + at - time.time()))
                action()
                marks.append((label, round(time.time() - t0, 2)))
        ct = threading.Thread(target=chaos, daemon=True)
        ct.start()
        sent, acked = sc["publish"](total, t0)
        ct.join(60)
        during = counters(api, sc["counters"])
        # Let the clients catch up, then stop them.
        time.sleep(TAIL_S)
        stop.set()
        pt.join(5)
        rss1, cpu1 = rss_kib(gw.pid), cpu_ms(gw.pid)
        after = counters(api, sc["counters"] + ["corebridge_events_dropped_total"])
        accs = [q.get(timeout=clients_deadline - time.time() + 60) for _ in procs]
        for p in procs:
            p.join(10)
    finally:
        if gw and gw.poll() is None:
            gw.terminate()
            gw.wait(10)
        sc["cleanup"]()

    count = [0] * MAX_EVENTS
    arrivals = [[] for _ in range(MAX_EVENTS)]
    for a in accs:
        c = array.array("i")
        c.frombytes(a["count"])
        for i in range(MAX_EVENTS):
            count[i] += c[i]
        for i, b in enumerate(a["arrivals"]):
            if b:
                d = array.array("d")
                d.frombytes(b)
                arrivals[i].extend(d)
    # Phases by produce time.
    bounds = [(0, "steady")] + [(at, label) for at, label, _ in sc["timeline"]]
    phases = []
    for k, (start, label) in enumerate(bounds):
        stop_at = bounds[k + 1][0] if k + 1 < len(bounds) else end
        ids = [i for i in range(total) if start <= i / rate < stop_at]
        lats = sorted(x - sent[i] for i in ids if i in acked for x in arrivals[i])
        phases.append({"phase": label, "from_s": start, "acked": sum(1 for i in ids if i in acked),
                       "to_every_client": sum(1 for i in ids if count[i] == clients),
                       "latency_ms_p50_p99_max": [pct(lats, 0.5), pct(lats, 0.99), pct(lats, 1.0)]})
    broker_lost = ours = partial = 0
    lo, hi = sc["broker_loses"] or (None, None)
    for i in sorted(acked):
        if count[i] == clients:
            continue
        if count[i] == 0 and lo is not None and i / rate < hi:
            broker_lost += 1  # acknowledged by the broker that died, read by nobody
        else:
            ours += 1
            partial += count[i] > 0
    # From the moment the failure actually ended (a restart takes a while).
    healed = next((t for (label, t), (at, _, _) in zip(marks, sc["timeline"]) if at == sc["heal"]), sc["heal"])
    first_after = next((i for i in range(total) if sent[i] - t0 >= healed and i in acked), None)
    recovered = (round(max(arrivals[first_after]) - (t0 + healed), 2)
                 if first_after is not None and count[first_after] == clients else None)
    pl = [l for t, l in probes if l is not None]
    pl.sort()
    report = {
        "scenario": name, "clients": clients, "rate_per_s": rate, "events": total,
        "marks_s": marks, "phases": phases,
        "acked": len(acked), "lost_by_gateway": ours, "of_which_partial": partial,
        "lost_with_broker_memory": broker_lost,
        "duplicates": sum(a["duplicates"] for a in accs), "reordered": sum(a["reordered"] for a in accs),
        "streams_broken": sum(a["streams_broken"] for a in accs),
        "connect_failures": sum(a["connect_failures"] for a in accs),
        "first_event_after_heal_to_every_client_s": recovered, "healed_at_s": healed,
        "health_probes": len(probes), "health_failed": len(probes) - len(pl),
        "health_ms_p50_p99_max": [pct(pl, 0.5), pct(pl, 0.99), pct(pl, 1.0)],
        "server_rss_kib_before_after": [rss0, rss1],
        "server_cpu_ms": round(cpu1 - cpu0),
        "counters_before_each_mark": states, "counters_at_end_of_events": during, "counters_after_tail": after,
    }
    if "after" in sc:
        report.update(sc["after"]())
    print(json.dumps(report, indent=1))
    ok = (ours == 0 and report["duplicates"] == 0 and report["reordered"] == 0
          and report["streams_broken"] == 0 and report["health_failed"] == 0 and recovered is not None)
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_produce":
        broker, topic, rate, total, t0 = sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
        sent, acked = kafka_producer(broker, topic, rate, total, t0)
        print(json.dumps({"sent": sent, "acked": sorted(acked)}))
        sys.exit(0)
    if len(sys.argv) < 2 or sys.argv[1] not in SCENARIOS:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2000,
                  float(sys.argv[3]) if len(sys.argv) > 3 else 20))
