//! The `offload-agent` binary. Its subcommands (`run`, `stdio`, `build`)
//! arrive with the discovery, store and QUIC issues; until then it only
//! answers `--help` and `--version`.

use clap::Parser;

/// offload-agent: makes this machine a build machine for offload masters on the LAN.
///
/// No subcommands yet: advertising, the QUIC service and builds are not
/// implemented in this version.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {}

fn main() {
    let Cli {} = Cli::parse();
}
