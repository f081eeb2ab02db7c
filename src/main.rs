//! The `mailcanary` binary: parse arguments, set up logging, load the config, dispatch.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use mailcanary::cli::{Cli, Command, LogFormat};
use mailcanary::cmd::{self, EXIT_CONFIG};
use mailcanary::config::Config;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli) {
        eprintln!("mailcanary: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mailcanary: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mailcanary: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run { listen, web_config } => {
                cmd::run::run(&config, listen, web_config.as_deref()).await
            }
            Command::Once {
                wait,
                textfile,
                push,
            } => {
                let outputs = cmd::once::Outputs {
                    textfile: textfile.as_deref(),
                    push: push.as_deref(),
                };
                cmd::once::run(&config, wait, outputs).await
            }
            Command::Status => cmd::status::run(&config),
            Command::Check { no_login } => cmd::check::run(&config, no_login).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mailcanary: {e:#}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn init_logging(cli: &Cli) -> Result<(), String> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = EnvFilter::try_new(&cli.log_level)
        .map_err(|e| format!("--log-level {:?}: {e}", cli.log_level))?;
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let lines = match cli.log_format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(lines.with_filter(filter).with_filter(no_secrets()))
        .init();
    Ok(())
}

/// async-imap traces every command it encodes, LOGIN with its password included: whatever
/// level the user asks for, its debug and trace output never reaches the log.
fn no_secrets() -> tracing_subscriber::filter::FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool> {
    tracing_subscriber::filter::filter_fn(|meta| {
        !(meta.target().starts_with("async_imap") && *meta.level() > tracing::Level::INFO)
    })
}
