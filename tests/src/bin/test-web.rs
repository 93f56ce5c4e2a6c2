//! The session provider's demo site, as a binary of this crate so tests can start and
//! kill it by process id.

fn main() -> anyhow::Result<()> {
    session_provider::demo::main()
}
