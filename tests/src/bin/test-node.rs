//! A real `grid-node` process for the integration tests (path via CARGO_BIN_EXE_test-node).
fn main() -> anyhow::Result<()> {
    grid_node::cli::main()
}
