//! The `offload-agent` binary: parse the command line, set up logging on
//! stderr, and run the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod build_cmd;
mod options;
mod run_cmd;
mod stdio_cmd;

/// offload-agent: makes this machine a build machine for offload masters on the LAN.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve builds over QUIC to masters whose keys are in the ACL, and
    /// advertise this machine over DNS-SD.
    ///
    /// SIGTERM or SIGINT drains: the agent advertises `draining`, takes no
    /// new builds, lets running builds finish (up to `drain-seconds`),
    /// then says goodbye; a second signal stops at once. SIGUSR1 drains
    /// without stopping. The ACL file is read again when it changes.
    Run(run_cmd::RunArgs),
    /// Serve one master on stdin and stdout (`ssh HOST offload-agent
    /// stdio`, the SSH fallback). The master proves its key as over QUIC;
    /// SSH's authentication is not enough. When `offload-agent run` runs
    /// on this machine, the session is handed to it, so that both share
    /// the same slots and store.
    Stdio(stdio_cmd::StdioArgs),
    /// Build derivations with a store backend and print one
    /// `OUTPUT-NAME PATH` line per output of each (for operators checking
    /// an agent's store, and for tests). Build logs go to stderr.
    ///
    /// Exit status: 0 if everything was built (or valid already), 100 if a
    /// build failed, 101 if one timed out, 2 for any other error.
    Build(build_cmd::BuildArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = match cli.command {
        Command::Run(args) => run_cmd::run(args),
        Command::Stdio(args) => stdio_cmd::run(args),
        Command::Build(args) => match build_cmd::run(args) {
            Ok(0) => Ok(()),
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "offload-agent: error: {}",
                    offload_core::report::error_chain(e.as_ref())
                );
            }
            ExitCode::from(2)
        }
    }
}
