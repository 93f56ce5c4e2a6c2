fn main() -> anyhow::Result<()> {
    grid_node::cli::main()
}
