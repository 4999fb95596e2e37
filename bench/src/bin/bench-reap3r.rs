//! The `reap3r` server, built inside the bench package so the bench's own tests can run a real
//! server process (`env!("CARGO_BIN_EXE_bench-reap3r")`). Same entry point as `reap3r`.
fn main() -> std::process::ExitCode {
    reap3r_control_plane::entry::main_entry()
}
