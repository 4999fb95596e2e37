//! `reap3r-bench`: a fleet simulator that measures a `reap3r` server (and a nats-server peer).
//! See docs/BENCHMARKS.md.

fn main() -> std::process::ExitCode {
    reap3r_bench::main_entry()
}
