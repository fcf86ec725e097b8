//! corebridge-loadtest: the load-test harness (issue 5). A stub until then: it exists so the
//! workspace layout is final and the harness never shares the appliance's runtime.

fn main() {
    eprintln!("corebridge-loadtest: not implemented yet (see the load-test issue)");
    std::process::exit(2);
}
