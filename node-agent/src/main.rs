//! `corral-agent`: joins a pool and runs its tasks until SIGINT or SIGTERM.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // Called as `corral-rsh` (a multi-node task's launcher): that, and nothing else.
    if let Some(code) = corral_agent::rsh::as_launcher() {
        return code;
    }
    let args = corral_agent::cli::AgentArgs::parse();
    corral_agent::cli::init_tracing();
    // One thread is plenty: the agent mostly waits, and cross-thread wake-ups cost
    // more than they buy at thousands of short tasks a second.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
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
