//! The `memlens` binary: everything lives in the library.
fn main() -> std::process::ExitCode {
    memlens::main()
}
