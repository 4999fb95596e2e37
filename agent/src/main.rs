//! `reap3r-agent`: enrol with a token, then run.

fn main() -> std::process::ExitCode {
    reap3r_agent::cli::main_entry()
}
