//! `offload-master archive …`

use std::io::{BufReader, BufWriter, Read, Write};

use anyhow::Context;
use offload_core::export::Limits;
use offload_core::nar::NarReader;
use offload_core::store_path::{StoreDir, StorePath};
use offload_files::{acl_file, dump, export_dir, import_dir, key_file, paths, restore};
use offload_store::local::Signatures;
use offload_store::spec::StoreSpec;
use offload_store::store::Store;

use super::{ArchiveCommand, EXIT_INVALID};

/// Buffer between our codecs and the standard streams.
const STDIO_BUF: usize = 1 << 20;

#[allow(clippy::print_stderr)]
fn complain(msg: std::fmt::Arguments<'_>) {
    eprintln!("offload-master: {msg}");
}

/// Ask for 1 MiB pipe buffers on stdin and stdout when they are pipes:
/// with the default 64 KiB, `export | import` spends its time switching
/// between the two processes. Not being able to is harmless.
fn enlarge_pipes() {
    use std::os::fd::AsFd;
    let (stdin, stdout) = (std::io::stdin(), std::io::stdout());
    for fd in [stdin.as_fd(), stdout.as_fd()] {
        if rustix::fs::fstat(fd).is_ok_and(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Fifo
        }) {
            let _ = rustix::pipe::fcntl_setpipe_size(fd, STDIO_BUF);
        }
    }
}

pub(super) fn run(cmd: ArchiveCommand) -> anyhow::Result<u8> {
    enlarge_pipes();
    let stdout = std::io::stdout().lock();
    let stdin = BufReader::with_capacity(STDIO_BUF, std::io::stdin().lock());
    match cmd {
        ArchiveCommand::Dump { path } => {
            let out = dump::dump_path(&path, BufWriter::with_capacity(STDIO_BUF, stdout))?;
            out.into_inner().map_err(|e| e.into_error())?.flush()?;
        }
        ArchiveCommand::Restore { dir } => {
            let mut nar = NarReader::new(stdin, Default::default());
            restore::restore_atomically(&mut nar, &dir)?;
        }
        ArchiveCommand::Export {
            key,
            store,
            recursive,
            store_dir,
            paths: items,
        } => {
            let key_path = key.unwrap_or_else(paths::default_secret_key);
            let key = key_file::load_secret(&key_path)?;
            let store_dir = StoreDir::new(&store_dir)?;
            if let Some(spec) = store {
                drop(stdout);
                let out = BufWriter::with_capacity(STDIO_BUF, std::io::stdout());
                return export_from_store(&spec, store_dir, &items, recursive, &key, out);
            }
            let written = export_dir::export_paths(
                &items,
                &store_dir,
                &key,
                BufWriter::with_capacity(STDIO_BUF, stdout),
            )?;
            tracing::info!(items = written.len(), "exported");
        }
        ArchiveCommand::Verify { acl } => {
            let acl = acl_file::load(&acl.unwrap_or_else(paths::default_acl))?;
            let mut out = BufWriter::new(stdout);
            let mut reader = offload_core::export::ExportReader::new(stdin, Limits::default());
            let mut all_valid = true;
            while let Some(mut item) = reader.next_item()? {
                while item.nar().next_event()?.is_some() {}
                let trailer = item.finish()?;
                let check = offload_core::export::check_item(&trailer, &acl);
                all_valid &= check.is_valid();
                let signer = check
                    .signer
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |k| k.fingerprint());
                writeln!(out, "{}\t{}\t{}", check.word(), trailer.path, signer)?;
            }
            out.flush()?;
            let mut byte = [0u8; 1];
            if reader.into_inner().read(&mut byte)? != 0 {
                anyhow::bail!("trailing data after the end of the export stream");
            }
            if !all_valid {
                return Ok(EXIT_INVALID);
            }
        }
        ArchiveCommand::Import {
            acl,
            no_check_sigs,
            store,
            to,
            store_dir,
        } => {
            let store_dir = StoreDir::new(&store_dir)?;
            let acl = if no_check_sigs {
                None
            } else {
                Some(acl_file::load(&acl.unwrap_or_else(paths::default_acl))?)
            };
            if let Some(spec) = store {
                drop(stdin);
                let input = BufReader::with_capacity(STDIO_BUF, std::io::stdin());
                return import_into_store(&spec, store_dir, acl.as_ref(), input, stdout);
            }
            let (Some(to), Some(acl)) = (to, acl) else {
                anyhow::bail!("--to DIR needs signatures checked against an ACL");
            };
            std::fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
            let mut outcomes = Vec::new();
            let result = import_dir::import_stream(
                stdin,
                &to,
                &store_dir,
                &acl,
                Limits::default(),
                &mut outcomes,
            );
            let mut out = BufWriter::new(stdout);
            let mut rejected = false;
            for outcome in &outcomes {
                match &outcome.result {
                    Ok(_) => writeln!(out, "{}", outcome.path)?,
                    Err(why) => {
                        rejected = true;
                        complain(format_args!("rejected {}: {why}", outcome.path));
                    }
                }
            }
            out.flush()?;
            result?;
            if rejected {
                return Ok(EXIT_INVALID);
            }
        }
    }
    Ok(0)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Parse command-line store paths in `store_dir`.
fn store_paths(
    store_dir: &StoreDir,
    items: &[std::path::PathBuf],
) -> anyhow::Result<Vec<StorePath>> {
    items
        .iter()
        .map(|p| {
            let text = p
                .to_str()
                .with_context(|| format!("{}: not UTF-8", p.display()))?;
            StorePath::parse_in(store_dir, text.trim_end_matches('/'))
                .with_context(|| format!("{text}: not an item of {store_dir}"))
        })
        .collect()
}

fn export_from_store(
    spec: &StoreSpec,
    store_dir: StoreDir,
    items: &[std::path::PathBuf],
    recursive: bool,
    key: &offload_core::keys::SecretKey,
    mut out: impl Write + Send + Unpin,
) -> anyhow::Result<u8> {
    let wanted = store_paths(&store_dir, items)?;
    runtime()?.block_on(async {
        let mut store = Store::open(spec, store_dir)
            .await
            .with_context(|| format!("opening {spec}"))?;
        let order = if recursive {
            store.closure(&wanted).await?
        } else {
            store.sort(&wanted).await?
        };
        store.export(&order, key, &mut out).await?;
        tracing::info!(items = order.len(), "exported");
        Ok(0)
    })
}

fn import_into_store(
    spec: &StoreSpec,
    store_dir: StoreDir,
    acl: Option<&offload_core::acl::Acl>,
    stdin: impl Read + Send + Unpin,
    stdout: std::io::StdoutLock<'_>,
) -> anyhow::Result<u8> {
    let signatures = acl.map_or(Signatures::Ignore, Signatures::Check);
    let mut out = BufWriter::new(stdout);
    let result = runtime()?.block_on(async {
        let mut store = Store::open(spec, store_dir)
            .await
            .with_context(|| format!("opening {spec}"))?;
        let mut progress = |i: &offload_store::local::Imported| {
            if let Some(signer) = &i.signer {
                // One write per line: stderr is unbuffered.
                let line = format!("found valid signature for '{}' (key {signer})\n", i.path);
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
            let _ = writeln!(out, "{}", i.path);
        };
        store
            .import(stdin, signatures, &mut progress)
            .await
            .map_err(anyhow::Error::from)
    });
    out.flush()?;
    result?;
    Ok(0)
}
