//! `corral-agent`: joins a pool and runs its tasks until SIGINT or SIGTERM.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = corral_agent::cli::AgentArgs::parse();
    corral_agent::cli::init_tracing();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(corral_agent::cli::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
