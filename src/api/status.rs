//! The status page on the internal port (`GET /dashboard`), RIG's live dashboard in small: one
//! self-contained HTML page (no external assets) that polls `GET /v3/status` every 2 s and
//! shows connections by transport and shard, deliveries and drops per second (from the
//! counters' differences), each shard's busy share and queue, broker lag, the API definitions
//! and the blacklist size. Read-only, like everything on the internal port.

use crate::runtime::shard::Shard;
use serde_json::json;
use std::sync::atomic::Ordering;

/// The node's state as the page shows it. Counters are totals: the page derives rates.
pub fn json(shard: &Shard) -> Vec<u8> {
    let g = &shard.globals;
    let shards: Vec<_> = g
        .metrics
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let by_transport: serde_json::Map<String, serde_json::Value> =
                crate::proto::Transport::ALL
                    .iter()
                    .map(|t| {
                        (
                            t.label().to_string(),
                            json!(m.connections[*t as usize].get()),
                        )
                    })
                    .collect();
            json!({
                "shard": i,
                "connections": by_transport,
                "busy_seconds": g.busy_us[i].load(Ordering::Relaxed) as f64 / 1e6,
                "inbound_queue": g.inbound[i].len(),
                "delivered": crate::proto::Transport::ALL
                    .iter()
                    .map(|t| m.delivered[*t as usize].get())
                    .sum::<u64>(),
                "dropped": m.dropped_total(),
            })
        })
        .collect();
    let kafka = g.broker.as_ref().map(|_| {
        let lags: Vec<_> = g
            .island
            .lags()
            .into_iter()
            .map(|(topic, partition, lag)| json!({"topic": topic, "partition": partition, "lag": lag}))
            .collect();
        json!({"up": g.island.up.get() == 1, "lag": lags})
    });
    let apis: Vec<_> = shard
        .proxy
        .borrow()
        .all()
        .map(|a| json!({"id": a.meta.id, "active": a.meta.active}))
        .collect();
    let body = json!({
        "node": format!("{:08x}", g.node),
        "uptime_s": crate::auth::blacklist::now_ms().saturating_sub(g.started_ms) / 1000,
        "now_ms": crate::auth::blacklist::now_ms(),
        "shards": shards,
        "kafka": kafka,
        "kinesis": g.kinesis.is_some(),
        "nats": g.nats.is_some(),
        "redis_up": g.local.as_ref().and_then(|l| l.redis.as_ref())
            .map(|r| r.metrics.up.load(Ordering::Relaxed) == 1),
        "apis": apis,
        "blacklisted_sessions": shard.sessions.borrow().blacklisted(),
        "https": g.tls.is_some(),
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The page: plain HTML, inline CSS and script, no external assets.
pub const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Corebridge status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .2em} h2{font-size:1.05em;margin:1.2em 0 .4em}
table{border-collapse:collapse;background:#fff} td,th{border:1px solid #ddd;padding:.3em .7em;text-align:right}
th{background:#f0f0f0} td:first-child,th:first-child{text-align:left}
.tiles{display:flex;gap:1em;flex-wrap:wrap} .tile{background:#fff;border:1px solid #ddd;padding:.6em 1em;min-width:9em}
.tile b{display:block;font-size:1.6em} .bar{background:#e6e6e6;width:8em;height:.8em;display:inline-block}
.bar i{display:block;height:100%;background:#3b7dd8} #err{color:#b00}
</style></head><body>
<h1>Corebridge</h1><div id="meta">loading...</div><div id="err"></div>
<div class="tiles">
<div class="tile">connections<b id="conns">-</b></div>
<div class="tile">deliveries/s<b id="dps">-</b></div>
<div class="tile">drops/s<b id="drops">-</b></div>
<div class="tile">blacklisted sessions<b id="bl">-</b></div>
</div>
<h2>Shards</h2><table id="shards"><thead><tr><th>shard</th><th>sse</th><th>ws</th><th>longpoll</th>
<th>busy</th><th>inbound queue</th><th>deliveries/s</th></tr></thead><tbody></tbody></table>
<h2>Kafka</h2><div id="kafka">-</div>
<h2>API definitions</h2><div id="apis">-</div>
<script>
"use strict";
let last = null;
const el = id => document.getElementById(id);
const esc = s => String(s).replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;"}[c]));
function rate(now, prev, f, dt) { return prev ? Math.max(0, (f(now) - f(prev)) / dt) : 0; }
async function refresh() {
  try {
    const r = await fetch("/v3/status", {cache: "no-store"});
    const s = await r.json();
    const dt = last ? (s.now_ms - last.now_ms) / 1000 : 0;
    el("meta").textContent = `node ${s.node}, up ${s.uptime_s} s, ${s.shards.length} shards` +
      (s.https ? ", HTTPS on" : "") + (s.redis_up === null ? "" : `, Redis ${s.redis_up ? "up" : "DOWN"}`);
    let conns = 0, delivered = 0, dropped = 0, rows = "";
    s.shards.forEach((sh, i) => {
      const c = sh.connections; conns += c.sse + c.ws + c.longpoll;
      delivered += sh.delivered; dropped += sh.dropped;
      const prev = last && last.shards[i];
      const busy = prev && dt > 0 ? Math.min(1, (sh.busy_seconds - prev.busy_seconds) / dt) : 0;
      const dps = prev && dt > 0 ? Math.max(0, (sh.delivered - prev.delivered) / dt) : 0;
      rows += `<tr><td>${sh.shard}</td><td>${c.sse}</td><td>${c.ws}</td><td>${c.longpoll}</td>` +
        `<td><span class="bar"><i style="width:${(busy * 100).toFixed(0)}%"></i></span> ${(busy * 100).toFixed(0)}%</td>` +
        `<td>${sh.inbound_queue}</td><td>${dps.toFixed(1)}</td></tr>`;
    });
    el("shards").tBodies[0].innerHTML = rows;
    el("conns").textContent = conns;
    const sum = (x, k) => x.shards.reduce((a, sh) => a + sh[k], 0);
    el("dps").textContent = dt > 0 ? rate(s, last, x => sum(x, "delivered"), dt).toFixed(1) : "-";
    el("drops").textContent = dt > 0 ? rate(s, last, x => sum(x, "dropped"), dt).toFixed(1) : "-";
    el("bl").textContent = s.blacklisted_sessions;
    el("kafka").innerHTML = !s.kafka ? "not configured" :
      (s.kafka.up ? "connected" : "<b>unreachable</b>") + (s.kafka.lag.length ?
        "<table><tr><th>topic</th><th>partition</th><th>lag</th></tr>" + s.kafka.lag.map(l =>
          `<tr><td>${esc(l.topic)}</td><td>${l.partition}</td><td>${l.lag}</td></tr>`).join("") + "</table>" : "");
    el("apis").innerHTML = s.apis.length ? s.apis.map(a =>
      `${esc(a.id)}${a.active ? "" : " (inactive)"}`).join(", ") : "none";
    el("err").textContent = "";
    last = s;
  } catch (e) {
    el("err").textContent = "status unavailable: " + e;
  }
}
refresh();
setInterval(refresh, 2000);
</script></body></html>
"#;
