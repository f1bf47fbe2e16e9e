//! The `agora` binary: `agora serve` (the default) runs the server; `agora worker` runs a shell
//! command per task; `submit`, `approve`, `jobs`, `job`, `status` and `events` are for people
//! and scripts.

mod cli;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use agora_server::{startup, Application, Config};

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
    Cli(cli::Command),
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

fn init_tracing(format: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = match cli.command {
        Some(Command::Serve(c)) => c,
        None => cli.serve,
        Some(Command::Cli(command)) => {
            // One line for people and scripts, not a backtrace.
            if let Err(e) = cli::run(command).await {
                eprintln!("agora: {e:#}");
                std::process::exit(1);
            }
            return Ok(());
        }
        Some(Command::Repo {
            command: RepoCommand::Rebuild { job_id, config },
        }) => {
            init_tracing(&config.log_format);
            let store = agora_server::store::Store::connect(
                config.database_url.as_deref(),
                &config.db_path,
            )
            .await?;
            let git = agora_server::git::GitHistory::new(config.repos_dir.clone(), store.clone());
            git.rebuild(job_id).await?;
            let (_, commits) = git.commits(job_id, 0, 1).await?;
            println!(
                "rebuilt {} with {commits} commits",
                git.repo_dir(job_id).display()
            );
            store.close().await;
            return Ok(());
        }
    };
    init_tracing(&config.log_format);
    let fds = startup::raise_open_file_limit();
    tracing::debug!(open_file_limit = fds, "file descriptors");
    let app = Application::build(config).await?;
    app.run_until_stopped(startup::shutdown_signal()).await
}
