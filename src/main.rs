//! The `mailcanary` binary: parse arguments, set up logging, load the config, dispatch.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _};
use mailcanary::cli::{Cli, Command, LogFormat};
use mailcanary::cmd::{self, ExitAs as _, Failure};
use mailcanary::config::Config;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the C library's allocator: at 1,000 probes the agent allocates and
/// frees small objects on several threads (the runtime, the store's writer, rendering on the
/// blocking pool), which glibc's per-thread arenas answer with fragmentation (RSS that does not
/// come back) and malloc/free that took about a tenth of the agent's CPU. mimalloc asks for
/// transparent huge pages on its regions; whether the kernel gives them is decided per agent
/// size, see [`huge_pages_for`].
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match parse_args() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // clap's own usage code is 2, which here means "a probe failed".
            if e.use_stderr() {
                return Failure::Config.exit_code();
            }
            return ExitCode::SUCCESS; // --help, --version
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mailcanary: {e:#}");
            e.failure.exit_code()
        }
    }
}

fn parse_args() -> Result<Cli, clap::Error> {
    let matches = Cli::command()
        .after_help(cmd::exit_codes_help())
        .try_get_matches()?;
    Cli::from_arg_matches(&matches)
}

fn run(cli: Cli) -> Result<ExitCode, cmd::Error> {
    init_logging(&cli).exit_as(Failure::Config)?;
    if let Command::Status = cli.command {
        // Needs only [agent]: no secrets, no runtime.
        return cmd::status::run(&cli.config);
    }
    let config = Config::load(&cli.config).exit_as(Failure::Config)?;
    huge_pages(huge_pages_for(config.probes.len()));
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    // One worker thread: the agent waits on sockets almost all the time, and a second worker
    // mostly wakes to steal tasks from the first (at 1,000 probes a tenth of the agent's CPU
    // went to parking and waking threads). What takes CPU for long runs elsewhere: the store's
    // commits on the writer thread, rendering `/metrics` and the pages on the blocking pool.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .exit_as(Failure::Internal)?;
    runtime.block_on(async {
        match cli.command {
            Command::Run {
                listen,
                web_config,
                lifecycle,
            } => {
                let options = cmd::run::RunOptions {
                    config_path: &cli.config,
                    listen,
                    web: web_config.as_deref(),
                    lifecycle,
                };
                cmd::run::run(config, options).await
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
            // Answered above, before the config was loaded in full.
            Command::Status => cmd::status::run(&cli.config),
            Command::Check { no_login } => cmd::check::run(&config, no_login).await,
        }
    })
}

/// From this many probes on, the agent's heap is backed by 2 MiB pages where the kernel has them.
const HUGE_PAGES_FROM: usize = 100;

/// Whether an agent of `probes` probes should use transparent huge pages. A large agent's heap
/// is tens of megabytes touched all over on every round; with huge pages it took a fifth less
/// CPU at 1,000 probes (5.0–5.5 % of a core instead of 6.1–6.5 %, fewer TLB misses). A small
/// one touches a few pages here and there, and 2 MiB pages would hold them at a cost: a single
/// probe's agent took 28.7 MB instead of 17.4.
fn huge_pages_for(probes: usize) -> bool {
    probes >= HUGE_PAGES_FROM
}

/// Huge pages are forbidden before anything is allocated, `main` included: the first allocation
/// (the runtime's, before `main`) faults in the allocator's first region, and a huge page
/// faulted then would stay whatever the config later says. Run by the loader, as the
/// constructors of the C libraries are.
#[used]
#[unsafe(link_section = ".init_array")]
static NO_HUGE_PAGES_BEFORE_MAIN: extern "C" fn() = no_huge_pages_yet;

extern "C" fn no_huge_pages_yet() {
    huge_pages(false);
}

/// Allows or forbids transparent huge pages for what the process touches from now on
/// (`PR_SET_THP_DISABLE`, checked by the kernel at each page fault; pages faulted before stay
/// as they are). Where the kernel has no such switch, nothing changes: it is a matter of memory
/// and CPU, not of correctness.
fn huge_pages(allowed: bool) {
    // SAFETY: PR_SET_THP_DISABLE takes one integer argument and touches no memory of ours.
    unsafe {
        libc::prctl(
            libc::PR_SET_THP_DISABLE,
            libc::c_ulong::from(!allowed),
            0,
            0,
            0,
        );
    }
}

fn init_logging(cli: &Cli) -> anyhow::Result<()> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = EnvFilter::try_new(&cli.log_level)
        .with_context(|| format!("--log-level {:?}", cli.log_level))?;
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
