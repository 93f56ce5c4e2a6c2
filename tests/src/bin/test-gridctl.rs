//! A real `gridctl` process for the integration tests (path via CARGO_BIN_EXE_test-gridctl).
fn main() -> std::process::ExitCode {
    grid_client::cli::main()
}
