//! `corral`: the command line for Corral. One subcommand per file under `commands/`.

mod client;
mod commands;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::Format;

/// Corral: run batch jobs of many tasks across pools of nodes.
#[derive(Parser, Debug)]
#[command(name = "corral", version, propagate_version = true)]
struct Cli {
    /// The coordinator's URL.
    #[arg(long, global = true, env = "CORRAL_COORDINATOR", default_value = "http://127.0.0.1:7070")]
    coordinator: String,
    /// How to print results: tables for people, JSON for programs (before the
    /// subcommand: `corral -o json job show 1`).
    #[arg(long, short = 'o', env = "CORRAL_OUTPUT", value_enum, default_value = "table")]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create, list, show, resize and delete pools.
    #[command(subcommand)]
    Pool(commands::pool::PoolCommand),
    /// List, show and drain nodes.
    #[command(subcommand)]
    Node(commands::node::NodeCommand),
    /// Submit, list, show, watch, wait for and cancel jobs.
    #[command(subcommand)]
    Job(commands::job::JobCommand),
    /// List and show tasks, and read their logs.
    #[command(subcommand)]
    Task(commands::task::TaskCommand),
    /// Print what happens (pool, node, job, task changes), resumable by event id.
    Events(commands::events::EventsArgs),
    /// Put, get and list objects in the store that task inputs and outputs use.
    #[command(subcommand)]
    File(commands::file::FileCommand),
    /// Run a throwaway coordinator and local pool, run a sample job, and clean up.
    Demo(commands::demo::DemoArgs),
    /// Run a coordinator and a local pool in the foreground, for trying things by hand.
    Up(commands::up::UpArgs),
    /// Run a node agent (the same as `corral-agent`).
    Agent(corral_agent::cli::AgentArgs),
}

/// What a command asks the process to exit with.
pub enum Exit {
    Ok,
    /// The command worked, but what it reports is a failure (a job that failed).
    Failed,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_agent = matches!(cli.command, Command::Agent(_));
    let default = if is_agent { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    // The agent runs on one thread, as `corral-agent` does (see node-agent/src/main.rs).
    let runtime = if is_agent {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Runtime::new()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(Exit::Ok) => ExitCode::SUCCESS,
        Ok(Exit::Failed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<Exit> {
    let ctx = commands::Context { coordinator: cli.coordinator, format: cli.output };
    match cli.command {
        Command::Pool(cmd) => cmd.run(&ctx).await,
        Command::Node(cmd) => cmd.run(&ctx).await,
        Command::Job(cmd) => cmd.run(&ctx).await,
        Command::Task(cmd) => cmd.run(&ctx).await,
        Command::File(cmd) => cmd.run(&ctx).await,
        Command::Events(args) => args.run(&ctx).await,
        Command::Demo(args) => args.run().await,
        Command::Up(args) => args.run(&ctx).await,
        Command::Agent(args) => {
            corral_agent::cli::run(args).await?;
            Ok(Exit::Ok)
        }
    }
}
