//! corebridge-loadtest: the load-test harness for Corebridge. It does not link the appliance
//! (own protocol code, own runtime and allocator). See loadtest/README.md.
//!
//! - `corebridge-loadtest run SCENARIO.toml [--out result.json] [--report report.svg]
//!   [--server-pid PID]`: the parent (spawns workers, publishes, measures, reports);
//! - `corebridge-loadtest worker`: one worker process, configured on stdin (internal);
//! - `corebridge-loadtest floor [...]`: the kernel's own cost of uncoalesced fan-out here,
//!   with no gateway (see `floor.rs`);
//! - `corebridge-loadtest proxy --url ... [--pid PID]`: closed-loop HTTP through a reverse proxy
//!   (the API gateway against nginx `proxy_pass`, see `proxy.rs`);
//! - `corebridge-loadtest send-bench [...]`: loopback sends one by one against io_uring
//!   batches, the kernel side of the writer's batched sends (see `sendbench.rs`).

mod floor;
mod metrics;
mod net;
mod probe;
mod procfs;
mod proto;
mod proxy;
mod publish;
mod report;
mod run;
mod scenario;
mod sendbench;
mod streams;
mod track;
mod worker;

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

const USAGE: &str = "usage: corebridge-loadtest run SCENARIO.toml [--out result.json] [--report report.svg] [--server-pid PID] [--target nchan]
       corebridge-loadtest check SCENARIO.toml     (validate a scenario file)
       corebridge-loadtest floor [--connections 10000] [--events 100] [--rate 10] [--bytes 250] [--threads 2] [--readers 2] [--targeted 1]
                                                   (plain send() fan-out with no gateway: this machine's floor;
                                                    --targeted 1: a relay of one-at-a-time publishes, each to one connection)
       corebridge-loadtest proxy --url http://HOST:PORT/PATH [--pid PID] [--connections 64] [--seconds 10] [--threads 2] [--body 0]
                                                   (keep-alive HTTP through a reverse proxy: requests/s and server CPU per request)
       corebridge-loadtest send-bench [--sockets 2000] [--rounds 10] [--batch 64] [--bytes 250] [--trials 16]
                                                   (loopback send() one by one against io_uring batches, nobody reading)
       corebridge-loadtest worker                  (internal: one worker process)";

fn parse_run(args: &[String]) -> Result<run::RunArgs> {
    let mut scenario = None;
    let mut out = None;
    let mut report = None;
    let mut server_pid = None;
    let mut target = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            "--report" => report = Some(PathBuf::from(value("--report")?)),
            "--server-pid" => {
                server_pid = Some(
                    value("--server-pid")?
                        .parse()
                        .context("--server-pid must be a number")?,
                )
            }
            "--target" => match value("--target")?.as_str() {
                "nchan" => target = Some(scenario::Target::Nchan),
                "corebridge" => target = Some(scenario::Target::Corebridge),
                other => bail!("--target {other:?}: corebridge or nchan"),
            },
            s if s.starts_with('-') => bail!("unknown option {s}\n{USAGE}"),
            s if scenario.is_none() => scenario = Some(PathBuf::from(s)),
            s => bail!("unexpected argument {s:?}\n{USAGE}"),
        }
    }
    Ok(run::RunArgs {
        scenario: scenario.with_context(|| format!("missing SCENARIO.toml\n{USAGE}"))?,
        out,
        report,
        server_pid,
        target,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("run") => parse_run(&args[1..]).and_then(run::run),
        Some("check") if args.len() == 2 => scenario::Scenario::load(args[1].as_ref()).map(|s| {
            println!(
                "{}: ok ({} {} connections)",
                s.name,
                s.connections,
                s.transport.name()
            );
            0
        }),
        Some("worker") => worker::main().map(|()| 0),
        Some("floor") => floor::main(&args[1..]),
        Some("floor-reader") => floor::reader(&args[1..]),
        Some("proxy") => proxy::main(&args[1..]),
        Some("send-bench") => sendbench::main(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(0)
        }
        _ => {
            eprintln!("{USAGE}");
            Ok(2)
        }
    };
    match r {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("corebridge-loadtest: {e:#}");
            std::process::exit(1);
        }
    }
}
