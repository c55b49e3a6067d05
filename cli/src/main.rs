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
    /// The coordinator's URL, or several separated by commas (coordinators
    /// sharing one PostgreSQL database): the one that leads is used.
    #[arg(
        long,
        global = true,
        env = "CORRAL_COORDINATOR",
        default_value = "http://127.0.0.1:7070",
        help_heading = "Connection"
    )]
    coordinator: String,
    /// How to print results: tables for people, JSON for programs (anywhere:
    /// `corral -o json job show 1` or `corral job show 1 -o json`).
    #[arg(
        long,
        short = 'o',
        global = true,
        env = "CORRAL_OUTPUT",
        value_enum,
        default_value = "table",
        help_heading = "Output"
    )]
    output: Format,
    /// A file holding the token to present. Without it the token comes from
    /// CORRAL_TOKEN, or the file CORRAL_TOKEN_FILE names (`corral up` prints that
    /// line); a coordinator's first admin token is in DATA_DIR/admin.token.
    #[arg(long, global = true, help_heading = "Connection")]
    token_file: Option<std::path::PathBuf>,
    /// For an https:// coordinator: trust this CA certificate (PEM), e.g. the
    /// coordinator's DATA_DIR/tls/ca.pem [default: the system's roots].
    #[arg(long, global = true, env = "CORRAL_CA_CERT", help_heading = "Connection")]
    ca_cert: Option<std::path::PathBuf>,
    /// For an https:// coordinator: trust the CA with this fingerprint
    /// (sha256:HEX, as `corral-coordinator --tls auto` prints it).
    #[arg(long, global = true, env = "CORRAL_CA_FINGERPRINT", conflicts_with = "ca_cert", help_heading = "Connection")]
    ca_fingerprint: Option<String>,
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
    /// Run jobs on a cron expression (in a time zone) or an interval: create, list,
    /// show, pause, resume, trigger, backfill and delete schedules.
    #[command(subcommand)]
    Schedule(commands::schedule::ScheduleCommand),
    /// Keep a job under a name for `corral dispatch`: create, list, show and delete
    /// templates.
    #[command(subcommand)]
    Template(commands::template::TemplateCommand),
    /// Make a job from a template, with a payload (--payload-file F, or --payload -
    /// for standard input) and meta values (--meta K=V).
    Dispatch(commands::template::DispatchArgs),
    /// Print a completion script for a shell: `corral completions bash >
    /// ~/.local/share/bash-completion/completions/corral` (zsh: into a directory on
    /// $fpath as `_corral`; fish: ~/.config/fish/completions/corral.fish).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Dispatch a template for every new object under a prefix: create, list, show,
    /// pause, resume and delete triggers.
    #[command(subcommand)]
    Trigger(commands::trigger::TriggerCommand),
    /// List and show tasks, and read their logs.
    #[command(subcommand)]
    Task(commands::task::TaskCommand),
    /// Create, list and revoke tokens (admin).
    #[command(subcommand)]
    Token(commands::token::TokenCommand),
    /// Print the key that signs job callbacks (admin).
    NotifySecret(commands::notify::NotifySecretArgs),
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
    // `corral agent`'s multi-node launcher is this binary under another name.
    if let Some(code) = corral_agent::rsh::as_launcher() {
        return code;
    }
    let cli = Cli::parse();
    let is_agent = matches!(cli.command, Command::Agent(_));
    if !matches!(cli.command, Command::Agent(_) | Command::Up(_) | Command::Demo(_)) {
        // A client whose reader went away (`corral ... | head`) ends quietly, as
        // Unix tools do, instead of failing to print. The commands that run
        // servers or tasks keep SIGPIPE ignored and see EPIPE as an error.
        // SAFETY: setting a signal's disposition at start, before any thread.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let default = if is_agent { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only for a terminal (also `corral up`'s log): a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
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
    if let Command::Completions { shell } = cli.command {
        use clap::CommandFactory;
        clap_complete::generate(shell, &mut Cli::command(), "corral", &mut std::io::stdout());
        return Ok(Exit::Ok);
    }
    // The agent and the throwaway clusters find their own tokens.
    let token = match &cli.command {
        Command::Agent(_) | Command::Demo(_) | Command::Up(_) | Command::Completions { .. } => None,
        _ => corral_proto::credentials::load(cli.token_file.as_deref()).map_err(anyhow::Error::msg)?,
    };
    let tls = corral_proto::tls::ClientTls { ca_cert: cli.ca_cert, ca_fingerprint: cli.ca_fingerprint };
    let ctx = commands::Context { coordinator: cli.coordinator, format: cli.output, token, tls };
    match cli.command {
        Command::Pool(cmd) => cmd.run(&ctx).await,
        Command::Node(cmd) => cmd.run(&ctx).await,
        Command::Job(cmd) => cmd.run(&ctx).await,
        Command::Task(cmd) => cmd.run(&ctx).await,
        Command::File(cmd) => cmd.run(&ctx).await,
        Command::Events(args) => args.run(&ctx).await,
        Command::Token(cmd) => cmd.run(&ctx).await,
        Command::Schedule(cmd) => cmd.run(&ctx).await,
        Command::Template(cmd) => cmd.run(&ctx).await,
        Command::Dispatch(args) => args.run(&ctx).await,
        Command::Completions { .. } => Ok(Exit::Ok),
        Command::Trigger(cmd) => cmd.run(&ctx).await,
        Command::NotifySecret(args) => args.run(&ctx).await,
        Command::Demo(args) => args.run().await,
        Command::Up(args) => args.run(&ctx).await,
        Command::Agent(args) => {
            corral_agent::cli::run(args).await?;
            Ok(Exit::Ok)
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every subcommand's flags are well formed (unique names, valid conflicts):
    /// clap checks this only when the subcommand is used.
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    /// `job submit --help` groups its flags and ends with examples that parse.
    #[test]
    fn submit_help_is_grouped_and_ends_with_examples() {
        use clap::{CommandFactory, Parser};
        let mut cli = super::Cli::command();
        let job = cli.find_subcommand_mut("job").expect("job");
        let help = job.find_subcommand_mut("submit").expect("submit").render_long_help().to_string();
        let at = |heading: &str| help.find(heading).unwrap_or_else(|| panic!("no {heading}: {help}"));
        assert!(at("Task:") < at("Retries and policy:") && at("Data:") < at("Examples:"), "{help}");
        assert!(at("Scheduling:") > 0 && at("Output:") > 0);
        for line in help[at("Examples:")..].lines().filter_map(|l| l.trim().strip_prefix("corral ")) {
            let words = shell_words(line);
            let parsed = super::Cli::try_parse_from(std::iter::once("corral".to_string()).chain(words));
            assert!(parsed.is_ok(), "the example `corral {line}` does not parse: {:?}", parsed.err());
        }
    }

    /// Splits a line as a shell would for these examples (single and double quotes).
    fn shell_words(line: &str) -> Vec<String> {
        let (mut words, mut word, mut quote, mut any) = (Vec::new(), String::new(), None, false);
        for ch in line.chars() {
            match (quote, ch) {
                (None, '\'' | '"') => (quote, any) = (Some(ch), true),
                (Some(q), c) if c == q => quote = None,
                (None, c) if c.is_whitespace() => {
                    if any {
                        words.push(std::mem::take(&mut word));
                    }
                    any = false;
                }
                (_, c) => (word, any) = (word + &c.to_string(), true),
            }
        }
        if any {
            words.push(word);
        }
        words
    }

    /// Each shell's script names the subcommands, new ones included.
    #[test]
    fn completions_cover_every_subcommand() {
        use clap::CommandFactory;
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut super::Cli::command(), "corral", &mut script);
            let script = String::from_utf8(script).unwrap();
            for sub in super::Cli::command().get_subcommands() {
                assert!(script.contains(sub.get_name()), "{shell}: no '{}'", sub.get_name());
            }
            assert!(script.contains("payload-file") && script.contains("meta-required"), "{shell}");
        }
        // And bash, given the script, completes a subcommand from its start.
        let mut script = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut super::Cli::command(), "corral", &mut script);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("corral.bash");
        std::fs::write(&file, script).unwrap();
        let probe = format!(
            "source {}; COMP_WORDS=(corral tem); COMP_CWORD=1; _corral corral tem corral; echo \"${{COMPREPLY[@]}}\"",
            file.display()
        );
        let out = std::process::Command::new("bash").arg("-c").arg(probe).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "template", "{}", String::from_utf8_lossy(&out.stderr));
    }
}
