//! The demo site: a per-session counter with sessions in the grid. See
//! `session_provider::demo` for its routes.

fn main() -> anyhow::Result<()> {
    session_provider::demo::main()
}
