//! The `stockroom` binary: parses the command line and calls into the library.

use clap::Parser;
use stockroom::config::{Cli, Command};
use tracing_subscriber::EnvFilter;

/// mimalloc: many small, short-lived allocations per request across threads; measured faster
/// than the system allocator on the hot reservation path.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.settings.log_json);
    let outcome = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => stockroom::app::serve(cli.settings).await,
        Command::Migrate => stockroom::app::migrate(&cli.settings).await,
        Command::Schema => {
            print!("{}", stockroom::app::schema_sdl());
            Ok(())
        }
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "stockroom failed");
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
