//! The `topo` binary: everything is in the library's `cli` module.

fn main() -> std::process::ExitCode {
    topo::cli::main()
}
