fn main() -> std::process::ExitCode {
    grid_client::cli::main()
}
