//! The command line: argument definitions and dispatch.

mod archive;
mod key;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Exit status for a command that ran but found something invalid
/// (a bad signature, a rejected item).
pub const EXIT_INVALID: u8 = 1;

/// offload-master: offload Guix and Nix builds to the machines on your LAN.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Guix-compatible signing keys and the ACL (`guix archive --generate-key/--authorize`).
    #[command(subcommand)]
    Key(KeyCommand),
    /// NARs and signed Guix export streams.
    #[command(subcommand)]
    Archive(ArchiveCommand),
    /// The build hook guix-daemon runs (as `$GUIX offload SYSTEM MAX_SILENT
    /// PRINT_BUILD_TRACE BUILD_TIMEOUT`, through deploy/guix-dispatcher).
    ///
    /// Reads the daemon's requests on stdin and answers `# accept`,
    /// `# decline` or `# postpone`; builds accepted derivations on an
    /// agent, copies the build log to fd 4 and registers the outputs in
    /// the daemon's store. Exit status: 0 built, 100 build failed, 101
    /// timed out, 1 anything else. Configuration comes from the daemon's
    /// environment: GUIX_CONFIGURATION_DIRECTORY (signing-key.sec, acl,
    /// machines.scm), GUIX_STATE_DIRECTORY (slots under offload/),
    /// GUIX_DATABASE_DIRECTORY, NIX_STORE_DIR, OFFLOAD_MASTER_SOCKET
    /// (`serve`'s socket) and OFFLOAD_DISCOVER_MS (how long to browse for
    /// agents when `serve` is not running).
    Hook {
        /// The daemon's system, e.g. x86_64-linux.
        system: String,
        /// Seconds of silence allowed (0: no limit).
        max_silent: u64,
        /// `1` or `true`: print `@ build-remote` traces.
        print_build_trace: String,
        /// Seconds a build may take (0: no limit).
        build_timeout: u64,
    },
    /// The try-out: a private LAN of network namespaces, three agents on
    /// embedded stores, a master discovering them, and a sample DAG built
    /// through the hook; prints where each derivation went. Needs root;
    /// leaves nothing behind.
    Demo {
        /// Print the facts as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The build hook nix-daemon 2.8 runs (its `build-hook` setting; the
    /// program also answers to the name `offload-nix-hook`).
    ///
    /// Reads the daemon's settings and `try` requests on stdin, answers
    /// `# accept` and the machine, `# decline` or `# postpone`; builds on an
    /// agent, copies the log to fd 4, registers the outputs in the daemon's
    /// store (NIX_STORE_DIR, NIX_STATE_DIR). Key, ACL and machines.scm come
    /// from GUIX_CONFIGURATION_DIRECTORY (or /etc/guix).
    NixHook {
        /// The daemon's verbosity (ignored).
        verbosity: Option<String>,
    },
    /// Print the static build machines: machines.scm evaluated as Guix does.
    ///
    /// Warnings (deprecated fields, a file that is not a list of machines) go
    /// to stderr; errors name FILE:LINE:COL.
    Machines {
        /// The machines file [default: $GUIX_CONFIGURATION_DIRECTORY/machines.scm or /etc/guix/machines.scm].
        #[arg(long)]
        file: Option<PathBuf>,
        /// Output format: JSON (keys are the Scheme field names), a plain
        /// machines.scm, or a Nix 2.8 machines file.
        #[arg(long, value_enum, default_value_t = MachinesFormat::Json)]
        format: MachinesFormat,
        /// Which evaluator reads machines.scm: built-in, Guile, or built-in
        /// with Guile for forms it does not support.
        #[arg(long, value_enum, default_value_t)]
        evaluator: crate::machines::load::EvaluatorChoice,
    },
    /// Keep the machine pool warm: discover agents, re-read machines.scm
    /// when it changes, track health, and answer `status` over a Unix socket.
    Serve {
        /// The socket to listen on.
        #[arg(long, default_value = offload_files::paths::DEFAULT_MASTER_SOCKET)]
        socket: PathBuf,
        /// The machines file [default: $GUIX_CONFIGURATION_DIRECTORY/machines.scm or /etc/guix/machines.scm].
        #[arg(long)]
        machines: Option<PathBuf>,
        /// The ACL deciding which agents are authorized [default: $GUIX_CONFIGURATION_DIRECTORY/acl].
        #[arg(long)]
        acl: Option<PathBuf>,
        /// Only use these interfaces for mDNS (repeatable) [default: all].
        #[arg(long = "interface")]
        interfaces: Vec<String>,
        /// How long a vanished or unhealthy agent is kept (milliseconds).
        #[arg(long, default_value_t = crate::pool::DEFAULT_GRACE_MS)]
        grace_ms: u64,
        /// How often agents are checked for liveness (milliseconds).
        #[arg(long, default_value_t = 5000)]
        verify_ms: u64,
        /// Our signing key, proven to agents [default: $GUIX_CONFIGURATION_DIRECTORY/signing-key.sec].
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Show the build machines: machines.scm merged with the agents that
    /// answer on the LAN, with live load, free slots, disk and health.
    ///
    /// Asks a running `offload-master serve`; without one, listens for
    /// agents by itself for --discover-ms.
    Status {
        /// The socket of `offload-master serve`.
        #[arg(long, default_value = offload_files::paths::DEFAULT_MASTER_SOCKET)]
        socket: PathBuf,
        /// Print JSON (one object per machine) instead of a table.
        #[arg(long)]
        json: bool,
        /// The machines file [default: $GUIX_CONFIGURATION_DIRECTORY/machines.scm or /etc/guix/machines.scm].
        #[arg(long)]
        machines: Option<PathBuf>,
        /// How long to listen for agents, in milliseconds.
        #[arg(long, default_value_t = 1500)]
        discover_ms: u64,
        /// The ACL deciding which agents are authorized [default: $GUIX_CONFIGURATION_DIRECTORY/acl].
        #[arg(long)]
        acl: Option<PathBuf>,
        /// Only use these interfaces for mDNS (repeatable) [default: all].
        #[arg(long = "interface")]
        interfaces: Vec<String>,
        /// Our signing key, proven to agents to check their health
        /// [default: $GUIX_CONFIGURATION_DIRECTORY/signing-key.sec].
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Explain where a derivation would be built: one line per machine,
    /// `NAME: usable` or `NAME: <reason>`, then the decision.
    WhyNot {
        /// The .drv file.
        drv: PathBuf,
        /// The machines file [default: $GUIX_CONFIGURATION_DIRECTORY/machines.scm or /etc/guix/machines.scm].
        #[arg(long)]
        machines: Option<PathBuf>,
        /// Which evaluator reads machines.scm.
        #[arg(long, value_enum, default_value_t)]
        evaluator: crate::machines::load::EvaluatorChoice,
    },
    /// Check this host's interoperability: golden vectors, real libgcrypt
    /// (through Guile and guile-gcrypt, as Guix uses it) and Nix's nix-store.
    ///
    /// Exits 0 only if no check failed; a check whose program is missing is
    /// reported as skipped.
    SelfCheck {
        /// Signatures per direction exchanged with libgcrypt.
        #[arg(long, default_value_t = 200)]
        count: usize,
    },
}

/// Output formats of `offload-master machines`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MachinesFormat {
    /// A JSON array of objects.
    Json,
    /// A machines.scm file.
    Scm,
    /// A Nix 2.8 machines file.
    Nix,
}

/// `offload-master key …`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a key pair in Guix's format: DIR/signing-key.sec (0400) and DIR/signing-key.pub (0444).
    ///
    /// Refuses to overwrite an existing pair. The key is ECDSA over Ed25519,
    /// exactly what `guix archive --generate-key` makes.
    Generate {
        /// Directory for the key pair [default: $GUIX_CONFIGURATION_DIRECTORY or /etc/guix].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Print the public key (to paste into another machine's `key authorize`).
    Show {
        /// Directory holding signing-key.pub [default: $GUIX_CONFIGURATION_DIRECTORY or /etc/guix].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print only the key's fingerprint (as agents advertise it).
        #[arg(long)]
        fingerprint: bool,
    },
    /// Authorize the public key read on stdin: prepend it to the ACL, atomically.
    ///
    /// Example: `offload-master key show | ssh build1 offload-master key authorize`
    Authorize {
        /// The ACL file [default: $GUIX_CONFIGURATION_DIRECTORY/acl or /etc/guix/acl].
        #[arg(long)]
        acl: Option<PathBuf>,
    },
    /// Sign a SHA-256 hash and print the signature s-expression exactly as libgcrypt would.
    Sign {
        /// The secret key file (must be inaccessible to group and others).
        #[arg(long)]
        key: PathBuf,
        /// The hash to sign: 64 hex digits.
        #[arg(long)]
        hash: String,
    },
    /// Check a signature file: prints `valid` and exits 0 only if it is valid,
    /// made by a key in the ACL, over exactly HASH.
    Verify {
        /// The ACL file.
        #[arg(long)]
        acl: PathBuf,
        /// The expected hash: 64 hex digits.
        #[arg(long)]
        hash: String,
        /// The signature s-expression file.
        signature_file: PathBuf,
    },
}

/// `offload-master archive …`
#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// Write the NAR of PATH to stdout (like `nix-store --dump`).
    Dump {
        /// A file, symlink or directory.
        path: PathBuf,
    },
    /// Restore a NAR from stdin to DIR (which must not exist), canonicalised
    /// as Guix does: modes 0444/0555, mtime 1. Nothing is left on error.
    Restore {
        /// Where to restore.
        dir: PathBuf,
    },
    /// Write a signed export stream to stdout, dependencies first: items of
    /// a store (`--store SPEC`), or directory entries named HASH-NAME.
    ///
    /// For directory entries, references are found by scanning each item
    /// for the hashes of the entries in the same directory.
    Export {
        /// The secret key to sign with [default: $GUIX_CONFIGURATION_DIRECTORY/signing-key.sec].
        #[arg(long)]
        key: Option<PathBuf>,
        /// Export these store paths from this store: guix-daemon, nix-daemon
        /// (or guix-daemon:SOCKET, nix-daemon:SOCKET), embedded:DIR, local or
        /// local:STATE_DIR.
        #[arg(long, value_name = "SPEC")]
        store: Option<offload_store::spec::StoreSpec>,
        /// With --store: export the closure of the paths.
        #[arg(short = 'r', long, requires = "store")]
        recursive: bool,
        /// The logical store directory.
        #[arg(long, default_value = "/gnu/store")]
        store_dir: String,
        /// The items to export.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Check each item of an export stream on stdin and list it as
    /// `VERDICT<TAB>PATH<TAB>SIGNER`; exits 0 only if every item is valid.
    Verify {
        /// The ACL file [default: $GUIX_CONFIGURATION_DIRECTORY/acl].
        #[arg(long)]
        acl: Option<PathBuf>,
    },
    /// Import the verified items of an export stream on stdin into a store
    /// (`--store SPEC`) or a directory (`--to DIR`); prints each imported path.
    ///
    /// Into a store, items are registered one by one, in stream order; one
    /// that fails stops the import and nothing of it is kept. Into a
    /// directory, a malformed stream imports nothing.
    #[command(group(clap::ArgGroup::new("target").required(true).args(["store", "to"])))]
    Import {
        /// The ACL file [default: $GUIX_CONFIGURATION_DIRECTORY/acl].
        #[arg(long, conflicts_with = "no_check_sigs")]
        acl: Option<PathBuf>,
        /// Accept items whatever their signatures (stores other than guix-daemon).
        #[arg(long, requires = "store")]
        no_check_sigs: bool,
        /// The store to import into: guix-daemon, nix-daemon (or
        /// guix-daemon:SOCKET, nix-daemon:SOCKET), embedded:DIR, local or
        /// local:STATE_DIR (this host's store, written directly).
        #[arg(long, value_name = "SPEC")]
        store: Option<offload_store::spec::StoreSpec>,
        /// The directory to import into (created if missing).
        #[arg(long)]
        to: Option<PathBuf>,
        /// The logical store directory the items (and their references) must be in.
        #[arg(long, default_value = "/gnu/store")]
        store_dir: String,
    },
}

/// Run a parsed command line; returns the process exit status.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Key(cmd) => key::run(cmd),
        Command::Archive(cmd) => archive::run(cmd),
        Command::SelfCheck { count } => self_check(count),
        Command::Demo { json } => crate::demo::run(json),
        Command::NixHook { .. } => Ok(crate::hook::nix::run()),
        Command::Hook {
            system,
            max_silent,
            print_build_trace,
            build_timeout,
        } => {
            let args = crate::hook::Args {
                system,
                max_silent_secs: max_silent,
                trace: crate::hook::request::trace_flag(&print_build_trace),
                timeout_secs: build_timeout,
            };
            Ok(crate::hook::run(args, crate::hook::Setup::from_env()?))
        }
        Command::Machines {
            file,
            format,
            evaluator,
        } => machines(file, format, evaluator),
        Command::Status {
            socket,
            json,
            machines,
            discover_ms,
            acl,
            interfaces,
            key,
        } => {
            if let Some(reply) = crate::serve::ask(&socket, json)? {
                #[allow(clippy::print_stdout)]
                {
                    print!("{reply}");
                }
                return Ok(0);
            }
            let key = key.unwrap_or_else(offload_files::paths::default_secret_key);
            status(json, machines, discover_ms, acl, &interfaces, &key)
        }
        Command::Serve {
            socket,
            machines,
            acl,
            interfaces,
            grace_ms,
            verify_ms,
            key,
        } => {
            let config = crate::serve::Config {
                key: key.unwrap_or_else(offload_files::paths::default_secret_key),
                socket,
                machines: machines.unwrap_or_else(|| {
                    offload_files::paths::guix_config_dir().join("machines.scm")
                }),
                acl: acl.unwrap_or_else(offload_files::paths::default_acl),
                interfaces,
                grace_ms,
                verify_ms,
                verify_timeout_ms: 2000,
            };
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register(signal, std::sync::Arc::clone(&stop))?;
            }
            crate::serve::run(&config, &stop)?;
            Ok(0)
        }
        Command::WhyNot {
            drv,
            machines,
            evaluator,
        } => why_not(&drv, machines, evaluator),
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn machines(
    file: Option<PathBuf>,
    format: MachinesFormat,
    evaluator: crate::machines::load::EvaluatorChoice,
) -> anyhow::Result<u8> {
    use crate::machines::{load, output};
    let file = file.unwrap_or_else(|| offload_files::paths::guix_config_dir().join("machines.scm"));
    let loaded = load::load(&file, evaluator)?;
    for warning in &loaded.warnings {
        eprintln!("offload-master: {warning}");
    }
    let text = match format {
        MachinesFormat::Json => output::json(&loaded.machines),
        MachinesFormat::Scm => output::scm(&loaded.machines),
        MachinesFormat::Nix => output::nix(&loaded.machines),
    };
    print!("{text}");
    Ok(0)
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn status(
    json: bool,
    machines: Option<PathBuf>,
    discover_ms: u64,
    acl: Option<PathBuf>,
    interfaces: &[String],
    key: &std::path::Path,
) -> anyhow::Result<u8> {
    let file =
        machines.unwrap_or_else(|| offload_files::paths::guix_config_dir().join("machines.scm"));
    let acl = acl.unwrap_or_else(offload_files::paths::default_acl);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let sources = crate::snapshot::Sources {
        machines: &file,
        acl: &acl,
        key,
        browse: std::time::Duration::from_millis(discover_ms),
        interfaces,
        nix: &[],
    };
    let (pool, _, warnings) = crate::snapshot::take(&sources, &runtime)?;
    for warning in warnings {
        eprintln!("offload-master: {warning}");
    }
    print!(
        "{}",
        if json {
            crate::status::json(&pool)
        } else {
            crate::status::table(&pool)
        }
    );
    Ok(0)
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn why_not(
    drv: &std::path::Path,
    file: Option<PathBuf>,
    evaluator: crate::machines::load::EvaluatorChoice,
) -> anyhow::Result<u8> {
    use anyhow::Context;
    let file = file.unwrap_or_else(|| offload_files::paths::guix_config_dir().join("machines.scm"));
    let loaded = crate::machines::load::load(&file, evaluator)?;
    for warning in &loaded.warnings {
        eprintln!("offload-master: {warning}");
    }
    let mut pool = crate::pool::Pool::default();
    pool.set_static(&loaded.machines);
    let bytes =
        offload_files::key_file::read_limited(drv, offload_core::derivation::MAX_DRV_LEN as u64)
            .with_context(|| format!("reading {}", drv.display()))?;
    let report = crate::why_not::report(&drv.display().to_string(), &bytes, &pool, 0)
        .map_err(anyhow::Error::msg)?;
    print!("{report}");
    Ok(0)
}

#[allow(clippy::print_stdout)]
fn self_check(count: usize) -> anyhow::Result<u8> {
    let results = crate::self_check::run(count);
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (name, outcome) in &results {
        let (word, text) = match outcome {
            crate::self_check::Outcome::Passed(t) => {
                passed += 1;
                ("ok     ", t)
            }
            crate::self_check::Outcome::Failed(t) => {
                failed += 1;
                ("FAILED ", t)
            }
            crate::self_check::Outcome::Skipped(t) => {
                skipped += 1;
                ("skipped", t)
            }
        };
        println!("{word} {name}: {text}");
    }
    println!("self-check: {passed} passed, {failed} failed, {skipped} skipped");
    Ok(if failed > 0 { EXIT_INVALID } else { 0 })
}
