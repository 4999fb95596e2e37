//! The server binary, built inside the tests package so end-to-end tests can run it as a process.
fn main() -> std::process::ExitCode {
    reap3r_control_plane::entry::main_entry()
}
