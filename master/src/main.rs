//! The `offload-master` binary: parse the command line, set up logging on
//! stderr, and hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use offload_master::cli::{self, Cli};

fn main() -> ExitCode {
    // nix-daemon runs its hook as `basename(build-hook) VERBOSITY`: the
    // link `offload-nix-hook` is the Nix hook.
    let invoked = std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_owned()));
    let cli = if invoked.as_deref() == Some(std::ffi::OsStr::new("offload-nix-hook")) {
        Cli {
            command: offload_master::cli::Command::NixHook { verbosity: None },
        }
    } else {
        Cli::parse()
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "offload-master: error: {}",
                    offload_core::report::error_chain(e.as_ref())
                );
            }
            ExitCode::from(2)
        }
    }
}
