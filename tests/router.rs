//! The clickstream router against the real test broker (Tansu, confluent-kafka as the
//! independent client), a local registry (tests/registry_server.py: GraphQL + SSE, in the
//! original's shapes) and S3 (moto, `s3-up`): routing to exactly the enabled integrations with
//! key, value and headers unchanged; a registry change announced over SSE; the failure chain to
//! the retry topic and S3 with inputs = outputs + S3 objects; a router killed mid-stream and
//! replaced without loss.

mod common;

use common::kafka::{broker_up, create, py};
use common::{json_file, service};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KAFKA_PORT: u16 = 19092;
const S3_PORT: u16 = 4581;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn name(prefix: &str) -> String {
    format!("{prefix}-{:x}", fastrand::u32(..))
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Registry {
    port: u16,
    _p: Proc,
}

impl Registry {
    fn start() -> Registry {
        let port = free_port();
        let child = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/registry_server.py"
            ))
            .arg(port.to_string())
            .arg("the-key")
            .spawn()
            .unwrap();
        let r = Registry {
            port,
            _p: Proc(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn post(&self, path: &str, body: &Value) {
        let b = body.to_string();
        let r = common::raw(
            self.port,
            format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{b}",
                b.len()
            )
            .as_bytes(),
        );
        assert_eq!(r.status, 200);
    }

    fn set(&self, app: &str, integrations: &[(&str, &str, bool)]) {
        let cs: Vec<Value> = integrations
            .iter()
            .map(|(n, t, e)| json!({"name": n, "topic": t, "enabled": e}))
            .collect();
        self.post("/set", &json!({"app": app, "clickstream": cs}));
    }

    fn stats(&self) -> Value {
        let r = common::raw(
            self.port,
            b"GET /stats HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        );
        serde_json::from_str(&r.text()).unwrap()
    }
}

fn s3_up() -> String {
    service("s3-up", &[&S3_PORT.to_string()], &[]);
    format!("http://127.0.0.1:{S3_PORT}")
}

/// boto3 against the S3 server: `create BUCKET` or `list BUCKET` (JSON {key: body}).
fn s3(args: &[&str]) -> String {
    let script = r#"
import boto3, json, sys
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id="x", aws_secret_access_key="x")
cmd, bucket = sys.argv[2], sys.argv[3]
if cmd == "create":
    s3.create_bucket(Bucket=bucket)
else:
    out = {}
    for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        out[o["Key"]] = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read().decode()
    print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(format!("http://127.0.0.1:{S3_PORT}"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fresh ingestion and retry topics, a fresh bucket, and the router environment naming them.
struct Pipeline {
    ingest: String,
    retry: String,
    bucket: String,
    group: String,
}

impl Pipeline {
    fn new(create_topic: &dyn Fn(&str)) -> Pipeline {
        let _ = s3_up();
        let p = Pipeline {
            ingest: name("click"),
            retry: name("click-retry"),
            bucket: name("bucket"),
            group: name("group"),
        };
        s3(&["create", &p.bucket]);
        create_topic(&p.ingest);
        create_topic(&p.retry);
        p
    }

    /// The environment of a router on `bootstrap`, plus `extra`.
    fn envs<'a>(
        &'a self,
        bootstrap: &'a str,
        extra: &[(&'a str, &'a str)],
    ) -> Vec<(&'a str, &'a str)> {
        let mut all = vec![
            ("ER_BOOTSTRAP_SERVERS", bootstrap),
            ("ER_KAFKA_GROUP_ID", self.group.as_str()),
            ("ER_KAFKA_INGESTION_TOPIC", self.ingest.as_str()),
            ("ER_CLICKSTREAM_RETRY_TOPIC", self.retry.as_str()),
            ("ER_CLICKSTREAM_RETRY_S3_BUCKET", self.bucket.as_str()),
        ];
        all.extend_from_slice(extra);
        all
    }
}

struct Router {
    port: u16,
    p: Proc,
}

fn router(args: &[&str], envs: &[(&str, &str)]) -> Router {
    let port = free_port();
    let log = std::env::temp_dir().join(format!("cb-router-{port}.log"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corebridge"));
    cmd.arg("router")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ER_SERVER_PORT", port.to_string())
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "x")
        .env("AWS_ENDPOINT_URL_S3", format!("http://127.0.0.1:{S3_PORT}"))
        .env("ER_KAFKA_PRODUCER_MESSAGE_TIMOUT_MS", "1500")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).map(Stdio::from).unwrap());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let r = Router {
        port,
        p: Proc(child),
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(r.port, "/health").is_none() {
        assert!(
            Instant::now() < deadline,
            "router did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    r
}

fn get(port: u16, path: &str) -> Option<String> {
    std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let r = common::raw(
        port,
        format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
    );
    (r.status == 200).then(|| r.text())
}

fn metric(port: u16, prefix: &str) -> f64 {
    get(port, "/metrics")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every record of a topic (each partition read from offset 0), waiting up to `secs` for
/// `count`.
fn consume(topic: &str, count: usize, secs: u32) -> Vec<Value> {
    let broker = format!("127.0.0.1:{KAFKA_PORT}");
    let out = py(
        &broker,
        &[
            "consume",
            topic,
            &count.to_string(),
            "--timeout",
            &secs.to_string(),
            "--from-zero",
        ],
    )
    .unwrap_or_else(|e| e);
    out.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn produce(topic: &str, value: &Value, key: &str, headers: &[&str]) {
    let broker = format!("127.0.0.1:{KAFKA_PORT}");
    let v = value.to_string();
    let mut args = vec!["produce", topic, &v, "--key", key];
    for h in headers {
        args.push("--header");
        args.push(h);
    }
    py(&broker, &args).unwrap();
}

#[test]
fn routes_to_exactly_the_enabled_integrations_and_follows_registry_changes() {
    let broker = broker_up(KAFKA_PORT);
    let pl = Pipeline::new(&|t| create(&broker, t, 2));
    let ingest = pl.ingest.clone();
    let (ga, mp, amp) = (name("ga"), name("mp"), name("amp"));
    for t in [&ga, &mp, &amp] {
        create(&broker, t, 2);
    }
    let reg = Registry::start();
    reg.set(
        "app1",
        &[
            ("ga", &ga, true),
            ("mixpanel", &mp, true),
            ("amplitude", &amp, false),
        ],
    );
    let (api, sse) = (
        format!("http://127.0.0.1:{}/graphql", reg.port),
        format!("http://127.0.0.1:{}/sse", reg.port),
    );
    let r = router(
        &["start"],
        &pl.envs(
            &broker,
            &[
                ("ER_HOUSTON_API_URL", &api),
                ("ER_HOUSTON_API_KEY", "the-key"),
                ("ER_SSE_URL", &sse),
            ],
        ),
    );
    let m1 = json!({"appId": "app1", "messageId": "m1", "event": "page"});
    let m2 = json!({"appId": "app1", "messageId": "m2", "integrations": {"mixpanel": false}});
    produce(&ingest, &m1, "user-1", &["trace=abc", "x-src=web"]);
    produce(&ingest, &m2, "user-2", &[]);
    let got_ga = consume(&ga, 2, 20);
    assert_eq!(got_ga.len(), 2, "{got_ga:?}");
    let one = got_ga.iter().find(|r| r["key"] == "user-1").unwrap();
    assert_eq!(
        one["value"].as_str().unwrap(),
        m1.to_string(),
        "value unchanged"
    );
    assert_eq!(one["headers"]["trace"], "abc");
    assert_eq!(one["headers"]["x-src"], "web");
    let got_mp = consume(&mp, 1, 10);
    assert_eq!(got_mp.len(), 1);
    assert_eq!(got_mp[0]["key"], "user-1", "m2 switched mixpanel off");
    assert!(consume(&amp, 1, 3).is_empty(), "amplitude is disabled");
    // Both messages of app1 asked the registry once.
    assert_eq!(reg.stats()["queries"]["app1"], 1);
    let cache: Value = serde_json::from_str(&get(r.port, "/integrations").unwrap()).unwrap();
    assert_eq!(cache["app1"]["ga"], ga.as_str());

    // The registry enables amplitude and says so over SSE: the next message goes there too.
    reg.set(
        "app1",
        &[
            ("ga", &ga, true),
            ("mixpanel", &mp, true),
            ("amplitude", &amp, true),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(
        r.port,
        "corebridge_router_cache_total{result=\"invalidation\"}",
    ) < 1.0
    {
        reg.post("/announce", &json!({"appId": "app1"}));
        assert!(Instant::now() < deadline, "the invalidation never arrived");
        std::thread::sleep(Duration::from_millis(300));
    }
    produce(
        &ingest,
        &json!({"appId": "app1", "messageId": "m3"}),
        "user-3",
        &[],
    );
    let got_amp = consume(&amp, 1, 20);
    assert_eq!(got_amp.len(), 1);
    assert_eq!(got_amp[0]["key"], "user-3");
    assert_eq!(reg.stats()["queries"]["app1"], 2);
    drop(r);
}

/// Without invalidations (`--disable-sse`), `CB_ROUTER_CACHE_TTL_S` bounds how long a changed
/// registry is ignored: the next message after the TTL asks again and follows the change.
#[test]
fn cached_integrations_expire_after_the_ttl_without_invalidations() {
    let broker = broker_up(KAFKA_PORT);
    let pl = Pipeline::new(&|t| create(&broker, t, 1));
    let ingest = pl.ingest.clone();
    let (ga, amp, warm) = (name("ga"), name("amp"), name("warm"));
    for t in [&ga, &amp, &warm] {
        create(&broker, t, 1);
    }
    let reg = Registry::start();
    reg.set("app0", &[("ga", &warm, true)]);
    reg.set("app1", &[("ga", &ga, true), ("amplitude", &amp, false)]);
    let api = format!("http://127.0.0.1:{}/graphql", reg.port);
    let r = router(
        &["start", "--disable-sse"],
        &pl.envs(
            &broker,
            &[
                ("ER_HOUSTON_API_URL", &api),
                ("ER_HOUSTON_API_KEY", "the-key"),
                ("CB_ROUTER_CACHE_TTL_S", "30"),
            ],
        ),
    );
    let msg = |id: &str| json!({"appId": "app1", "messageId": id});
    // The router is routing (group joined, partition read) before m1: m1's lookup, which
    // starts the TTL, then follows its produce closely.
    produce(
        &ingest,
        &json!({"appId": "app0", "messageId": "warm-up"}),
        "k",
        &[],
    );
    assert_eq!(consume(&warm, 1, 30).len(), 1, "the router never routed");
    let produced_m1 = Instant::now();
    produce(&ingest, &msg("m1"), "k", &[]);
    assert_eq!(consume(&ga, 1, 20).len(), 1);
    let routed_m1 = Instant::now(); // the lookup began between these two
    reg.set("app1", &[("ga", &ga, true), ("amplitude", &amp, true)]);
    // Within the TTL the cached answer holds: nothing for amplitude yet.
    produce(&ingest, &msg("m2"), "k", &[]);
    assert_eq!(consume(&ga, 2, 20).len(), 2);
    // Thirty seconds leave a loaded machine ample room for the steps above (a few seconds).
    assert!(
        produced_m1.elapsed() < Duration::from_secs(30),
        "m2 took so long that the TTL may have run out: inconclusive"
    );
    assert!(
        consume(&amp, 1, 1).is_empty(),
        "followed the change before the TTL"
    );
    assert_eq!(reg.stats()["queries"]["app1"], 1);
    // Past the TTL counted from the latest the lookup can have begun.
    std::thread::sleep(Duration::from_millis(30_200).saturating_sub(routed_m1.elapsed()));
    produce(&ingest, &msg("m3"), "k", &[]);
    let got = consume(&amp, 1, 20);
    assert_eq!(got.len(), 1, "the change was not picked up after the TTL");
    assert_eq!(got[0]["value"].as_str().unwrap(), msg("m3").to_string());
    assert_eq!(reg.stats()["queries"]["app1"], 2);
    assert_eq!(
        metric(r.port, "corebridge_router_cache_total{result=\"expired\"}"),
        1.0
    );
}

#[test]
fn a_topic_that_cannot_be_produced_to_ends_in_the_retry_topic_then_s3() {
    let broker = broker_up(KAFKA_PORT);
    let pl = Pipeline::new(&|t| create(&broker, t, 1));
    let (ingest, retry, bucket) = (pl.ingest.clone(), pl.retry.clone(), pl.bucket.clone());
    let ok = name("ok");
    create(&broker, &ok, 1);
    // `missing` names a topic that does not exist (the test broker creates none by itself).
    let missing = name("missing");
    let integrations = format!("ok={ok},broken={missing}");
    let r = router(
        &["mock", "--integrations", &integrations, "--disable-sse"],
        &pl.envs(
            &broker,
            &[
                ("CLICKSTREAM_RETRY_S3_PATH_PREFIX", "failed/clicks"),
                ("ER_MAX_RETRIES", "2"),
            ],
        ),
    );
    for i in 0..3 {
        produce(
            &ingest,
            &json!({"appId": "a", "messageId": format!("msg-{i}")}),
            "k",
            &[],
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let objects: HashMap<String, String> = loop {
        let o: HashMap<String, String> = serde_json::from_str(&s3(&["list", &bucket])).unwrap();
        if o.len() >= 3 {
            break o;
        }
        assert!(
            Instant::now() < deadline,
            "only {} S3 objects: {o:?}",
            o.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    for i in 0..3 {
        let body: Value =
            serde_json::from_str(&objects[&format!("failed/clicks/msg-{i}")]).unwrap();
        assert_eq!(body["messageId"], format!("msg-{i}"));
    }
    // The retry topic saw each message with retryCount 1 and 2, for the broken integration.
    let retries = consume(&retry, 6, 20);
    assert_eq!(retries.len(), 6, "{retries:?}");
    let mut counts: Vec<u64> = retries
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_str(r["value"].as_str().unwrap()).unwrap();
            assert_eq!(v["integration"], missing.as_str());
            v["retryCount"].as_u64().unwrap()
        })
        .collect();
    counts.sort();
    assert_eq!(counts, [1, 1, 1, 2, 2, 2]);
    // Inputs = outputs + S3 objects: 3 inputs, 3 on the working integration, 3 in S3.
    assert_eq!(consume(&ok, 3, 10).len(), 3);
    assert_eq!(metric(r.port, "corebridge_router_s3_objects_total"), 3.0);
    assert_eq!(metric(r.port, "corebridge_router_routed_total"), 3.0);
}

#[test]
fn a_router_killed_mid_stream_and_replaced_loses_nothing() {
    let broker = broker_up(KAFKA_PORT);
    let pl = Pipeline::new(&|t| create(&broker, t, 4));
    let ingest = pl.ingest.clone();
    let out = name("out");
    create(&broker, &out, 2);
    // The test broker has shown a partition's very first batch, when two routers race to write
    // it and one is then killed, only minutes later (read after the test, it is there): each
    // output partition gets a first record of its own before the routers start.
    for p in ["0", "1"] {
        py(
            &broker,
            &["produce", &out, r#"{"messageId":"seed"}"#, "--partition", p],
        )
        .unwrap();
    }
    let integrations = format!("out={out}");
    let envs = pl.envs(&broker, &[]);
    let args = [
        "mock",
        "--integrations",
        integrations.as_str(),
        "--disable-sse",
    ];
    let mut a = router(&args, &envs);
    let mut b = router(&args, &envs);
    const N: usize = 1500;
    let producer = {
        let (broker, ingest) = (broker.clone(), ingest.clone());
        std::thread::spawn(move || {
            py(
                &broker,
                &["produce-many", &ingest, &N.to_string(), "app", "m", "300"],
            )
            .unwrap();
        })
    };
    // Mid-stream: once some messages went through, kill -9 one router.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(a.port, "corebridge_router_routed_total") < 100.0 {
        assert!(Instant::now() < deadline, "router A routed nothing");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = a.p.0.kill();
    let _ = a.p.0.wait();
    // A replacement joins (the test broker never expires a dead member; a join rebalances).
    let mut c = router(&args, &envs);
    producer.join().unwrap();
    // Read the output until every message is there (the replacement may still be catching up
    // on the dead router's partitions). After 45 s the survivors are stopped with SIGTERM
    // (they flush and commit).
    let deadline = Instant::now() + Duration::from_secs(120);
    let stop_at = Instant::now() + Duration::from_secs(45);
    let mut stopped = false;
    let (mut all, missing) = loop {
        if !stopped && Instant::now() > stop_at {
            for r in [&mut b, &mut c] {
                let _ = Command::new("kill").arg(r.p.0.id().to_string()).status();
                let _ = r.p.0.wait();
            }
            stopped = true;
            eprintln!("output incomplete after 45 s: routers stopped, reading again");
        }
        let all = consume(&out, N + 1000, 8);
        let ids: HashSet<String> = all
            .iter()
            .map(|r| {
                let v: Value = serde_json::from_str(r["value"].as_str().unwrap()).unwrap();
                v["messageId"].as_str().unwrap().to_string()
            })
            .collect();
        let missing: Vec<usize> = (0..N)
            .filter(|i| !ids.contains(&format!("m-{i}")))
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break (all, missing);
        }
    };
    all.retain(|r| !r["value"].as_str().unwrap().contains("\"seed\""));
    eprintln!(
        "killed mid-stream: {N} messages, {} records out, {} duplicates (re-read after the kill)",
        all.len(),
        all.len().saturating_sub(N - missing.len())
    );
    assert!(
        missing.is_empty(),
        "lost {} messages: {:?} (input {}, output {out})",
        missing.len(),
        &missing[..missing.len().min(10)],
        pl.ingest
    );
}

/// Runs kafka_client.py with extra client settings (TLS or SASL through the fronts).
fn py_with(client: &Value, args: &[&str]) -> Result<String, String> {
    common::python(
        "kafka_client.py",
        args,
        &[("KAFKA_CLIENT_CONFIG", &client.to_string())],
    )
}

/// One message through a router in front of a secured broker: routed, with `client` settings
/// for the test's own producer and consumer.
fn route_one(bootstrap: &str, client: &Value, envs: &[(&str, &str)]) -> Router {
    let create_topic = |t: &str| {
        py_with(client, &[bootstrap, "create", t, "1"]).unwrap();
    };
    let pl = Pipeline::new(&create_topic);
    let (ingest, out) = (pl.ingest.clone(), name("out"));
    create_topic(&out);
    let integrations = format!("out={out}");
    let r = router(
        &["mock", "--integrations", &integrations, "--disable-sse"],
        &pl.envs(bootstrap, envs),
    );
    let msg = json!({"appId": "a", "messageId": "secure-1"}).to_string();
    py_with(client, &[bootstrap, "produce", &ingest, &msg, "--key", "k"]).unwrap();
    let got = py_with(
        client,
        &[bootstrap, "consume", &out, "1", "--timeout", "30"],
    )
    .unwrap_or_else(|e| panic!("nothing routed through {bootstrap}: {e}"));
    assert!(got.contains("secure-1"), "{got}");
    r
}

/// A broker on `kafka` that advertises `front`, and the front (`kafka-sasl-up` or
/// `kafka-tls-up`) on `front`; the front's eval-able output.
fn behind_front(script: &str, kafka: u16, front: u16) -> HashMap<String, String> {
    service(
        "kafka-up",
        &[&kafka.to_string()],
        &[("KAFKA_ADVERTISED_PORT", &front.to_string())],
    );
    service(script, &[&front.to_string(), &kafka.to_string()], &[])
}

fn sasl_stats(path: &str) -> Value {
    json_file(path)
}

#[test]
fn sasl_plain_scram_and_oauthbearer_through_the_sasl_front_and_tls_through_the_tls_front() {
    // SASL: a broker that advertises the front's port, the front, a token endpoint.
    let (kafka, front) = (19096u16, 19097u16);
    let sasl = behind_front("kafka-sasl-up", kafka, front);
    let stats_file = sasl["KAFKA_SASL_STATS"].clone();
    let oauth_port = 4572u16;
    service(
        "oauth-up",
        &[&oauth_port.to_string()],
        &[("OAUTH_TOKEN_TTL", "6")],
    );
    let bootstrap = format!("127.0.0.1:{front}");
    // The test's own client authenticates with SCRAM-SHA-512, so the counts of the router's
    // mechanisms are the router's alone.
    let plain_client = json!({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
                              "sasl.username": "alice", "sasl.password": "alice-secret"});
    for (mech, envs) in [
        ("PLAIN", vec![("KAFKA_SASL", "plain:alice:alice-secret")]),
        (
            "SCRAM-SHA-256",
            vec![("KAFKA_SASL", "scram-sha-256:alice:alice-secret")],
        ),
    ] {
        let before = sasl_stats(&stats_file)[mech]["ok"].as_u64().unwrap_or(0);
        let _r = route_one(&bootstrap, &plain_client, &envs);
        let after = sasl_stats(&stats_file)[mech]["ok"].as_u64().unwrap_or(0);
        assert!(
            after > before,
            "the router did not authenticate with {mech}"
        );
    }
    let token_url = format!("http://127.0.0.1:{oauth_port}/token");
    let oauth_stats = || -> Value {
        serde_json::from_str(&get(oauth_port, "/stats").unwrap_or_else(|| "{}".into())).unwrap()
    };
    let issued_before = oauth_stats()["tokens_issued"].as_u64().unwrap_or(0);
    let before = sasl_stats(&stats_file)["OAUTHBEARER"]["ok"]
        .as_u64()
        .unwrap_or(0);
    let r = route_one(
        &bootstrap,
        &plain_client,
        &[
            ("KAFKA_OAUTH_CLIENT_ID", "kafka"),
            ("KAFKA_OAUTH_CLIENT_SECRET", "kafka-secret"),
            ("KAFKA_OAUTH_TOKEN_ENDPOINT_URI", &token_url),
        ],
    );
    assert!(
        sasl_stats(&stats_file)["OAUTHBEARER"]["ok"]
            .as_u64()
            .unwrap_or(0)
            > before
    );
    // The token lives 6 s: librdkafka fetches the next one before it expires.
    let deadline = Instant::now() + Duration::from_secs(20);
    while oauth_stats()["tokens_issued"].as_u64().unwrap_or(0) < issued_before + 2 {
        assert!(
            Instant::now() < deadline,
            "the OAuth token was never refreshed"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(r);
    service("kafka-sasl-down", &[&front.to_string()], &[]);
    service("oauth-down", &[&oauth_port.to_string()], &[]);
    service("kafka-down", &[&kafka.to_string()], &[]);

    // TLS through the TLS front, the router trusting the test CA.
    let (kafka, front) = (19098u16, 19099u16);
    let tls = behind_front("kafka-tls-up", kafka, front);
    let ca = tls["KAFKA_TLS_CA"].clone();
    let client = json!({"security.protocol": "SSL", "ssl.ca.location": ca});
    let _r = route_one(
        &format!("127.0.0.1:{front}"),
        &client,
        &[
            ("KAFKA_SSL_ENABLED", "true"),
            ("KAFKA_SSL_CA_CERTFILE", &ca),
        ],
    );
    service("kafka-tls-down", &[&front.to_string()], &[]);
    service("kafka-down", &[&kafka.to_string()], &[]);
}

#[test]
fn a_registry_login_token_is_renewed_before_it_expires() {
    let broker = broker_up(KAFKA_PORT);
    let pl = Pipeline::new(&|t| create(&broker, t, 1));
    let (ingest, ga) = (pl.ingest.clone(), name("ga"));
    create(&broker, &ga, 1);
    let reg = Registry::start();
    reg.set("app9", &[("ga", &ga, true)]);
    let api = format!("http://127.0.0.1:{}/graphql", reg.port);
    let r = router(
        &["start", "--disable-sse"],
        &pl.envs(
            &broker,
            &[
                ("ER_HOUSTON_API_URL", &api),
                ("ER_HOUSTON_USERNAME", "router"),
                ("ER_HOUSTON_PASSWORD", "secret"),
            ],
        ),
    );
    produce(
        &ingest,
        &json!({"appId": "app9", "messageId": "l1"}),
        "u",
        &[],
    );
    assert_eq!(consume(&ga, 1, 20).len(), 1);
    assert_eq!(reg.stats()["tokens"], 1);
    // The stand-in's tokens expire 63 s after issue and the router renews a minute early, so
    // after 4 s the next lookup logs in again.
    std::thread::sleep(Duration::from_secs(4));
    reg.set("app10", &[("ga", &ga, true)]);
    produce(
        &ingest,
        &json!({"appId": "app10", "messageId": "l2"}),
        "u",
        &[],
    );
    assert_eq!(consume(&ga, 2, 20).len(), 2);
    assert_eq!(
        reg.stats()["tokens"],
        2,
        "a new token before the old one expired"
    );
    drop(r);
}
