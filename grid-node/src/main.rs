#[global_allocator]
static ALLOCATOR: grid_node::NodeAllocator = grid_node::NodeAllocator;

fn main() -> anyhow::Result<()> {
    grid_node::cli::main()
}
