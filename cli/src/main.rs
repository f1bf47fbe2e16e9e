//! The `agora` binary: `agora serve` (the default) runs the server (`agora-server`); `agora
//! worker` runs a shell command per task; `submit`, `approve`, `jobs`, `job`, `status` and
//! `events` are for people and scripts (this crate, over `agora-client`).

use clap::{Parser, Subcommand};

use agora_server::{startup, Application, Config};

/// mimalloc for every allocation of the process: see `agora_server::memory`.
#[global_allocator]
static ALLOCATOR: agora_server::memory::Allocator = agora_server::memory::Allocator {};

#[derive(Parser)]
#[command(
    name = "agora",
    version,
    about = "Agora: a coordination server for AI agents",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(Config),
    #[command(flatten)]
    Cli(agora_cli::Command),
    /// Per-job git repositories.
    Repo {
        #[command(subcommand)]
        command: RepoCommand,
    },
}

#[derive(Subcommand)]
enum RepoCommand {
    /// Delete a job's repository and write it again from the database.
    Rebuild {
        /// The job's id.
        job_id: uuid::Uuid,
        #[command(flatten)]
        config: Config,
    },
}

fn main() -> anyhow::Result<()> {
    agora_server::memory::configure();
    // Each thread gives its free memory back when it idles after a quiet-time trim
    // (`agora_server::memory`).
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(agora_server::memory::collect_if_asked)
        .on_thread_stop(agora_server::memory::collect_if_asked)
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = match cli.command {
        Some(Command::Serve(c)) => c,
        None => cli.serve,
        Some(Command::Cli(command)) => {
            // One line for people and scripts, not a backtrace.
            if let Err(e) = agora_cli::run(command).await {
                eprintln!("agora: {e:#}");
                std::process::exit(1);
            }
            return Ok(());
        }
        Some(Command::Repo {
            command: RepoCommand::Rebuild { job_id, config },
        }) => {
            agora_server::telemetry::init_logs(&config.log_format);
            let (dir, commits) = agora_server::git::rebuild_from(&config, job_id).await?;
            println!("rebuilt {} with {commits} commits", dir.display());
            return Ok(());
        }
    };
    agora_server::telemetry::init_logs(&config.log_format);
    startup::raise_open_file_limit();
    // Before the port opens: a stop signal during startup drains instead of killing.
    let stop = startup::shutdown_signal();
    let app = Application::build(config).await?;
    app.run_until_stopped(stop).await
}
