//! `reap3r`: the control-plane binary.

fn main() -> std::process::ExitCode {
    reap3r_control_plane::entry::main_entry()
}
