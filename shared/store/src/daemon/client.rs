//! The requests.

use std::collections::BTreeMap;

use offload_core::hex;
use offload_core::store_path::StorePath;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::Error;
use super::proto::{self, Dialect, op};
use super::stderr::{self, Io, LogEvent};
use super::wire::{self, MAX_PATH, Request};
use crate::info::PathInfo;

/// How `build_paths` builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildMode {
    /// Build what is missing.
    Normal = 0,
    /// Rebuild and fail if the result differs.
    Check = 2,
}

/// One derivation's result from [`DaemonClient::build_paths_with_results`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonBuildResult {
    /// Nix's `BuildResult::Status`: 0 built, 1 substituted, 2 already
    /// valid, 3 permanent failure, 8 timed out, 11 log limit exceeded, …
    pub status: u64,
    /// The error message, empty on success.
    pub error: String,
}

/// The options sent with `set-options` (what `guix offload` sends by default).
#[derive(Clone, Debug)]
pub struct Options {
    /// Keep the build directory of failed builds.
    pub keep_failed: bool,
    /// Go on with other builds after one fails.
    pub keep_going: bool,
    /// Build from source when substitution fails.
    pub fallback: bool,
    /// The daemon's verbosity (0: errors only).
    pub verbosity: u64,
    /// Most builds at once (`None`: the daemon's setting).
    pub max_build_jobs: u64,
    /// Seconds without output before a build is killed (0: no limit).
    pub max_silent_time: u64,
    /// Let the daemon offload in turn.
    pub use_build_hook: bool,
    /// Verbosity of build logs.
    pub build_verbosity: u64,
    /// Print Guix's `@ build-…` traces.
    pub print_build_trace: bool,
    /// Cores per build (0: all).
    pub build_cores: u64,
    /// Use substitutes.
    pub use_substitutes: bool,
    /// Further settings as name/value pairs (`build-timeout`, …).
    pub overrides: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            keep_failed: false,
            keep_going: false,
            fallback: false,
            verbosity: 0,
            max_build_jobs: 1,
            max_silent_time: 0,
            use_build_hook: false,
            build_verbosity: 0,
            print_build_trace: false,
            build_cores: 0,
            use_substitutes: false,
            overrides: Vec::new(),
        }
    }
}

type BoxedLogger = Box<dyn FnMut(LogEvent) + Send + Sync>;

/// Where one call's log goes.
pub type Logger<'a> = &'a mut (dyn FnMut(LogEvent) + Send);

/// A handshaken connection to a daemon.
pub struct DaemonClient<S> {
    stream: BufReader<S>,
    dialect: Dialect,
    daemon_version: u32,
    minor: u32,
    daemon_release: Option<String>,
    log: BoxedLogger,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> DaemonClient<S> {
    /// Greet the daemon on `stream`. The dialect is taken from the version
    /// the daemon announces; `expect`, when given, must match it.
    pub async fn handshake(stream: S, expect: Option<Dialect>) -> Result<Self, Error> {
        let mut stream = BufReader::new(stream);
        Request::new(proto::WORKER_MAGIC_1)
            .send(&mut stream)
            .await?;
        let magic = wire::read_u64(&mut stream).await?;
        if magic != proto::WORKER_MAGIC_2 {
            return Err(Error::Protocol(format!(
                "this is not a store daemon: it answered {magic:#x} to the greeting"
            )));
        }
        let daemon_version = wire::read_u32(&mut stream, "daemon protocol version").await?;
        if proto::major(daemon_version) != 0x100 {
            return Err(Error::Protocol(format!(
                "daemon protocol version {daemon_version:#x} has an unknown major version"
            )));
        }
        let dialect = if proto::minor(daemon_version) >= proto::GUIX_MINOR_FLOOR {
            Dialect::Guix
        } else {
            Dialect::Nix
        };
        if let Some(expected) = expect.filter(|e| *e != dialect) {
            return Err(Error::Protocol(format!(
                "expected a {expected}, but the daemon speaks protocol {daemon_version:#x}, which is a {dialect}'s"
            )));
        }
        let ours = match dialect {
            Dialect::Nix => proto::NIX_PROTOCOL,
            Dialect::Guix => proto::GUIX_PROTOCOL,
        };
        let minor = proto::minor(ours).min(proto::minor(daemon_version));
        if minor < 17 {
            return Err(Error::Protocol(format!(
                "daemon protocol version {daemon_version:#x} is too old (1.17 or later needed)"
            )));
        }
        let mut hello = Request::default();
        hello.u64(u64::from(ours));
        if minor >= 14 {
            hello.u64(0); // no CPU affinity
        }
        if minor >= 11 {
            hello.bool(false); // do not reserve space
        }
        hello.send(&mut stream).await?;
        let daemon_release = if dialect == Dialect::Nix && minor >= 33 {
            Some(wire::read_string(&mut stream, 256, "daemon version string").await?)
        } else {
            None
        };
        let mut client = Self {
            stream,
            dialect,
            daemon_version,
            minor,
            daemon_release,
            log: Box::new(log_to_tracing),
        };
        client.finish(Io::none()).await?;
        Ok(client)
    }

    /// Send log events to `log` instead of `tracing`.
    pub fn set_logger(&mut self, log: impl FnMut(LogEvent) + Send + Sync + 'static) {
        self.log = Box::new(log);
    }

    /// The daemon's dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The protocol version the daemon announced.
    pub fn daemon_version(&self) -> u32 {
        self.daemon_version
    }

    /// The daemon's release (`2.8.0`), when it says (Nix ≥ 1.33).
    pub fn daemon_release(&self) -> Option<&str> {
        self.daemon_release.as_deref()
    }

    async fn finish(&mut self, io: Io<'_>) -> Result<(), Error> {
        stderr::process(
            &mut self.stream,
            self.dialect,
            self.minor,
            &mut self.log,
            io,
        )
        .await
    }

    async fn call(&mut self, req: &Request, io: Io<'_>) -> Result<(), Error> {
        req.send(&mut self.stream).await?;
        self.finish(io).await
    }

    /// `call`, with the daemon's log going to `log` when given.
    async fn call_logged(&mut self, req: &Request, log: Option<Logger<'_>>) -> Result<(), Error> {
        match log {
            None => self.call(req, Io::none()).await,
            Some(log) => {
                req.send(&mut self.stream).await?;
                stderr::process(&mut self.stream, self.dialect, self.minor, log, Io::none()).await
            }
        }
    }

    /// Set the options of this connection.
    pub async fn set_options(&mut self, o: &Options) -> Result<(), Error> {
        let mut req = Request::new(op::SET_OPTIONS);
        req.bool(o.keep_failed)
            .bool(o.keep_going)
            .bool(o.fallback)
            .u64(o.verbosity);
        // Guix ≥ 0x61 moved max-jobs, max-silent-time and build-cores to
        // the name/value pairs, as `guix offload` sends them.
        let guix = self.dialect == Dialect::Guix;
        if !guix {
            req.u64(o.max_build_jobs).u64(o.max_silent_time);
        }
        req.bool(o.use_build_hook)
            .u64(o.build_verbosity)
            .u64(0) // log type
            .bool(o.print_build_trace);
        if !guix {
            req.u64(o.build_cores);
        }
        req.bool(o.use_substitutes);
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if guix {
            pairs.push(("build-max-jobs", o.max_build_jobs.to_string()));
            pairs.push(("build-max-silent-time", o.max_silent_time.to_string()));
            pairs.push(("build-cores", o.build_cores.to_string()));
        }
        pairs.extend(o.overrides.iter().map(|(k, v)| (k.as_str(), v.clone())));
        req.u64(pairs.len() as u64);
        for (name, value) in &pairs {
            req.str(name).str(value);
        }
        self.call(&req, Io::none()).await
    }

    /// Is `path` a valid item?
    pub async fn is_valid_path(&mut self, path: &str) -> Result<bool, Error> {
        let mut req = Request::new(op::IS_VALID_PATH);
        req.str(path);
        self.call(&req, Io::none()).await?;
        wire::read_bool(&mut self.stream, "valid-path answer").await
    }

    /// The valid ones among `paths`.
    pub async fn query_valid_paths(&mut self, paths: &[&str]) -> Result<Vec<String>, Error> {
        let mut req = Request::new(op::QUERY_VALID_PATHS);
        req.strings(paths);
        if self.dialect == Dialect::Nix && self.minor >= 27 {
            req.bool(false); // do not substitute
        }
        self.call(&req, Io::none()).await?;
        wire::read_strings(&mut self.stream, MAX_PATH, "valid path").await
    }

    /// What the daemon knows about `path`, or `None` if it is not valid.
    pub async fn query_path_info(&mut self, path: &StorePath) -> Result<Option<PathInfo>, Error> {
        let printed = path.to_string();
        // The Guix daemon has no validity flag: it fails on invalid paths.
        if self.dialect == Dialect::Guix && !self.is_valid_path(&printed).await? {
            return Ok(None);
        }
        let mut req = Request::new(op::QUERY_PATH_INFO);
        req.str(&printed);
        self.call(&req, Io::none()).await?;
        let s = &mut self.stream;
        if self.dialect == Dialect::Nix && !wire::read_bool(s, "path-info validity").await? {
            return Ok(None);
        }
        let deriver = wire::read_string(s, MAX_PATH, "deriver").await?;
        let hash = wire::read_string(s, 128, "NAR hash").await?;
        let references = wire::read_strings(s, MAX_PATH, "reference").await?;
        let registration_time = wire::read_u64(s).await?;
        let nar_size = wire::read_u64(s).await?;
        if self.dialect == Dialect::Nix && self.minor >= 16 {
            let _ultimate = wire::read_bool(s, "ultimate flag").await?;
            let _sigs = wire::read_strings(s, 1024, "signature").await?;
            let _ca = wire::read_string(s, 1024, "content address").await?;
        }
        let nar_hash = parse_hash(&hash)?;
        let mut references = references
            .iter()
            .map(|r| parse_path(r))
            .collect::<Result<Vec<_>, _>>()?;
        references.sort();
        Ok(Some(PathInfo {
            path: path.clone(),
            deriver: if deriver.is_empty() {
                None
            } else {
                Some(parse_path(&deriver)?)
            },
            nar_hash,
            references,
            registration_time,
            nar_size,
        }))
    }

    /// The outputs of the derivation `drv` by name, as the daemon recorded
    /// them (Nix ≥ 1.22: `query-derivation-output-map`; Guix: its output
    /// names and paths, from the same table in the same order). An output
    /// whose path is not known yet has `None`; a derivation the daemon has
    /// no outputs recorded for gives an empty map.
    pub async fn query_derivation_outputs(
        &mut self,
        drv: &str,
    ) -> Result<BTreeMap<String, Option<String>>, Error> {
        let mut out = BTreeMap::new();
        match self.dialect {
            Dialect::Nix if self.minor >= 22 => {
                let mut req = Request::new(op::QUERY_DERIVATION_OUTPUT_MAP);
                req.str(drv);
                self.call(&req, Io::none()).await?;
                let count = wire::read_u64(&mut self.stream).await?;
                if count > 1024 {
                    return Err(Error::Protocol(format!(
                        "{count} outputs for one derivation"
                    )));
                }
                for _ in 0..count {
                    let name = wire::read_string(&mut self.stream, 256, "output name").await?;
                    let path = wire::read_string(&mut self.stream, MAX_PATH, "output path").await?;
                    out.insert(name, (!path.is_empty()).then_some(path));
                }
            }
            Dialect::Nix => {
                return Err(Error::Unsupported(
                    self.dialect,
                    "query-derivation-output-map",
                ));
            }
            Dialect::Guix => {
                let mut req = Request::new(op::QUERY_DERIVATION_OUTPUTS);
                req.str(drv);
                self.call(&req, Io::none()).await?;
                let paths = wire::read_strings(&mut self.stream, MAX_PATH, "output path").await?;
                let mut req = Request::new(op::QUERY_DERIVATION_OUTPUT_NAMES);
                req.str(drv);
                self.call(&req, Io::none()).await?;
                let names = wire::read_strings(&mut self.stream, 256, "output name").await?;
                out.extend(pair_outputs(drv, names, paths)?);
            }
        }
        Ok(out)
    }

    /// Keep `path` from the garbage collector while this connection is open.
    pub async fn add_temp_root(&mut self, path: &str) -> Result<(), Error> {
        let mut req = Request::new(op::ADD_TEMP_ROOT);
        req.str(path);
        self.call(&req, Io::none()).await?;
        wire::read_u64(&mut self.stream).await?;
        Ok(())
    }

    /// Build the derivations `drvs` (all their outputs) and items `paths`.
    /// Build logs go to the logger as they arrive.
    pub async fn build_paths(&mut self, drvs: &[&str], mode: BuildMode) -> Result<(), Error> {
        self.build_paths_logged(drvs, mode, None).await
    }

    /// [`build_paths`](Self::build_paths), with this call's log going to
    /// `log` (called as each message arrives) instead of the connection's
    /// logger.
    pub async fn build_paths_logged(
        &mut self,
        drvs: &[&str],
        mode: BuildMode,
        log: Option<Logger<'_>>,
    ) -> Result<(), Error> {
        let mut req = Request::new(op::BUILD_PATHS);
        match self.dialect {
            // Nix ≥ 1.30 takes derived paths; `drv!*` asks for every output.
            Dialect::Nix if self.minor >= 30 => {
                let wanted: Vec<String> = drvs
                    .iter()
                    .map(|d| {
                        if d.ends_with(".drv") {
                            format!("{d}!*")
                        } else {
                            (*d).to_owned()
                        }
                    })
                    .collect();
                req.strings(&wanted);
            }
            _ => {
                req.strings(drvs);
            }
        }
        if self.minor >= 15 {
            req.u64(mode as u64);
        }
        self.call_logged(&req, log).await?;
        wire::read_u64(&mut self.stream).await?;
        Ok(())
    }

    /// Build like [`build_paths`](Self::build_paths), but with one result
    /// per derivation instead of an error for the first failure (Nix ≥ 1.34
    /// only, `wopBuildPathsWithResults`).
    pub async fn build_paths_with_results(
        &mut self,
        drvs: &[&str],
        mode: BuildMode,
    ) -> Result<Vec<DaemonBuildResult>, Error> {
        self.build_paths_with_results_logged(drvs, mode, None).await
    }

    /// [`build_paths_with_results`](Self::build_paths_with_results), with
    /// this call's log going to `log` as it arrives.
    pub async fn build_paths_with_results_logged(
        &mut self,
        drvs: &[&str],
        mode: BuildMode,
        log: Option<Logger<'_>>,
    ) -> Result<Vec<DaemonBuildResult>, Error> {
        if self.dialect != Dialect::Nix || self.minor < 34 {
            return Err(Error::Unsupported(self.dialect, "build-paths-with-results"));
        }
        let mut req = Request::new(op::BUILD_PATHS_WITH_RESULTS);
        let wanted: Vec<String> = drvs.iter().map(|d| format!("{d}!*")).collect();
        req.strings(&wanted).u64(mode as u64);
        self.call_logged(&req, log).await?;
        let s = &mut self.stream;
        let count = wire::read_u64(s).await?;
        if count != drvs.len() as u64 {
            return Err(Error::Protocol(format!(
                "{count} build results for {} derivations",
                drvs.len()
            )));
        }
        let mut results = Vec::with_capacity(drvs.len());
        for _ in 0..count {
            let _path = wire::read_string(s, MAX_PATH + 1024, "built path").await?;
            let status = wire::read_u64(s).await?;
            let error = wire::read_bytes(s, wire::MAX_MESSAGE, "build error").await?;
            let _times_built = wire::read_u64(s).await?;
            let _non_deterministic = wire::read_u64(s).await?;
            let _start = wire::read_u64(s).await?;
            let _stop = wire::read_u64(s).await?;
            let outputs = wire::read_u64(s).await?;
            if outputs > 1024 {
                return Err(Error::Protocol(format!("{outputs} built outputs")));
            }
            for _ in 0..outputs {
                let _id = wire::read_string(s, MAX_PATH, "output id").await?;
                let _realisation = wire::read_string(s, wire::MAX_MESSAGE, "realisation").await?;
            }
            results.push(DaemonBuildResult {
                status,
                error: stderr::plain(&error),
            });
        }
        Ok(results)
    }

    /// Import an export stream (`formats-and-signatures.md` §3) read from
    /// `source`; returns the imported paths. The Guix daemon requires a
    /// valid signature by a key in its ACL.
    pub async fn import_paths(
        &mut self,
        source: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<Vec<String>, Error> {
        let req = Request::new(op::IMPORT_PATHS);
        let io = Io {
            source: Some(source),
            sink: None,
        };
        self.call(&req, io).await?;
        wire::read_strings(&mut self.stream, MAX_PATH, "imported path").await
    }

    /// Write the export item of `path` (NAR, trailer and signature slot) to
    /// `sink`. With `sign`, the Guix daemon signs it with its key; the Nix
    /// daemon never signs.
    pub async fn export_path(
        &mut self,
        path: &str,
        sign: bool,
        sink: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<(), Error> {
        let mut req = Request::new(op::EXPORT_PATH);
        req.str(path).bool(sign);
        let io = Io {
            source: None,
            sink: Some(&mut *sink),
        };
        self.call(&req, io).await?;
        sink.flush().await.map_err(|source| Error::Local {
            what: "writing the exported item",
            source,
        })?;
        wire::read_u64(&mut self.stream).await?;
        Ok(())
    }

    /// Add an item from its NAR (Nix ≥ 1.23 only): `info` describes it,
    /// `nar` gives exactly its NAR bytes. Signatures are not checked
    /// (this client is trusted; check them before).
    pub async fn add_to_store_nar(
        &mut self,
        info: &PathInfo,
        nar: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<(), Error> {
        if self.dialect != Dialect::Nix || self.minor < 23 {
            return Err(Error::Unsupported(self.dialect, "add-to-store-nar"));
        }
        let mut req = Request::new(op::ADD_TO_STORE_NAR);
        let refs: Vec<String> = info.references.iter().map(ToString::to_string).collect();
        req.str(&info.path.to_string())
            .str(
                &info
                    .deriver
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            )
            .str(&hex::encode_lower(&info.nar_hash))
            .strings(&refs)
            .u64(info.registration_time)
            .u64(info.nar_size)
            .bool(false) // ultimate
            .strings::<&str>(&[]) // signatures
            .str("") // content address
            .bool(false) // repair
            .bool(true); // do not check signatures
        req.send(&mut self.stream).await?;
        send_framed(&mut self.stream, nar).await?;
        self.finish(Io::none()).await
    }
}

/// Send `source` as Nix's framed data: `u64 len ‖ bytes` chunks, then `u64 0`.
async fn send_framed<W: AsyncWrite + Unpin>(
    w: &mut W,
    source: &mut (dyn AsyncRead + Unpin + Send),
) -> Result<(), Error> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = source.read(&mut buf).await.map_err(|source| Error::Local {
            what: "reading the NAR to send",
            source,
        })?;
        w.write_all(&(n as u64).to_le_bytes())
            .await
            .map_err(Error::io)?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n]).await.map_err(Error::io)?;
    }
    w.flush().await.map_err(Error::io)
}

fn parse_path(s: &str) -> Result<StorePath, Error> {
    StorePath::parse(s).map_err(|e| Error::Protocol(format!("bad store path from the daemon: {e}")))
}

/// Both daemons send the NAR hash in base16, Nix without a type prefix,
/// Guix likewise; accept an optional `sha256:` prefix too.
fn parse_hash(s: &str) -> Result<[u8; 32], Error> {
    let digits = s.strip_prefix("sha256:").unwrap_or(s);
    hex::decode_hash(digits)
        .ok_or_else(|| Error::Protocol(format!("bad NAR hash {s:?} from the daemon")))
}

fn log_to_tracing(event: LogEvent) {
    match event {
        LogEvent::Message(m) => tracing::info!(target: "daemon", "{}", stderr::plain(&m)),
        LogEvent::BuildLine(l) => {
            tracing::info!(target: "daemon::build", "{}", String::from_utf8_lossy(&l));
        }
        LogEvent::StartActivity { id, text, .. } => {
            tracing::debug!(target: "daemon", id, "{text}");
        }
        LogEvent::StopActivity { id } => tracing::debug!(target: "daemon", id, "done"),
    }
}

/// Pair Guix's output names with its output paths. The daemon answers
/// each query with a separately sorted set, so they line up only by
/// chance; an output's path is named as Nix names it (`outputPathName`):
/// the derivation's name for `out`, `NAME-OUTPUT` for the others.
fn pair_outputs(
    drv: &str,
    names: Vec<String>,
    paths: Vec<String>,
) -> Result<BTreeMap<String, Option<String>>, Error> {
    let drv_name = drv
        .rsplit('/')
        .next()
        .and_then(|base| base.split_once('-'))
        .and_then(|(_, name)| name.strip_suffix(".drv"))
        .ok_or_else(|| Error::Protocol(format!("{drv:?} is not a derivation's path")))?;
    let path_name = |p: &str| {
        p.rsplit('/')
            .next()
            .and_then(|b| b.split_once('-'))
            .map(|(_, n)| n.to_owned())
    };
    if names.len() != paths.len() {
        return Err(Error::Protocol(format!(
            "{drv}: {} output names for {} output paths",
            names.len(),
            paths.len()
        )));
    }
    let mut out = BTreeMap::new();
    for name in names {
        let wanted = if name == "out" {
            drv_name.to_owned()
        } else {
            format!("{drv_name}-{name}")
        };
        let path = paths
            .iter()
            .find(|p| path_name(p).as_deref() == Some(wanted.as_str()))
            .ok_or_else(|| {
                Error::Protocol(format!(
                    "{drv}: no output path named {wanted:?} for output {name:?} among {paths:?}"
                ))
            })?;
        out.insert(name, Some(path.clone()));
    }
    Ok(out)
}
