//! The `agora` binary: `agora serve` (the default) runs the server.

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
    };
    init_tracing(&config.log_format);
    let app = Application::build(config).await?;
    app.run_until_stopped(startup::shutdown_signal()).await
}
