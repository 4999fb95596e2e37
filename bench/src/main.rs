//! `reap3r-bench`: fleet simulator and load scenarios. Not built yet (its own issue); this
//! binary says so rather than pretending to measure anything.

fn main() -> std::process::ExitCode {
    eprintln!("reap3r-bench: no scenarios yet; see the bench issue");
    std::process::ExitCode::from(2)
}
