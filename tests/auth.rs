//! Users and security end to end (rig-contract.md 1.2, 1.5, 2.2, 5): JWT-derived (automatic)
//! subscriptions, refused tokens (expired, forged, `alg: none`, HS/RS confusion), RS256/ES256
//! PEM keys, a rotating JWKS served by a local HTTP server, the session blacklist (API, ending
//! SSE/WS/long-poll connections on every shard and, through Kafka, on another node),
//! `JWT_SESSION_FIELD`, `SUBSCRIPTION_CHECK` / `SUBMISSION_CHECK`, `MAX_CONNECTIONS_PER_MINUTE`,
//! CORS lists, `CB_API_TOKEN`, and a seeded property test that every client receives exactly
//! the events it is entitled to.
//!
//! The keys below were generated with openssl for these tests only.

mod common;

use common::kafka::{broker_up, create};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use common::*;
use corebridge::proto::sse;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tungstenite::protocol::CloseFrame;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

// ---------------------------------------------------------------------------------------------
// Test-only keys (openssl genrsa -traditional 2048; openssl ecparam prime256v1 | pkcs8 -topk8).

const RSA1_PRIV: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEowIBAAKCAQEAy1uzNbc0Vc29YQBUxBsAW6EdZNSkk/rEi5QI0di+xijSfHQW
krFXkE7NhJ7ZGIFl3PDBf7yRF51+MX0hJPa/BJ/nAZD7NppRSVEOkrOPbwL2hEHo
OumDrw2ZdTntDwVGYXaGv9br6Xqv4WRz5Ivxq1WVToNSZmZm1dYj8OBiG60UsJdu
pmsDoc8DyHDOOuBagpV98CQ7zNZ/eJpAug1ndqOmhItkl44l9sSQByvvVbBrODl0
w20fZhcXK9aCo/cAL2ACzYhTT7qBtzRU/CIwtd/h8B+CC3kmYWfnGQOgpUSR9XFU
Cc1/rmLohrRy1q9IRVUIDgm/SHFpUZoAE54YwQIDAQABAoIBADG3kRhMWpSxsJ+i
+5ZYPZ2pRaztmfD9yYiQYBmhwn5i45b+sLgbeFt1EKTgSxZFKHi8Oap3mQdrfzst
KunFE41XZJxK7Ef8sWvZz9TI5oPO9yL9k/+3MHUfP4nb6BuYgAz689W5/0I9NvvF
Wdoh5qsrSM4BqCcV2QVljbLpwMKf/YwlGgW/mzXBeSCiBjfuo6tRQpXIzND1Z13a
ZDIszoAs0Al6sft8s8E1R4hGced35RsOdEbv1dmS5LiLiwpY7ZYqyZlpxBd2vAoJ
4Px8Yp7wi38RRnGU2Xp3Z3aP/FQKblmYREYk0yIJTTL9uuLEJJW/Pyjiqgz+WAOk
C3DpPJsCgYEA+2egxxH9HtRdjVeSjd7ipaHC6zigFQ/0RodWKt7MwZotptvsIU5N
Ulrxq50GV8PCKtpDSvd5vTlQOruhZPQvzviNnMZvKOitlSPAUb0wTtxCzCY5Tgf+
4GyTS0Wp/Q6+CFrBaO0tWVLpJ3pRL475ydPouIr5sE3bwB60+tYzEG8CgYEAzxNA
rQO6CQy8OzwFIpX944BX5jDV3/H7QxN6S94QhVCzUSnUJioHuh4zLU+uMGmZPeY3
jdFZbWqjTm5VeiJmwsq6VxHOLtk+o17dS9V+xTia+iND5S7HsQI+2jfn0ycWCp1K
JtA0FuCX7ITBb7SoxzbodyqEn6UXLLfVsE/ioc8CgYEAwjlqDcGJAvNgHx0jvPUP
tpSFKQJDMmJz/rT5zf74wy1gzYMkJwr+U3ytLj8OsmkrLb4XtOgCJj0MDYP9iSfZ
c5W0mgT3xewUhp7rKnr1wkcKV/vD09P7hdh75vA4BqgICh5LQ8vQeCzEsdoetJZJ
xjIvnbrIcfuEpSVT/mHTa4MCgYBF5r7faLGlGmp0KHenTDCvWoTRjMy10y65Xtra
v3SePDa8AD3AQFHpbwZhllM7vnnfXlaEhhYFDIliEXbDStebi+nJOJZ8VBOD/KMB
VWl80/Xk2ICz3c3FH/ftnA+ixL/5B02fuorK6jf+vHW76qVK0ms4xt6MMaOYEdqN
sPnVGwKBgBthXPZdLjaVC3Z047qhDurYYDtNZ1AwssXQ+OIjJ0aKHfVfUmvi46kR
aTRg73KPY4vbKRFGGhpMFyLTTtREKLscglCiOfAZWz8Vy1TcUseNBATAgPgJzEwT
0wvuUY/OdJjlFr4PvIKPgIATVqIti9zVEolAPISI41jIoYjkbX5c
-----END RSA PRIVATE KEY-----
";

const RSA1_PUB: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAy1uzNbc0Vc29YQBUxBsA
W6EdZNSkk/rEi5QI0di+xijSfHQWkrFXkE7NhJ7ZGIFl3PDBf7yRF51+MX0hJPa/
BJ/nAZD7NppRSVEOkrOPbwL2hEHoOumDrw2ZdTntDwVGYXaGv9br6Xqv4WRz5Ivx
q1WVToNSZmZm1dYj8OBiG60UsJdupmsDoc8DyHDOOuBagpV98CQ7zNZ/eJpAug1n
dqOmhItkl44l9sSQByvvVbBrODl0w20fZhcXK9aCo/cAL2ACzYhTT7qBtzRU/CIw
td/h8B+CC3kmYWfnGQOgpUSR9XFUCc1/rmLohrRy1q9IRVUIDgm/SHFpUZoAE54Y
wQIDAQAB
-----END PUBLIC KEY-----
";

/// RSA1's modulus, base64url (for the JWKS).
const RSA1_N: &str = "y1uzNbc0Vc29YQBUxBsAW6EdZNSkk_rEi5QI0di-xijSfHQWkrFXkE7NhJ7ZGIFl3PDBf7yRF51-MX0hJPa_BJ_nAZD7NppRSVEOkrOPbwL2hEHoOumDrw2ZdTntDwVGYXaGv9br6Xqv4WRz5Ivxq1WVToNSZmZm1dYj8OBiG60UsJdupmsDoc8DyHDOOuBagpV98CQ7zNZ_eJpAug1ndqOmhItkl44l9sSQByvvVbBrODl0w20fZhcXK9aCo_cAL2ACzYhTT7qBtzRU_CIwtd_h8B-CC3kmYWfnGQOgpUSR9XFUCc1_rmLohrRy1q9IRVUIDgm_SHFpUZoAE54YwQ";

const RSA2_PRIV: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEowIBAAKCAQEAtYtVEJ1p7/HWVMkgg+Wn1Mh1AKCkjvMpJ/F+95zjd7weWtfZ
RxHwcUCx3RaWehv4jVNUe5elD8NapKJ/MEn006B2zlarr6covhLocsvvSrb3ZR2l
zCUyv+/I14K3NKS2JCwTJWZrlVS76fkGdlWi/GDQ5Ey7uzdZUx8PdKOwuF5QX9x2
AHHZSa+A3pR6OqU9WCyrUjaJzq9RbRDKSZJ8V75JTKFKOMYE76Sjw6Pb8s514w0t
q3IHe6fWh1dYowzpa6/Zip6Au0T/xppcf6g2NBu7VcLzAV1khlq2JMvh7Y6QQrf5
XFT7Lb2U1PNfK7tXn3kZuR3ajBGzyFRxwA59qQIDAQABAoIBAAhpgCPQs3m1kkmj
9zB9agEzV66TgwSHsmrCJzC4kZa4/gwWD+CZ7XMF/SfiNc9LMAF2cMX4USLxmafi
yrN1XdWXjCHEBNkTDRF/pUs6dWhYIY8LKGVU/OzFYuBPk4cqMbFr5Gg5fncxMbLm
Ad1mWvLIVq2Ze6Jxbl9qY0gzlIr6acoiI0fzCwYkz1ld8dWeXsVkJHqvxLIyMLpU
zbbs+kVhGDHGG3macKkUlIpBrb1E7F7tkX4aaGWcv9Bm4ktg9lV4JMdmbNToipQ4
ir0QWy6UDZ7zpvPjAPGfRYvaiIUdqbnQk6+PZUACdnCroJonLV7FbY4uXKE/IcDc
mATPx70CgYEA5JnGzsh0ylzsKh/xEkIdtwIMy853Gh0ZCbY2waCx2onW2yyRMpq+
HqSTd32wNRnAJhUr8xFK9xQBB2lU++R3vwhdP+rogRLsKi92S/xpCTGEQ68E+w2p
wcHfZZ1qpghg5obnY0zAjQ9ZkQBzKBC9Y68l8jkCSGVj0thPZQQMNtUCgYEAy021
mY39cJ0SHk/CGH21CQsq3Tta1VebDK5QSF8j7fYAFPei5uUVF2ru+pd+hC8B/fX4
SrXPxU/4zDI0IBFoUh7UjLjg6MNQFtaLvJUcS/mdajR4eIHWFj+wpD/4cBX5GAWY
MGH6EhIF0C9JdcfI5504rWyDyE4cH3JyGkswfYUCgYEA0dog2T7Hh+VZnyoHYZ10
LcYh/Q4h48UGcRXmmkVsP5P9uuHkwLGxCexGu5CUK4riC5Ov7sjXKo4gi680JrCL
BMEm6UA6BBNc3TUIwaSKv7fHFWMbjWPzjDzvWRbzCkvyuGzrCQsyT8vhiu0Ayazk
TxhAG2YeJFt/EdUkvTTECakCgYAliFQlZBxM5QKKTAk2Qkbgw4oHS8TqLAE45xl1
MvNMJCVBubH+VH5/U0OJSdyWhKMmgnlzOXuBHtF8ySvsW6pZts1gqWUEM8KeZL9p
clHGCPAxwjwXa0jd1KZEvHaeIsBY2feNvxjOqzsdgw1ZzCdf8xuakLUHjrwMZjGA
fy8VjQKBgGojLtU8xhNMPIdvw6HqaWHGNgxlJ9WmxZSxr8RaW4q8JE0cSd/FGAWw
KosnHhAlvNMoY/UHvaeURDtgp/gTfKLlNM8HXKMZ7El255Ski0f3t9C2L+4FwASR
cqacK3RW2GJESeHFOIVPKUs6CDuQTk/ngEJ2FgBRuI5n+j0JEsFy
-----END RSA PRIVATE KEY-----
";

/// RSA2's modulus, base64url (for the rotated JWKS).
const RSA2_N: &str = "tYtVEJ1p7_HWVMkgg-Wn1Mh1AKCkjvMpJ_F-95zjd7weWtfZRxHwcUCx3RaWehv4jVNUe5elD8NapKJ_MEn006B2zlarr6covhLocsvvSrb3ZR2lzCUyv-_I14K3NKS2JCwTJWZrlVS76fkGdlWi_GDQ5Ey7uzdZUx8PdKOwuF5QX9x2AHHZSa-A3pR6OqU9WCyrUjaJzq9RbRDKSZJ8V75JTKFKOMYE76Sjw6Pb8s514w0tq3IHe6fWh1dYowzpa6_Zip6Au0T_xppcf6g2NBu7VcLzAV1khlq2JMvh7Y6QQrf5XFT7Lb2U1PNfK7tXn3kZuR3ajBGzyFRxwA59qQ";

const EC_PRIV: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgmaca1iYdLHkLAv4J
HiBGbfV4kcXeokEu6CQHb8/jhqOhRANCAARqTjaHEL6Kmj7cyafdNRTQON/1ehD0
MqRtCSygace5CzOnCVD7S2pzEZ5zI4ntuBr05qKLwoXVBS7wj2iDQhaR
-----END PRIVATE KEY-----
";

const EC_PUB: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEak42hxC+ipo+3Mmn3TUU0Djf9XoQ
9DKkbQksoGnHuQszpwlQ+0tqcxGecyOJ7bga9Oaii8KF1QUu8I9og0IWkQ==
-----END PUBLIC KEY-----
";

const SECRET: &str = "corebridge-test-secret";

/// The harness's extractors plus RIG's `jwt.json_pointer` on `greeting.name`.
const JWT_EXTRACTORS: &str = r#"{"greeting":{
    "name":{"stable_field_index":0,"event":{"json_pointer":"/data/name"},"jwt":{"json_pointer":"/username"}},
    "age":{"stable_field_index":1,"event":{"json_pointer":"/data/age"}}}}"#;

const JWT_REFUSED: &str = "could not parse subscriptions: could not decode JWT:";
const PUT_JWT_REFUSED: &str = "cannot accept subscription request: invalid authorization header";

// ---------------------------------------------------------------------------------------------
// Tokens.

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims of a user's token: `username` feeds the automatic subscription, `jti` names the session.
fn user_claims(user: &str, jti: &str) -> Value {
    json!({"username": user, "jti": jti, "exp": now() + 600})
}

fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    STANDARD.decode(body).expect("PEM body is base64")
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, key).expect("sign")
}

fn hs(claims: &Value) -> String {
    hs_with(SECRET.as_bytes(), claims)
}

fn hs_with(secret: &[u8], claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        claims,
        &EncodingKey::from_secret(secret),
    )
}

fn rs(priv_pem: &str, kid: Option<&str>, claims: &Value) -> String {
    sign(
        Algorithm::RS256,
        kid,
        claims,
        &EncodingKey::from_rsa_der(&pem_der(priv_pem)),
    )
}

fn es(claims: &Value) -> String {
    sign(
        Algorithm::ES256,
        None,
        claims,
        &EncodingKey::from_ec_der(&pem_der(EC_PRIV)),
    )
}

/// A hand-built unsigned token (`alg: none`, empty signature).
fn unsigned(claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT"});
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

fn auto_sub(user: &str) -> Value {
    json!({"eventType": "greeting", "oneOf": [{"name": user}]})
}

fn greet(n: i64, name: &str) -> Value {
    ce("greeting", json!({"n": n, "name": name}))
}

/// An HS256 server with the jwt-pointer extractors and extra envs.
fn hs_server(shards: usize, extra: &[(&str, &str)]) -> Server {
    let mut envs = vec![("JWT_SECRET_KEY", SECRET), ("EXTRACTORS", JWT_EXTRACTORS)];
    envs.extend_from_slice(extra);
    Server::start_with(shards, "", &envs)
}

// ---------------------------------------------------------------------------------------------
// An SSE client that can pass `jwt` (the harness's takes only `subscriptions`).

fn query(jwt: Option<&str>, subscriptions: Option<&str>) -> String {
    let mut q = Vec::new();
    if let Some(t) = jwt {
        q.push(format!("jwt={}", enc(t)));
    }
    if let Some(s) = subscriptions {
        q.push(format!("subscriptions={}", enc(s)));
    }
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

struct Sse {
    reader: BufReader<TcpStream>,
    parser: sse::Parser,
    queue: VecDeque<sse::Message>,
    head: Response,
    token: String,
    /// The data of the first `rig.subscriptions_set`.
    subs: Value,
}

impl Sse {
    /// Connects; on 200 reads `rig.connection.create` and `rig.subscriptions_set`.
    fn connect(port: u16, jwt: Option<&str>, subscriptions: Option<&str>) -> Sse {
        Sse::connect_with(port, jwt, subscriptions, &[])
    }

    fn connect_with(
        port: u16,
        jwt: Option<&str>,
        subscriptions: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Sse {
        let path = format!("/_rig/v1/connection/sse{}", query(jwt, subscriptions));
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut req = format!("GET {path} HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        w.write_all(req.as_bytes()).unwrap();
        let mut reader = BufReader::new(s);
        let head = read_response(&mut reader);
        let mut c = Sse {
            reader,
            parser: sse::Parser::new(),
            queue: Default::default(),
            head,
            token: String::new(),
            subs: Value::Null,
        };
        if c.head.status == 200 {
            let create = c.next();
            assert_eq!(create.event.as_deref(), Some("rig.connection.create"));
            let v: Value = serde_json::from_str(&create.data).unwrap();
            c.token = v["data"]["connection_token"].as_str().unwrap().to_string();
            c.subs = c.next_subs_set();
        }
        c
    }

    /// Connects and asserts the 200.
    fn ok(port: u16, jwt: Option<&str>, subscriptions: Option<&str>) -> Sse {
        let c = Sse::connect(port, jwt, subscriptions);
        assert_eq!(c.head.status, 200, "SSE connect: {}", c.head.text());
        c
    }

    fn set_timeout(&self, d: Duration) {
        self.reader.get_ref().set_read_timeout(Some(d)).unwrap();
    }

    /// Ok(Some) a message, Ok(None) the stream ended (last chunk or EOF), Err a read error or
    /// timeout.
    fn read(&mut self) -> std::io::Result<Option<sse::Message>> {
        loop {
            if let Some(m) = self.queue.pop_front() {
                return Ok(Some(m));
            }
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            let size = usize::from_str_radix(line.trim_end(), 16).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("chunk {line:?}"))
            })?;
            if size == 0 {
                return Ok(None);
            }
            let mut data = vec![0; size + 2];
            self.reader.read_exact(&mut data)?;
            data.truncate(size);
            self.queue.extend(self.parser.feed(&data));
        }
    }

    fn next(&mut self) -> sse::Message {
        match self.read() {
            Ok(Some(m)) => m,
            Ok(None) => panic!("the SSE stream ended; expected a message"),
            Err(e) => panic!("no SSE message: {e}"),
        }
    }

    fn next_event(&mut self) -> Value {
        let m = self.next();
        serde_json::from_str(&m.data).unwrap()
    }

    /// The next message must be `rig.subscriptions_set`; returns its data.
    fn next_subs_set(&mut self) -> Value {
        let m = self.next();
        assert_eq!(
            m.event.as_deref(),
            Some("rig.subscriptions_set"),
            "{}",
            m.data
        );
        let v: Value = serde_json::from_str(&m.data).unwrap();
        v["data"].clone()
    }

    /// Asserts the stream ends (cleanly) within a few seconds, with no further message.
    fn assert_ends(&mut self) {
        self.set_timeout(Duration::from_secs(5));
        match self.read() {
            Ok(None) => {}
            Ok(Some(m)) => panic!("expected the stream to end, got {:?} {}", m.event, m.data),
            Err(e) => panic!("expected the stream to end, got {e}"),
        }
    }

    fn shard(&self) -> u16 {
        token_shard(&self.token)
    }

    /// `data.n` of every event until (and including) the one with `data.n == last`.
    fn ns_until(&mut self, last: i64) -> Vec<i64> {
        let mut got = Vec::new();
        for _ in 0..1000 {
            let e = self.next_event();
            let n = e["data"]["n"]
                .as_i64()
                .unwrap_or_else(|| panic!("unexpected event {e}"));
            got.push(n);
            if n == last {
                return got;
            }
        }
        panic!("event {last} never arrived: {got:?}");
    }
}

fn put_subs(srv: &Server, token: &str, bearer: Option<&str>, body: &Value) -> Response {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    request(
        srv.inbound,
        "PUT",
        &format!("/_rig/v1/connection/sse/{token}/subscriptions"),
        &headers,
        body.to_string().as_bytes(),
    )
}

fn publish_ok(srv: &Server, events: &[Value]) {
    for e in events {
        let r = publish(srv.inbound, e);
        assert_eq!(r.status, 202, "{}", r.text());
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket and long-poll helpers.

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

fn ws_set_timeout(ws: &mut Ws, d: Duration) {
    match ws.get_mut() {
        MaybeTlsStream::Plain(s) => s.set_read_timeout(Some(d)).unwrap(),
        _ => unreachable!("plain ws:// only"),
    }
}

fn ws_open(port: u16, jwt: Option<&str>, subscriptions: Option<&str>) -> Ws {
    let url = format!(
        "ws://127.0.0.1:{port}/_rig/v1/connection/ws{}",
        query(jwt, subscriptions)
    );
    let (mut ws, resp) = tungstenite::connect(url).expect("ws handshake");
    assert_eq!(resp.status().as_u16(), 101);
    ws_set_timeout(&mut ws, Duration::from_secs(5));
    ws
}

/// The next text frame as JSON (server pings skipped).
fn ws_text(ws: &mut Ws) -> Value {
    for _ in 0..8 {
        match ws.read().expect("a websocket frame") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
    panic!("only pings arrived");
}

/// Reads frames until a close frame (bounded by the 5 s read timeout).
fn ws_close(ws: &mut Ws) -> CloseFrame {
    for _ in 0..8 {
        match ws.read() {
            Ok(Message::Close(Some(f))) => return f,
            Ok(Message::Close(None)) => panic!("close frame without a code"),
            Ok(Message::Ping(_)) => continue,
            Ok(other) => panic!("expected a close frame, got {other:?}"),
            Err(e) => panic!("no close frame: {e}"),
        }
    }
    panic!("no close frame among the first frames");
}

const LP: &str = "/_rig/v1/connection/longpolling";

fn blacklist(srv: &Server, session: &str, secs: u64) -> Response {
    request(
        srv.api,
        "POST",
        "/v3/session-blacklist",
        &[("content-type", "application/json")],
        json!({"sessionId": session, "validityInSeconds": secs})
            .to_string()
            .as_bytes(),
    )
}

fn blacklist_ok(srv: &Server, session: &str) {
    let r = blacklist(srv, session, 60);
    assert_eq!(r.status, 201, "{}", r.text());
}

// ---------------------------------------------------------------------------------------------
// A tiny HTTP/1.1 server (JWKS endpoint, authorization checker): answers every request with the
// configured status and body, records what it received, stops when dropped (or after 2 min).

#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

struct MockState {
    status: u16,
    body: String,
    /// How long to wait before answering (a slow identity provider or checker).
    delay: Duration,
    seen: Vec<Seen>,
}

struct Mock {
    port: u16,
    state: Arc<Mutex<MockState>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Mock {
    fn start(status: u16, body: &str) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(MockState {
            status,
            body: body.to_string(),
            delay: Duration::ZERO,
            seen: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !sp.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((s, _)) => Mock::serve(s, &st),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Mock {
            port,
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn serve(s: TcpStream, state: &Mutex<MockState>) {
        let _ = s.set_nonblocking(false);
        let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
        let Ok(mut w) = s.try_clone() else { return };
        let mut r = BufReader::new(s);
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let len = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0)
            .min(1 << 20);
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let (status, reply, delay) = {
            let mut st = state.lock().unwrap();
            st.seen.push(Seen {
                at: Instant::now(),
                method,
                path,
                headers,
                body,
            });
            (st.status, st.body.clone(), st.delay)
        };
        std::thread::sleep(delay);
        let _ = write!(
            w,
            "HTTP/1.1 {status} Test\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
            reply.len()
        );
        let _ = w.flush();
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn set(&self, status: u16, body: &str) {
        let mut st = self.state.lock().unwrap();
        st.status = status;
        st.body = body.to_string();
    }

    fn set_delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Waits (bounded) until at least `n` requests arrived.
    fn wait_seen(&self, n: usize, within: Duration) -> Vec<Seen> {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.seen();
            if seen.len() >= n {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "the mock got {} request(s), expected {n}",
                seen.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Automatic subscriptions.

#[test]
fn jwt_claims_become_automatic_subscriptions() {
    let srv = hs_server(1, &[]);
    let joe = hs(&user_claims("joe", "s-joe"));
    let ann = hs(&user_claims("ann", "s-ann"));

    let mut j = Sse::ok(srv.inbound, Some(&joe), None);
    assert_eq!(j.subs, json!([auto_sub("joe")]));
    let mut a = Sse::ok(srv.inbound, Some(&ann), None);
    assert_eq!(a.subs, json!([auto_sub("ann")]));
    publish_ok(
        &srv,
        &[
            greet(1, "ann"),
            greet(2, "joe"),
            greet(3, "ann"),
            greet(4, "joe"),
        ],
    );
    assert_eq!(j.ns_until(4), [2, 4], "joe gets joe's events only");
    assert_eq!(a.ns_until(3), [1, 3], "ann gets ann's events only");

    // Connecting reads the `jwt` parameter only, never an Authorization header (RIG).
    let h = format!("Bearer {joe}");
    let c = Sse::connect_with(srv.inbound, None, None, &[("authorization", &h)]);
    assert_eq!(c.head.status, 200, "{}", c.head.text());
    assert_eq!(c.subs, json!([]));

    // Manual subscriptions are merged after the automatic one (RIG: uniq(jwt ++ manual)).
    let mut m = Sse::ok(
        srv.inbound,
        Some(&joe),
        Some(r#"[{"eventType":"greeting","oneOf":[{"name":"joe"}]},{"eventType":"other"}]"#),
    );
    assert_eq!(
        m.subs,
        json!([auto_sub("joe"), {"eventType": "other", "oneOf": []}])
    );
    publish_ok(
        &srv,
        &[
            greet(5, "ann"),
            ce("other", json!({"n": 6})),
            greet(7, "joe"),
        ],
    );
    assert_eq!(m.ns_until(7), [6, 7]);

    // PUT with joe's token: automatic subscription recomputed and kept, manual ones replaced.
    let r = put_subs(
        &srv,
        &m.token,
        Some(&joe),
        &json!({"subscriptions": [{"eventType": "third"}]}),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        m.next_subs_set(),
        json!([auto_sub("joe"), {"eventType": "third", "oneOf": []}])
    );
    publish_ok(
        &srv,
        &[
            ce("other", json!({"n": 8})),
            greet(9, "ann"),
            ce("third", json!({"n": 10})),
            greet(11, "joe"),
        ],
    );
    assert_eq!(m.ns_until(11), [10, 11]);

    // PUT without Authorization: the automatic subscription is dropped.
    let r = put_subs(
        &srv,
        &m.token,
        None,
        &json!({"subscriptions": [{"eventType": "third"}]}),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        m.next_subs_set(),
        json!([{"eventType": "third", "oneOf": []}])
    );
    publish_ok(&srv, &[greet(12, "joe"), ce("third", json!({"n": 13}))]);
    assert_eq!(m.ns_until(13), [13]);

    // Several bearer credentials (comma-separated, or several headers): each one's automatic
    // subscription, in order.
    for (i, headers) in [
        vec![format!("Bearer {joe}, Bearer {ann}")],
        vec![format!("Bearer {joe}"), format!("Bearer {ann}")],
        vec![format!("Bearer {joe}, {ann}")],
    ]
    .iter()
    .enumerate()
    {
        let mut h = vec![("content-type", "application/json")];
        h.extend(headers.iter().map(|v| ("authorization", v.as_str())));
        let r = request(
            srv.inbound,
            "PUT",
            &format!("/_rig/v1/connection/sse/{}/subscriptions", m.token),
            &h,
            br#"{"subscriptions":[]}"#,
        );
        assert_eq!(r.status, 204, "case {i}: {}", r.text());
        assert_eq!(
            m.next_subs_set(),
            json!([auto_sub("joe"), auto_sub("ann")]),
            "case {i}"
        );
    }

    // PUT with ann's token: the automatic subscription follows this request's token.
    let r = put_subs(&srv, &m.token, Some(&ann), &json!({"subscriptions": []}));
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(m.next_subs_set(), json!([auto_sub("ann")]));
    publish_ok(&srv, &[greet(14, "joe"), greet(15, "ann")]);
    assert_eq!(m.ns_until(15), [15]);
}

// ---------------------------------------------------------------------------------------------
// 2. Refused tokens.

fn assert_jwt_refused(r: &Response, what: &str) {
    assert_eq!(r.status, 400, "{what}: {}", r.text());
    assert!(
        r.text().starts_with(JWT_REFUSED),
        "{what}: body {:?}",
        r.text()
    );
}

fn sse_get(srv: &Server, jwt: &str) -> Response {
    request(
        srv.inbound,
        "GET",
        &format!("/_rig/v1/connection/sse{}", query(Some(jwt), None)),
        &[],
        b"",
    )
}

#[test]
fn bad_tokens_are_refused_as_rig_does() {
    let srv = hs_server(2, &[]);
    let good = user_claims("joe", "s1");
    let expired = json!({"username": "joe", "jti": "s1", "exp": now() - 60});
    let valid = hs(&good);
    // A valid token whose payload is swapped for another user's: the signature no longer fits.
    let forged = {
        let other = hs(&user_claims("ann", "s1"));
        let p: Vec<&str> = valid.split('.').collect();
        let q: Vec<&str> = other.split('.').collect();
        format!("{}.{}.{}", p[0], q[1], p[2])
    };
    let cases = [
        ("expired", hs(&expired)),
        ("wrong secret", hs_with(b"another secret", &good)),
        ("payload swapped", forged),
        ("alg none", unsigned(&good)),
        ("not a JWT", "not-a-jwt".to_string()),
        ("RS256 for an HS256 server", rs(RSA1_PRIV, None, &good)),
    ];
    for (what, token) in &cases {
        let r = sse_get(&srv, token);
        assert_jwt_refused(&r, what);
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        // Long-polling refuses the same way.
        let r = request(
            srv.inbound,
            "GET",
            &format!("{LP}{}", query(Some(token), None)),
            &[],
            b"",
        );
        assert_jwt_refused(&r, &format!("long-poll, {what}"));
    }
    let r = sse_get(&srv, &hs(&expired));
    assert!(r.text().contains("expired"), "{}", r.text());

    // Within the default 5 s leeway a just-expired token still counts.
    let recent = json!({"username": "joe", "jti": "s1", "exp": now() - 1});
    let c = Sse::ok(srv.inbound, Some(&hs(&recent)), None);
    assert_eq!(c.subs, json!([auto_sub("joe")]));

    // WebSocket: upgrade, then close 1000 "Bad request." (no detail).
    for (what, token) in &cases {
        let mut ws = ws_open(srv.inbound, Some(token), None);
        let f = ws_close(&mut ws);
        assert_eq!(
            (u16::from(f.code), f.reason.as_str()),
            (1000, "Bad request."),
            "{what}"
        );
    }

    // PUT with an invalid bearer token.
    let c = Sse::ok(srv.inbound, None, None);
    for (what, token) in &cases {
        let r = put_subs(&srv, &c.token, Some(token), &json!({"subscriptions": []}));
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert!(
            r.text().starts_with(PUT_JWT_REFUSED),
            "{what}: {:?}",
            r.text()
        );
    }
    // The valid token is fine on every path.
    let r = put_subs(&srv, &c.token, Some(&valid), &json!({"subscriptions": []}));
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(sse_get(&srv, &valid).status, 200);
}

#[test]
fn algorithm_confusion_is_refused() {
    // The server verifies RS256 with a PEM public key; a token HMAC-signed with that PEM as the
    // secret must not pass (the classic HS/RS confusion).
    let srv = Server::start_with(
        1,
        "",
        &[
            ("JWT_ALG", "RS256"),
            ("JWT_SECRET_KEY", RSA1_PUB),
            ("EXTRACTORS", JWT_EXTRACTORS),
        ],
    );
    let claims = user_claims("joe", "s1");
    assert_jwt_refused(
        &sse_get(&srv, &hs_with(RSA1_PUB.as_bytes(), &claims)),
        "HS256 signed with the public PEM",
    );
    assert_jwt_refused(
        &sse_get(&srv, &hs_with(RSA1_PUB.trim().as_bytes(), &claims)),
        "HS256 signed with the trimmed public PEM",
    );
    assert_jwt_refused(&sse_get(&srv, &unsigned(&claims)), "alg none");
    // The real thing passes, so the refusals above are about the tokens.
    assert_eq!(sse_get(&srv, &rs(RSA1_PRIV, None, &claims)).status, 200);
}

// ---------------------------------------------------------------------------------------------
// 3. RS256 and ES256 with PEM public keys.

#[test]
fn rs256_and_es256_pem_keys() {
    let rsa = Server::start_with(
        1,
        "",
        &[
            ("JWT_ALG", "RS256"),
            ("JWT_SECRET_KEY", RSA1_PUB),
            ("EXTRACTORS", JWT_EXTRACTORS),
        ],
    );
    let c = Sse::ok(
        rsa.inbound,
        Some(&rs(RSA1_PRIV, None, &user_claims("joe", "r1"))),
        None,
    );
    assert_eq!(c.subs, json!([auto_sub("joe")]));
    assert_jwt_refused(
        &sse_get(&rsa, &rs(RSA2_PRIV, None, &user_claims("joe", "r1"))),
        "RS256 signed by another key",
    );

    // RIG deployments pass PEMs with literal "\n" sequences; accepted too.
    let escaped = EC_PUB.trim().replace('\n', "\\n");
    let ec = Server::start_with(
        1,
        "",
        &[
            ("JWT_ALG", "ES256"),
            ("JWT_SECRET_KEY", &escaped),
            ("EXTRACTORS", JWT_EXTRACTORS),
        ],
    );
    let mut c = Sse::ok(ec.inbound, Some(&es(&user_claims("ann", "e1"))), None);
    assert_eq!(c.subs, json!([auto_sub("ann")]));
    publish_ok(&ec, &[greet(1, "joe"), greet(2, "ann")]);
    assert_eq!(c.ns_until(2), [2]);
    assert_jwt_refused(
        &sse_get(&ec, &rs(RSA1_PRIV, None, &user_claims("ann", "e1"))),
        "RS256 token on an ES256 server",
    );
}

// ---------------------------------------------------------------------------------------------
// 4. JWKS with key rotation.

fn jwks(kid: &str, n: &str) -> String {
    json!({"keys": [{"kty": "RSA", "kid": kid, "n": n, "e": "AQAB", "alg": "RS256", "use": "sig"}]})
        .to_string()
}

#[test]
fn jwks_keys_are_fetched_and_rotated() {
    let idp = Mock::start(200, &jwks("k1", RSA1_N));
    let url = idp.url("/jwks");
    let srv = Server::start_with(
        2,
        "",
        &[
            ("CB_JWT_JWKS_URL", &url),
            ("JWT_ALG", "RS256"),
            ("EXTRACTORS", JWT_EXTRACTORS),
        ],
    );
    let first = idp.wait_seen(1, Duration::from_secs(5));
    let fetched = first[0].at;
    assert_eq!(
        (first[0].method.as_str(), first[0].path.as_str()),
        ("GET", "/jwks")
    );
    assert_eq!(first[0].header("accept"), Some("application/json"));

    let k1 = rs(RSA1_PRIV, Some("k1"), &user_claims("joe", "j1"));
    let k2 = rs(RSA2_PRIV, Some("k2"), &user_claims("ann", "j2"));
    let c = connect_once_keys_loaded(srv.inbound, &k1);
    assert_eq!(c.subs, json!([auto_sub("joe")]));

    // The identity provider rotates to k2. A k2 token within 10 s of the last fetch cannot
    // trigger a refresh (a peer picks the kid), so it is refused and nothing is fetched.
    idp.set(200, &jwks("k2", RSA2_N));
    assert_jwt_refused(&sse_get(&srv, &k2), "k2 before a refresh is allowed");
    assert_eq!(idp.seen().len(), 1, "an unknown kid refreshed too early");

    // Past the 10 s rate limit, the unknown kid triggers one refresh and the token passes.
    let ready = fetched + Duration::from_millis(10_300);
    std::thread::sleep(ready.saturating_duration_since(Instant::now()));
    let c = Sse::connect(srv.inbound, Some(&k2), None);
    assert_eq!(c.head.status, 200, "k2 after rotation: {}", c.head.text());
    assert_eq!(c.subs, json!([auto_sub("ann")]));
    assert_eq!(idp.seen().len(), 2, "exactly one refresh");
    // k1 is gone from the key set, and the refresh just happened: refused, no new fetch.
    assert_jwt_refused(&sse_get(&srv, &k1), "k1 after rotation");
    assert_eq!(idp.seen().len(), 2);
}

/// Connects once the JWKS keys are installed (right after the initial fetch).
fn connect_once_keys_loaded(port: u16, token: &str) -> Sse {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let c = Sse::connect(port, Some(token), None);
        if c.head.status == 200 || Instant::now() > deadline {
            assert_eq!(c.head.status, 200, "{}", c.head.text());
            return c;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn keycloak_realm_names_the_jwks_url() {
    let idp = Mock::start(200, &jwks("k1", RSA1_N));
    let base = idp.url("/auth/");
    // No JWT_ALG: a JWKS implies RS256.
    let srv = Server::start_with(
        1,
        "",
        &[
            ("SECURITY_OAUTH2_BASESERVERURL", &base),
            ("SECURITY_OAUTH2_SAREALM", "flowx"),
            ("EXTRACTORS", JWT_EXTRACTORS),
        ],
    );
    let seen = idp.wait_seen(1, Duration::from_secs(5));
    assert_eq!(
        seen[0].path, "/auth/realms/flowx/protocol/openid-connect/certs",
        "{seen:?}"
    );
    let c = connect_once_keys_loaded(
        srv.inbound,
        &rs(RSA1_PRIV, Some("k1"), &user_claims("joe", "kc1")),
    );
    assert_eq!(c.subs, json!([auto_sub("joe")]));
    // A token without kid is fine while the key set holds a single key.
    let c = Sse::ok(
        srv.inbound,
        Some(&rs(RSA1_PRIV, None, &user_claims("ann", "kc2"))),
        None,
    );
    assert_eq!(c.subs, json!([auto_sub("ann")]));
    assert_jwt_refused(
        &sse_get(&srv, &rs(RSA2_PRIV, Some("k1"), &user_claims("joe", "kc1"))),
        "kid k1 signed by another key",
    );
    // The base URL alone: FlowX's default service-accounts realm.
    let idp = Mock::start(200, &jwks("k1", RSA1_N));
    let base = idp.url("/auth");
    let _srv = Server::start_with(
        1,
        "",
        &[
            ("SECURITY_OAUTH2_BASESERVERURL", &base),
            ("EXTRACTORS", JWT_EXTRACTORS),
        ],
    );
    let seen = idp.wait_seen(1, Duration::from_secs(5));
    assert_eq!(
        seen[0].path,
        "/auth/realms/00000002-0002-4002-8002-000000000002/protocol/openid-connect/certs",
        "{seen:?}"
    );
}

#[test]
fn issuer_audience_and_leeway_when_configured() {
    let srv = hs_server(
        1,
        &[
            ("CB_JWT_ISSUER", "https://idp.test/realms/a"),
            ("CB_JWT_AUDIENCE", "corebridge"),
            ("CB_JWT_LEEWAY_SECS", "0"),
        ],
    );
    let claims = |iss: Option<&str>, aud: Option<Value>, exp: u64| {
        let mut c = json!({"username": "joe", "jti": "i1", "exp": exp});
        if let Some(i) = iss {
            c["iss"] = json!(i);
        }
        if let Some(a) = aud {
            c["aud"] = a;
        }
        c
    };
    let iss = Some("https://idp.test/realms/a");
    let later = now() + 600;
    for aud in [json!("corebridge"), json!(["account", "corebridge"])] {
        let c = Sse::ok(srv.inbound, Some(&hs(&claims(iss, Some(aud), later))), None);
        assert_eq!(c.subs, json!([auto_sub("joe")]));
    }
    for (what, c) in [
        (
            "other issuer",
            claims(
                Some("https://idp.test/realms/b"),
                Some(json!("corebridge")),
                later,
            ),
        ),
        ("no issuer", claims(None, Some(json!("corebridge")), later)),
        ("other audience", claims(iss, Some(json!("account")), later)),
        ("no audience", claims(iss, None, later)),
        (
            "expired a second ago, no leeway",
            claims(iss, Some(json!("corebridge")), now() - 1),
        ),
    ] {
        assert_jwt_refused(&sse_get(&srv, &hs(&c)), what);
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Session blacklist.

#[test]
fn blacklist_api_follows_rig() {
    let srv = hs_server(1, &[]);
    let r = blacklist(&srv, "s1", 60);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.text(), "{}");
    assert_eq!(r.header("location"), Some("/v3/session-blacklist/s1"));
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let r = request(srv.api, "GET", "/v3/session-blacklist/s1", &[], b"");
    assert_eq!((r.status, r.text().as_str()), (200, "{}"));
    let r = request(srv.api, "GET", "/v2/session-blacklist/s1", &[], b"");
    assert_eq!((r.status, r.text().as_str()), (200, "{}"));
    let r = request(srv.api, "GET", "/v3/session-blacklist/unknown", &[], b"");
    assert_eq!((r.status, r.text().as_str()), (404, "Not found."));

    let post = |body: &str| {
        request(
            srv.api,
            "POST",
            "/v3/session-blacklist",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
    };
    for (body, want) in [
        (
            r#"{"validityInSeconds":60}"#,
            r#"Missing value for "sessionId""#,
        ),
        (
            r#"{"sessionId":"","validityInSeconds":60}"#,
            r#"Expected non-empty string, got """#,
        ),
        (
            r#"{"sessionId":7,"validityInSeconds":60}"#,
            "Expected non-empty string, got 7",
        ),
        (
            r#"{"sessionId":"s2"}"#,
            r#"Missing value for "validityInSeconds""#,
        ),
        (
            r#"{"sessionId":"s2","validityInSeconds":"soon"}"#,
            r#"Expected a number, got "soon""#,
        ),
        (
            r#"{"sessionId":"s2","validityInSeconds":-3}"#,
            "Expected a positive number, got -3",
        ),
        (
            r#"{"sessionId":"s2","validityInSeconds":0}"#,
            "Expected a positive number, got 0",
        ),
    ] {
        let r = post(body);
        assert_eq!((r.status, r.text().as_str()), (400, want), "{body}");
    }
    let r = request(srv.api, "GET", "/v3/session-blacklist/s2", &[], b"");
    assert_eq!(r.status, 404, "refused entries are not stored");

    // A numeric string is a number; entries expire after their validity, and the session's
    // tokens are accepted again.
    let brief = hs(&user_claims("joe", "brief"));
    let r = post(r#"{"sessionId":"brief","validityInSeconds":"1"}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        request(srv.api, "GET", "/v3/session-blacklist/brief", &[], b"").status,
        200
    );
    assert_jwt_refused(&sse_get(&srv, &brief), "blacklisted for a second");
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(
        request(srv.api, "GET", "/v3/session-blacklist/brief", &[], b"").status,
        404,
        "expired after validityInSeconds"
    );
    assert_eq!(sse_get(&srv, &brief).status, 200, "accepted after expiry");

    // Ids are percent-decoded in the GET path.
    let r = post(r#"{"sessionId":"a b/c","validityInSeconds":60}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = request(srv.api, "GET", "/v3/session-blacklist/a%20b%2Fc", &[], b"");
    assert_eq!((r.status, r.text().as_str()), (200, "{}"));
}

#[test]
fn blacklisting_a_session_ends_its_connections_on_every_shard() {
    let srv = hs_server(4, &[]);
    let s1 = hs(&user_claims("joe", "s1"));
    let s2 = hs(&user_claims("joe", "s2"));
    let pings = r#"[{"eventType":"ping"}]"#;

    let mut victims: Vec<Sse> = Vec::new();
    let mut shards = HashSet::new();
    while (shards.len() < 2 || victims.len() < 3) && victims.len() < 60 {
        let c = Sse::ok(srv.inbound, Some(&s1), Some(pings));
        shards.insert(c.shard());
        victims.push(c);
    }
    assert!(shards.len() >= 2, "SSE connections on shards {shards:?}");
    let mut ws = ws_open(srv.inbound, Some(&s1), Some(pings));
    assert_eq!(ws_text(&mut ws)["type"], "rig.connection.create");
    assert_eq!(ws_text(&mut ws)["type"], "rig.subscriptions_set");
    let r = request(
        srv.inbound,
        "GET",
        &format!("{LP}{}", query(Some(&s1), Some(pings))),
        &[],
        b"",
    );
    assert_eq!((r.status, r.text().as_str()), (200, "\"ok\""), "{r:?}");
    let lp_token = r
        .set_cookie("connection_token")
        .expect("connection_token cookie");
    let lp_cookie =
        |token: &str| format!("connection_token={token}; last_event_id=\"first_event\"");
    // The long-poll session is alive: its first poll returns the two set-up events.
    let r = request(
        srv.inbound,
        "GET",
        LP,
        &[("cookie", &lp_cookie(&lp_token))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["events"].as_array().map(Vec::len), Some(2), "{body}");
    let mut bystander = Sse::ok(srv.inbound, Some(&s2), Some(pings));

    // Everyone is live before the kill.
    publish_ok(&srv, &[ce("ping", json!({"n": 1}))]);
    for c in victims.iter_mut().chain([&mut bystander]) {
        assert_eq!(c.ns_until(1), [1]);
    }
    assert_eq!(ws_text(&mut ws)["data"]["n"], 1);

    blacklist_ok(&srv, "s1");
    for c in victims.iter_mut() {
        let m = c.next();
        assert_eq!(
            m.event.as_deref(),
            Some("rig.session_killed"),
            "shard {}: {}",
            c.shard(),
            m.data
        );
        let e: Value = serde_json::from_str(&m.data).unwrap();
        assert_eq!(e["type"], "rig.session_killed");
        assert!(e.get("data").is_none(), "session_killed has no data: {e}");
        c.assert_ends();
    }
    let f = ws_close(&mut ws);
    assert_eq!(
        (u16::from(f.code), f.reason.as_str()),
        (1000, "Session killed.")
    );
    // The long-poll session is gone: its cookie now starts a new session.
    let r = request(
        srv.inbound,
        "GET",
        LP,
        &[("cookie", &lp_cookie(&lp_token))],
        b"",
    );
    assert_eq!((r.status, r.text().as_str()), (200, "\"ok\""), "{r:?}");
    let new_token = r
        .set_cookie("connection_token")
        .expect("a new connection_token");
    assert_ne!(new_token, lp_token);

    // Another session is untouched.
    publish_ok(&srv, &[ce("ping", json!({"n": 2}))]);
    assert_eq!(bystander.ns_until(2), [2]);

    // The blacklisted token is refused everywhere from now on.
    assert_jwt_refused(&sse_get(&srv, &s1), "blacklisted session");
    let mut ws = ws_open(srv.inbound, Some(&s1), None);
    let f = ws_close(&mut ws);
    assert_eq!(
        (u16::from(f.code), f.reason.as_str()),
        (1000, "Bad request.")
    );
    let r = put_subs(
        &srv,
        &bystander.token,
        Some(&s1),
        &json!({"subscriptions": []}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().starts_with(PUT_JWT_REFUSED), "{}", r.text());
    assert_eq!(
        request(srv.api, "GET", "/v3/session-blacklist/s1", &[], b"").status,
        200
    );
}

#[test]
fn session_field_names_the_session() {
    let srv = hs_server(2, &[("JWT_SESSION_FIELD", "/sid")]);
    let token = hs(&json!({"username": "joe", "jti": "jti-1", "sid": "sid-1", "exp": now() + 600}));
    let mut c = Sse::ok(srv.inbound, Some(&token), Some(r#"[{"eventType":"ping"}]"#));

    // Blacklisting the jti does not end a session keyed by sid.
    blacklist_ok(&srv, "jti-1");
    publish_ok(&srv, &[ce("ping", json!({"n": 1}))]);
    assert_eq!(c.ns_until(1), [1]);

    blacklist_ok(&srv, "sid-1");
    assert_eq!(c.next().event.as_deref(), Some("rig.session_killed"));
    c.assert_ends();
    assert_jwt_refused(&sse_get(&srv, &token), "blacklisted sid");

    // A numeric session claim is keyed by its JSON text.
    let numeric = hs(&json!({"username": "ann", "sid": 42, "exp": now() + 600}));
    let mut c = Sse::ok(srv.inbound, Some(&numeric), None);
    blacklist_ok(&srv, "42");
    assert_eq!(c.next().event.as_deref(), Some("rig.session_killed"));
    c.assert_ends();
}

#[test]
fn put_with_a_token_associates_the_connection_with_its_session() {
    let srv = hs_server(2, &[]);
    let mut c = Sse::ok(srv.inbound, None, Some(r#"[{"eventType":"ping"}]"#));
    let s3 = hs(&user_claims("joe", "s3"));
    let body = json!({"subscriptions": [{"eventType": "ping"}]});
    let r = put_subs(&srv, &c.token, Some(&s3), &body);
    assert_eq!(r.status, 204, "{}", r.text());
    c.next_subs_set();
    blacklist_ok(&srv, "s3");
    assert_eq!(c.next().event.as_deref(), Some("rig.session_killed"));
    c.assert_ends();
}

#[test]
fn a_connection_stays_associated_with_every_session_it_used() {
    let srv = hs_server(2, &[]);
    let m1 = hs(&user_claims("joe", "m1"));
    let m2 = hs(&user_claims("joe", "m2"));
    let mut c = Sse::ok(srv.inbound, Some(&m1), Some(r#"[{"eventType":"ping"}]"#));
    let body = json!({"subscriptions": [{"eventType": "ping"}]});
    let r = put_subs(&srv, &c.token, Some(&m2), &body);
    assert_eq!(r.status, 204, "{}", r.text());
    c.next_subs_set();
    blacklist_ok(&srv, "m1");
    c.set_timeout(Duration::from_secs(3));
    let m = c.read();
    assert!(
        matches!(&m, Ok(Some(m)) if m.event.as_deref() == Some("rig.session_killed")),
        "blacklisting the session the connection was opened with must end it; got {:?}",
        m.map(|o| o.map(|m| (m.event, m.data)))
    );
    c.assert_ends();
}

#[test]
fn blacklist_during_admission_is_not_missed() {
    let checker = Mock::start(200, "{}");
    checker.set_delay(Duration::from_millis(1500));
    let url = checker.url("/check");
    let srv = hs_server(1, &[("SUBSCRIPTION_CHECK", &url)]);
    let token = hs(&user_claims("joe", "race-1"));
    let port = srv.inbound;
    let t = token.clone();
    let opening =
        std::thread::spawn(move || Sse::connect(port, Some(&t), Some(r#"[{"eventType":"ping"}]"#)));
    checker.wait_seen(1, Duration::from_secs(3));
    blacklist_ok(&srv, "race-1");
    let mut c = opening.join().unwrap();
    if c.head.status == 200 {
        c.set_timeout(Duration::from_secs(3));
        let m = c.read();
        assert!(
            matches!(&m, Ok(Some(m)) if m.event.as_deref() == Some("rig.session_killed")),
            "a connection of a blacklisted session stays open; got {:?}",
            m.map(|o| o.map(|m| (m.event, m.data)))
        );
        c.assert_ends();
    } else {
        assert_jwt_refused(&c.head, "blacklisted during admission");
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Blacklist across nodes through Kafka (helpers in tests/common/kafka.rs).

const SHARED_PORT: u16 = 19092;
const CONTROL_TOPIC: &str = "corebridge-control";

fn node(broker: &str, envs: &[(&str, &str)]) -> Server {
    let mut all = vec![
        ("KAFKA_BROKERS", broker),
        ("CB_KAFKA_START_OFFSET", "earliest"),
        ("CB_KAFKA_TOPIC_REFRESH_MS", "300"),
        ("JWT_SECRET_KEY", SECRET),
        ("EXTRACTORS", JWT_EXTRACTORS),
    ];
    all.extend_from_slice(envs);
    Server::start_with(2, "", &all)
}

fn wait_consuming(srv: &Server, topic: &str) {
    let want = format!("corebridge_kafka_consumer_lag{{topic=\"{topic}\",partition=\"0\"}}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !request(srv.api, "GET", "/metrics", &[], b"")
        .text()
        .contains(&want)
    {
        assert!(Instant::now() < deadline, "node never consumed {topic}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn blacklist_on_one_node_ends_a_session_on_another() {
    let broker = broker_up(SHARED_PORT);
    create(&broker, CONTROL_TOPIC, 1);
    let source = format!("auth-{:x}", fastrand::u32(..));
    create(&broker, &source, 1);
    let a = node(&broker, &[("KAFKA_SOURCE_TOPICS", &source)]);
    let b = node(&broker, &[("KAFKA_SOURCE_TOPICS", &source)]);
    wait_consuming(&b, CONTROL_TOPIC);
    wait_consuming(&b, &source);

    // Session ids are unique per run: the control topic keeps earlier runs' entries.
    let session = format!("kafka-s-{:x}", fastrand::u64(..));
    let other = format!("kafka-o-{:x}", fastrand::u64(..));
    let token = hs(&user_claims("joe", &session));
    let mut victim = Sse::ok(b.inbound, Some(&token), None);
    let mut bystander = Sse::ok(b.inbound, Some(&hs(&user_claims("joe", &other))), None);

    let r = blacklist(&a, &session, 60);
    assert_eq!(r.status, 201, "{}", r.text());
    let m = victim.next();
    assert_eq!(m.event.as_deref(), Some("rig.session_killed"), "{}", m.data);
    victim.assert_ends();
    // Each shard of node B applies the entry from its own queue; the one that ended the victim
    // may be a moment ahead of the one that answers next (microseconds to milliseconds).
    let listed = |srv: &Server| {
        let path = format!("/v3/session-blacklist/{session}");
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let status = request(srv.api, "GET", &path, &[], b"").status;
            if status == 200 || Instant::now() > deadline {
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    assert_eq!(listed(&b), 200);
    // The shards of node B learn the entry each from its own queue, so a connection can reach
    // one a moment before it applies it; that shard then ends it (it ends every connection of
    // the session when the entry arrives): a 200 here must be a stream that was killed.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let r = sse_get(&b, &token);
        if r.status != 200 {
            assert_jwt_refused(&r, "blacklisted on the other node");
            break;
        }
        assert!(
            r.text().contains("rig.session_killed"),
            "a stream opened just before the entry applied was not ended: {}",
            r.text()
        );
        assert!(Instant::now() < deadline, "still not refused after 2 s");
        std::thread::sleep(Duration::from_millis(10));
    }

    // The other session on node B still gets events published on node A.
    let r = publish(a.inbound, &greet(1, "joe"));
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(bystander.ns_until(1), [1]);

    // A node started after the entry was written learns it from the control topic.
    let c = node(&broker, &[("KAFKA_SOURCE_TOPICS", &source)]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while request(
        c.api,
        "GET",
        &format!("/v3/session-blacklist/{session}"),
        &[],
        b"",
    )
    .status
        != 200
    {
        assert!(
            Instant::now() < deadline,
            "the late node never learned the entry"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_jwt_refused(&sse_get(&c, &token), "blacklisted before this node started");
}

// ---------------------------------------------------------------------------------------------
// 7. SUBSCRIPTION_CHECK and SUBMISSION_CHECK.

#[test]
fn subscription_check_jwt_validation() {
    let srv = hs_server(2, &[("SUBSCRIPTION_CHECK", "jwt_validation")]);
    let joe = hs(&user_claims("joe", "c1"));
    let subs = r#"[{"eventType":"other"}]"#;
    let r = request(
        srv.inbound,
        "GET",
        &format!("/_rig/v1/connection/sse{}", query(None, Some(subs))),
        &[],
        b"",
    );
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "Subscription denied (not authorized).")
    );
    let mut ws = ws_open(srv.inbound, None, Some(subs));
    let f = ws_close(&mut ws);
    assert_eq!(
        (u16::from(f.code), f.reason.as_str()),
        (1000, "Bad request.")
    );
    // Long-polling goes through the same admission (RIG skipped the check there).
    let r = request(
        srv.inbound,
        "GET",
        &format!("{LP}{}", query(None, Some(subs))),
        &[],
        b"",
    );
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "Subscription denied (not authorized).")
    );
    let c = Sse::ok(srv.inbound, Some(&joe), Some(subs));
    assert_eq!(
        c.subs,
        json!([auto_sub("joe"), {"eventType": "other", "oneOf": []}])
    );
    // RIG skips the check when no subscriptions parameter is given.
    let anon = Sse::ok(srv.inbound, None, None);

    let body = json!({"subscriptions": [{"eventType": "other"}]});
    let r = put_subs(&srv, &anon.token, None, &body);
    assert_eq!((r.status, r.text().as_str()), (403, "Subscription denied."));
    let r = put_subs(&srv, &anon.token, Some(&joe), &body);
    assert_eq!(r.status, 204, "{}", r.text());
}

#[test]
fn subscription_check_url() {
    let checker = Mock::start(200, "{}");
    let url = checker.url("/check");
    let srv = hs_server(2, &[("SUBSCRIPTION_CHECK", &url)]);
    let joe = hs(&user_claims("joe", "u1"));
    let subs = r#"[{"eventType":"other"}]"#;

    let mut c = Sse::ok(srv.inbound, Some(&joe), Some(subs));
    assert_eq!(
        c.subs,
        json!([auto_sub("joe"), {"eventType": "other", "oneOf": []}])
    );
    let seen = checker.wait_seen(1, Duration::from_secs(2));
    assert_eq!(seen.len(), 1, "{seen:?}");
    let s = &seen[0];
    assert_eq!((s.method.as_str(), s.path.as_str()), ("POST", "/check"));
    assert_eq!(
        s.header("authorization"),
        Some(format!("Bearer {joe}").as_str())
    );
    assert_eq!(s.header("content-type"), Some("application/json"));
    assert_eq!(s.json()["subscriptions"], json!([{"eventType": "other"}]));

    // No subscriptions parameter, no check.
    let anon = Sse::ok(srv.inbound, None, None);
    assert_eq!(checker.seen().len(), 1);

    // PUT: the checker gets the request's Authorization header and body.
    let body = json!({"subscriptions": [{"eventType": "third"}]});
    let r = put_subs(&srv, &c.token, Some(&joe), &body);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        c.next_subs_set(),
        json!([auto_sub("joe"), {"eventType": "third", "oneOf": []}])
    );
    let seen = checker.wait_seen(2, Duration::from_secs(2));
    assert_eq!(
        seen[1].header("authorization"),
        Some(format!("Bearer {joe}").as_str())
    );
    assert_eq!(seen[1].json(), body);

    // 403, 401 and 500 deny.
    for status in [403, 401, 500] {
        checker.set(status, "{}");
        let r = request(
            srv.inbound,
            "GET",
            &format!("/_rig/v1/connection/sse{}", query(Some(&joe), Some(subs))),
            &[],
            b"",
        );
        assert_eq!(
            (r.status, r.text().as_str()),
            (400, "Subscription denied (not authorized)."),
            "checker answered {status}"
        );
        let r = put_subs(&srv, &anon.token, Some(&joe), &body);
        assert_eq!(
            (r.status, r.text().as_str()),
            (403, "Subscription denied."),
            "checker answered {status}"
        );
    }

    // The external checker decides about tokens the gateway cannot verify itself (RIG #377).
    checker.set(200, "{}");
    let foreign = hs_with(b"the checker's own secret", &user_claims("joe", "u1"));
    let before = checker.seen().len();
    let r = put_subs(&srv, &anon.token, Some(&foreign), &body);
    assert_eq!(r.status, 204, "{}", r.text());
    let seen = checker.wait_seen(before + 1, Duration::from_secs(2));
    assert_eq!(
        seen[before].header("authorization"),
        Some(format!("Bearer {foreign}").as_str())
    );
}

#[test]
fn submission_check_jwt_validation() {
    let srv = hs_server(2, &[("SUBMISSION_CHECK", "jwt_validation")]);
    let joe = hs(&user_claims("joe", "p1"));
    let mut c = Sse::ok(srv.inbound, None, Some(r#"[{"eventType":"greeting"}]"#));
    let submit = |auth: Option<&str>, n: i64| {
        let bearer = auth.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/cloudevents+json")];
        if let Some(b) = &bearer {
            headers.push(("authorization", b.as_str()));
        }
        request(
            srv.inbound,
            "POST",
            "/_rig/v1/events",
            &headers,
            greet(n, "joe").to_string().as_bytes(),
        )
    };
    let r = submit(None, 1);
    assert_eq!((r.status, r.text().as_str()), (403, "Submission denied."));
    let r = submit(Some(&hs_with(b"wrong", &user_claims("joe", "p1"))), 2);
    assert_eq!((r.status, r.text().as_str()), (403, "Submission denied."));
    let r = submit(Some(&joe), 3);
    assert_eq!(r.status, 202, "{}", r.text());
    // A credential without a scheme counts as a bearer token (RIG's auth_header.ex).
    let r = request(
        srv.inbound,
        "POST",
        "/_rig/v1/events",
        &[
            ("content-type", "application/cloudevents+json"),
            ("authorization", &format!("Basic eDp5, {joe}")),
        ],
        ce("aside", json!({})).to_string().as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    // The internal port is never checked.
    let r = request(
        srv.api,
        "POST",
        "/v3/messages",
        &[("content-type", "application/cloudevents+json")],
        greet(4, "joe").to_string().as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(c.ns_until(4), [3, 4], "denied events are not delivered");

    // A blacklisted session's token no longer passes the check.
    blacklist_ok(&srv, "p1");
    let r = submit(Some(&joe), 5);
    assert_eq!((r.status, r.text().as_str()), (403, "Submission denied."));
}

#[test]
fn submission_check_url() {
    let checker = Mock::start(200, "{}");
    let url = checker.url("/submit");
    let srv = hs_server(1, &[("SUBMISSION_CHECK", &url)]);
    let event = greet(1, "joe");
    let send = || {
        request(
            srv.inbound,
            "POST",
            "/_rig/v1/events",
            &[
                ("content-type", "application/cloudevents+json"),
                ("authorization", "Bearer opaque-token"),
            ],
            event.to_string().as_bytes(),
        )
    };
    let r = send();
    assert_eq!(r.status, 202, "{}", r.text());
    let seen = checker.wait_seen(1, Duration::from_secs(2));
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].header("authorization"), Some("Bearer opaque-token"));
    assert_eq!(seen[0].json(), event);
    checker.set(403, "{}");
    let r = send();
    assert_eq!((r.status, r.text().as_str()), (403, "Submission denied."));
}

// ---------------------------------------------------------------------------------------------
// 8. Connection rate limit.

#[test]
fn connection_rate_limit() {
    let srv = Server::start_with(2, "", &[("MAX_CONNECTIONS_PER_MINUTE", "3")]);
    // The budget is a fixed wall-clock minute: keep clear of a minute boundary.
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        % 60.0;
    if secs > 55.0 {
        std::thread::sleep(Duration::from_secs_f64(60.3 - secs));
    }
    // A long-poll session counts once; its polls do not.
    let r = request(srv.inbound, "GET", LP, &[], b"");
    assert_eq!((r.status, r.text().as_str()), (200, "\"ok\""));
    let cookie = format!(
        "connection_token={}; last_event_id=\"first_event\"",
        r.set_cookie("connection_token").unwrap()
    );
    let poll = || request(srv.inbound, "GET", LP, &[("cookie", &cookie)], b"");
    for _ in 0..4 {
        let r = poll();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let _open: Vec<Sse> = (0..2).map(|_| Sse::ok(srv.inbound, None, None)).collect();
    let r = request(srv.inbound, "GET", "/_rig/v1/connection/sse", &[], b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (429, "Reached maximum number of connections")
    );
    let r = request(srv.inbound, "GET", LP, &[], b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (429, "Reached maximum number of connections")
    );
    let mut ws = ws_open(srv.inbound, None, None);
    let f = ws_close(&mut ws);
    assert_eq!(
        (u16::from(f.code), f.reason.as_str()),
        (1000, "Bad request.")
    );
    // The existing long-poll session keeps polling.
    let r = poll();
    assert_eq!(r.status, 200, "{}", r.text());
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["events"][0]["type"], "rig.connection.create");
}

// ---------------------------------------------------------------------------------------------
// 9. CORS.

fn allow_origin(srv: &Server, path: &str, origin: Option<&str>) -> Response {
    let headers: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
    let r = request(srv.inbound, "GET", path, &headers, b"");
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r
}

#[test]
fn cors_origin_lists_and_rig_fixed_value() {
    let srv = Server::start_with(
        1,
        "",
        &[(
            "APPLICATION_CORS_ALLOW_ORIGIN",
            "https://*.example.com,https://app.test",
        )],
    );
    for path in ["/_rig/health", "/_rig/v1/connection/sse"] {
        for (origin, want) in [
            (Some("https://a.example.com"), Some("https://a.example.com")),
            (
                Some("https://a.b.example.com"),
                Some("https://a.b.example.com"),
            ),
            (Some("https://app.test"), Some("https://app.test")),
            (Some("https://evil.com"), None),
            (Some("https://example.com"), None),
            (Some("http://a.example.com"), None),
            (Some("https://evil-example.com"), None),
            (Some("https://app.test.evil.com"), None),
            (None, None),
        ] {
            let r = allow_origin(&srv, path, origin);
            assert_eq!(
                r.header("access-control-allow-origin"),
                want,
                "{path} with Origin {origin:?}"
            );
            assert_eq!(r.header("vary"), Some("Origin"), "{path} {origin:?}");
        }
    }
    let r = request(
        srv.inbound,
        "POST",
        "/_rig/v1/events",
        &[
            ("content-type", "application/cloudevents+json"),
            ("origin", "https://app.test"),
        ],
        greet(1, "joe").to_string().as_bytes(),
    );
    assert_eq!(r.status, 202);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.test")
    );

    // Preflights and error answers carry it too (so browsers can read the error).
    let r = request(
        srv.inbound,
        "OPTIONS",
        "/_rig/v1/connection/sse",
        &[("origin", "https://x.example.com")],
        b"",
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://x.example.com")
    );
    let r = request(
        srv.inbound,
        "GET",
        &format!("/_rig/v1/connection/sse?subscriptions={}", enc("[{")),
        &[("origin", "https://app.test")],
        b"",
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.test")
    );

    let rig = Server::start_with(1, "", &[("CORS", "https://only.example")]);
    for origin in [Some("https://evil.com"), Some("https://only.example"), None] {
        let r = allow_origin(&rig, "/_rig/v1/connection/sse", origin);
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("https://only.example"),
            "{origin:?}"
        );
        assert_eq!(r.header("vary"), None, "a fixed value does not vary");
    }
}

// ---------------------------------------------------------------------------------------------
// 10. Internal API token.

#[test]
fn internal_api_token() {
    let srv = Server::start_with(1, "", &[("CB_API_TOKEN", "secret")]);
    let r = request(srv.api, "GET", "/metrics", &[], b"");
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    for wrong in ["Bearer wrong", "secret", "Basic c2VjcmV0", "Bearer secre"] {
        let r = request(srv.api, "GET", "/metrics", &[("authorization", wrong)], b"");
        assert_eq!(r.status, 401, "{wrong}");
    }
    for right in ["Bearer secret", "bearer secret"] {
        let r = request(srv.api, "GET", "/metrics", &[("authorization", right)], b"");
        assert_eq!(r.status, 200, "{right}");
    }
    assert_eq!(request(srv.api, "GET", "/health", &[], b"").status, 200);
    let r = blacklist(&srv, "x", 60);
    assert_eq!(r.status, 401, "the blacklist API is protected too");
    let r = request(
        srv.api,
        "POST",
        "/v3/session-blacklist",
        &[("authorization", "Bearer secret")],
        br#"{"sessionId":"x","validityInSeconds":60}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // The public port is not affected.
    assert_eq!(
        request(srv.inbound, "GET", "/_rig/health", &[], b"").status,
        200
    );
}

// ---------------------------------------------------------------------------------------------
// 11. Property: a client receives exactly what it is entitled to.

#[test]
fn clients_receive_exactly_their_entitled_events() {
    let seed = std::env::var("AUTH_PROP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    let srv = hs_server(4, &[]);
    for round in 0..3 {
        let users: Vec<String> = (0..6)
            .map(|i| {
                let tag: String = (0..4).map(|_| rng.alphanumeric()).collect();
                format!("u{round}{i}-{tag}")
            })
            .collect();
        // (user, has a `public` subscription, connection)
        let mut conns: Vec<(String, bool, Sse)> = Vec::new();
        for (i, user) in users.iter().enumerate() {
            let token = hs(&user_claims(user, &format!("prop-{round}-{i}")));
            for _ in 0..rng.usize(1..=2) {
                // Random `public` subscriptions; constraints on a type without extractor
                // fields are ignored (RIG), whatever user they name.
                let mut manual = Vec::new();
                for _ in 0..rng.usize(0..=3) {
                    let other = &users[rng.usize(..users.len())];
                    manual.push(match rng.u8(0..3) {
                        0 => json!({"eventType": "public"}),
                        1 => json!({"eventType": "public", "oneOf": [{"name": other}]}),
                        _ => json!({"eventType": "public", "oneOf": [{"name": other, "age": 3}]}),
                    });
                }
                let public = !manual.is_empty();
                let manual = Value::Array(manual).to_string();
                let c = Sse::connect(srv.inbound, Some(&token), public.then_some(manual.as_str()));
                assert_eq!(c.head.status, 200, "seed {seed}: {}", c.head.text());
                assert_eq!(c.subs[0], auto_sub(user), "seed {seed}");
                conns.push((user.clone(), public, c));
            }
        }
        // Random events: greetings for users, for nobody, without a name; public events.
        let mut published: Vec<Value> = Vec::new();
        for n in 0..20 {
            let e = match rng.u8(0..5) {
                0 | 1 => {
                    let u = &users[rng.usize(..users.len())];
                    ce("greeting", json!({"n": n, "name": u, "age": rng.u8(0..5)}))
                }
                2 => match rng.bool() {
                    true => ce("greeting", json!({"n": n, "name": "nobody"})),
                    false => ce("greeting", json!({"n": n, "age": 3})),
                },
                _ => ce(
                    "public",
                    json!({"n": n, "name": users[rng.usize(..users.len())]}),
                ),
            };
            let r = publish(srv.inbound, &e);
            assert_eq!(r.status, 202, "seed {seed}: {}", r.text());
            published.push(e);
        }
        // One marker per user: a greeting for that user, published after everything else.
        for (i, u) in users.iter().enumerate() {
            let r = publish(
                srv.inbound,
                &ce(
                    "greeting",
                    json!({"n": 1000 + i, "name": u, "marker": true}),
                ),
            );
            assert_eq!(r.status, 202);
        }
        for (user, public, c) in conns.iter_mut() {
            let marker = 1000 + users.iter().position(|u| u == user).unwrap() as i64;
            let want: Vec<(String, i64)> = published
                .iter()
                .filter(|e| match e["type"].as_str() {
                    Some("greeting") => e["data"]["name"] == json!(user),
                    Some("public") => *public,
                    _ => false,
                })
                .map(|e| {
                    (
                        e["type"].as_str().unwrap().to_string(),
                        e["data"]["n"].as_i64().unwrap(),
                    )
                })
                .chain([("greeting".to_string(), marker)])
                .collect();
            let mut got = Vec::new();
            while got.last().map(|(_, n)| *n) != Some(marker) {
                assert!(got.len() <= want.len(), "seed {seed}, {user}: {got:?}");
                let e = c.next_event();
                got.push((
                    e["type"].as_str().unwrap_or_default().to_string(),
                    e["data"]["n"].as_i64().unwrap_or(-1),
                ));
            }
            assert_eq!(
                got, want,
                "seed {seed}, round {round}, user {user} (public: {public})"
            );
        }
    }
}

#[test]
fn jwt_claims_mode_keeps_each_user_to_their_own_events_and_lets_support_read_all() {
    let srv = hs_server(
        2,
        &[
            ("SUBSCRIPTION_CHECK", "jwt_claims"),
            ("SUBMISSION_CHECK", "jwt_claims"),
            ("CB_PRIVILEGED_CLAIM", "/roles=support"),
        ],
    );
    let alice = hs(&user_claims("alice", "a1"));
    let bob = hs(&user_claims("bob", "b1"));
    let support = hs(&json!({"username": "sam", "roles": ["support"], "exp": now() + 600}));
    let alices = r#"[{"eventType":"greeting","oneOf":[{"name":"alice"}]}]"#;
    let everyone = r#"[{"eventType":"greeting"}]"#;

    // Bob asks for alice's events, anonymous asks for them, or for everyone's: refused, saying why.
    for (jwt, subs) in [
        (Some(&bob), alices),
        (None, alices),
        (Some(&bob), everyone),
        (None, everyone),
    ] {
        let c = Sse::connect(srv.inbound, jwt.map(String::as_str), Some(subs));
        assert_eq!(c.head.status, 403, "{jwt:?} {subs}: {}", c.head.text());
        assert!(c.head.text().contains("greeting"), "{}", c.head.text());
    }
    // WebSocket: upgraded, then closed with the reason (RIG's way to refuse).
    let mut ws = ws_open(srv.inbound, Some(&bob), Some(alices));
    ws_set_timeout(&mut ws, Duration::from_secs(5));
    match ws.read() {
        Ok(Message::Close(Some(f))) => {
            assert!(f.reason.contains("Subscription denied"), "{}", f.reason)
        }
        other => panic!("expected a close, got {other:?}"),
    }

    // Alice gets her own (asked for and from her token), bob his own, support everyone's.
    let mut a = Sse::ok(srv.inbound, Some(&alice), Some(alices));
    let mut b = Sse::ok(srv.inbound, Some(&bob), None);
    let mut s = Sse::ok(srv.inbound, Some(&support), Some(everyone));
    // An anonymous client may still subscribe to types no user owns.
    let anon = Sse::connect(srv.inbound, None, Some(r#"[{"eventType":"news"}]"#));
    assert_eq!(anon.head.status, 200, "{}", anon.head.text());

    // Publishing: only your own name, or none; anonymous publishers none.
    let post = |token: Option<&str>, ev: &Value| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut h = vec![("content-type", "application/cloudevents+json")];
        if let Some(a) = &auth {
            h.push(("authorization", a.as_str()));
        }
        request(
            srv.inbound,
            "POST",
            "/_rig/v1/events",
            &h,
            ev.to_string().as_bytes(),
        )
    };
    assert_eq!(
        post(Some(&bob), &greet(1, "alice")).status,
        403,
        "bob posing as alice"
    );
    assert_eq!(
        post(None, &greet(1, "alice")).status,
        403,
        "anonymous posing as alice"
    );
    let r = post(Some(&alice), &greet(2, "alice"));
    assert_eq!(r.status, 202, "{}", r.text());
    let r = post(Some(&bob), &greet(3, "bob"));
    assert_eq!(r.status, 202, "{}", r.text());
    let r = post(Some(&support), &greet(4, "alice"));
    assert_eq!(r.status, 202, "support may write to anyone: {}", r.text());
    assert_eq!(a.ns_until(4), vec![2, 4]);
    assert_eq!(b.ns_until(3), vec![3]);
    assert_eq!(s.ns_until(4), vec![2, 3, 4]);

    // A PUT cannot widen it either.
    let r = put_subs(
        &srv,
        &b.token,
        Some(&bob),
        &json!({"subscriptions": [{"eventType": "greeting", "oneOf": [{"name": "alice"}]}]}),
    );
    assert_eq!(r.status, 403, "{}", r.text());
}
