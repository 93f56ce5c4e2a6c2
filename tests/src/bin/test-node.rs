//! A real `grid-node` process for the integration tests (path via CARGO_BIN_EXE_test-node).

// The allocator of the `grid-node` binary, so memory measured here is the node's.
#[global_allocator]
static ALLOCATOR: grid_node::NodeAllocator = grid_node::NodeAllocator;

fn main() -> anyhow::Result<()> {
    grid_node::cli::main()
}
