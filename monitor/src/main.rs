//! The `dqmon` binary: everything happens in [`dqmon::cli::main`].

fn main() -> std::process::ExitCode {
    dqmon::cli::main()
}
