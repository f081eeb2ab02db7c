//! Command-line interface: what the user typed, before anything is loaded.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// End-to-end mail delivery-delay monitor: sends signed canaries over SMTP, watches the
/// receiving mailbox, and exports delays per mail class to Prometheus.
#[derive(Debug, Parser)]
#[command(name = "mailcanary", version, propagate_version = true)]
pub struct Cli {
    /// Probe configuration file.
    #[arg(
        long,
        global = true,
        env = "MAILCANARY_CONFIG",
        default_value = "probes.toml"
    )]
    pub config: PathBuf,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive list.
    #[arg(long = "log-level", global = true, default_value = "info")]
    pub log_level: String,
    /// Log line format.
    #[arg(long = "log-format", global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every probe on its schedule and serve /metrics.
    Run {
        /// Address for /metrics, /-/healthy, /-/ready and the status page.
        #[arg(long = "web.listen-address", default_value = "127.0.0.1:9955")]
        listen: SocketAddr,
        /// TLS and basic auth for the endpoints, in the Prometheus exporter-toolkit format.
        #[arg(long = "web.config.file")]
        web_config: Option<PathBuf>,
        /// Serve POST /-/reload (reads the config again, as SIGHUP does).
        #[arg(long = "web.enable-lifecycle")]
        lifecycle: bool,
    },
    /// Send one canary per probe and class, collect arrivals, write metrics, exit (for cron).
    Once {
        /// How long to wait for this run's canaries.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        wait: Duration,
        /// Write metrics to this node_exporter textfile (atomically); without it (and without
        /// --push) they go to standard output.
        #[arg(long)]
        textfile: Option<PathBuf>,
        /// PUT metrics to this Pushgateway (http://host:port), grouped by job="mailcanary" and
        /// instance=`<agent id>`.
        #[arg(long)]
        push: Option<String>,
    },
    /// Print the canaries in flight and the last results, from the state store.
    Status,
    /// Validate the config and log in to every endpoint.
    Check {
        /// Only validate the config; do not connect.
        #[arg(long = "no-login")]
        no_login: bool,
    },
}
