//! The agent binary, built inside the tests package so end-to-end tests can run it as a process.
fn main() -> std::process::ExitCode {
    reap3r_agent::cli::main_entry()
}
