//! The `corebridge` binary: parse arguments, load and validate the configuration, start shards.

use corebridge::config::{self, Config};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: corebridge [--tuning PATH] [--check-config]
       corebridge router start [--disable-sse] [--check-config]
       corebridge router mock --integrations NAME=TOPIC[,...] [--disable-sse] [--check-config]

  --tuning PATH     TOML tuning file (also env CB_TUNING_FILE); see tuning/default.toml
  --check-config    validate environment and tuning file, report every problem, exit
  --version         print the version

Configuration is read from RIG's environment variables (INBOUND_PORT, API_HTTP_PORT, CORS,
EXTRACTORS, LOG_LEVEL, ...); see README.md.";

/// `corebridge router start|mock ...`: the clickstream router (README "Clickstream router").
fn router(mut args: impl Iterator<Item = String>) -> ExitCode {
    let mut ra = config::router::RouterArgs::default();
    let mut check = false;
    match args.next().as_deref() {
        Some("start") => {}
        Some("mock") => ra.mock = true,
        other => {
            eprintln!("corebridge router: expected start or mock, got {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    while let Some(a) = args.next() {
        match a.as_str() {
            "--disable-sse" => ra.disable_sse = true,
            "--check-config" => check = true,
            "--integrations" => ra.integrations = args.next(),
            other => {
                eprintln!("corebridge router: unknown argument {other:?}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let env = config::process_env();
    let cfg = match config::router::RouterConfig::load(&|k| env.get(k).cloned(), &ra) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!(
                "corebridge router: configuration has {} problem(s):",
                problems.len()
            );
            for p in &problems {
                eprintln!("  - {p}");
            }
            return ExitCode::from(2);
        }
    };
    if check {
        println!(
            "router configuration OK: group {} reading {}",
            cfg.group_id, cfg.ingestion_topic
        );
        return ExitCode::SUCCESS;
    }
    let level = if cfg.debug { "debug" } else { "info" };
    corebridge::logging::init_with(level, config::LogFormat::Text);
    match corebridge::router::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("corebridge router: cannot start: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let mut tuning: Option<PathBuf> = None;
    let mut check = false;
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("router") {
        args.next();
        return router(args);
    }
    while let Some(a) = args.next() {
        match a.as_str() {
            "--tuning" => match args.next() {
                Some(p) => tuning = Some(PathBuf::from(p)),
                None => {
                    eprintln!("corebridge: --tuning needs a path\n\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "--check-config" => check = true,
            "--version" | "-V" => {
                println!("corebridge {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("corebridge: unknown argument {other:?}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let cfg = match Config::load(&config::process_env(), tuning) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!(
                "corebridge: configuration has {} problem(s):",
                problems.len()
            );
            for p in problems.iter() {
                eprintln!("  - {p}");
            }
            return ExitCode::from(2);
        }
    };
    if check {
        println!(
            "configuration OK: inbound {}, internal API {}, tuning file {}",
            cfg.inbound,
            cfg.api,
            cfg.tuning_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "none (defaults)".into())
        );
        if let Some(k) = &cfg.kafka {
            let sources: Vec<&str> = k.sources.iter().map(|s| s.as_str()).collect();
            println!("Kafka {}: sources {sources:?}", k.brokers.join(","));
            if let Some(why) = &k.flowx {
                println!("FlowX profile ({why})");
            }
            for g in &k.groups {
                println!(
                    "  {} read in consumer group {}",
                    g.topics.as_str(),
                    k.group_id(&g.group)
                );
            }
        }
        return ExitCode::SUCCESS;
    }
    corebridge::logging::init(&cfg);
    match corebridge::runtime::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("corebridge: cannot start: {e}");
            ExitCode::from(1)
        }
    }
}
