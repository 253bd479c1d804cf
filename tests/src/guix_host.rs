//! A Guix daemon host for hook tests: what `guix-daemon` gives its build
//! hook, reproduced exactly (spec §1–§2 and the transcript recorded from a
//! real guix-daemon in `../shared/peers/guix-daemon/hook-transcript.txt`).
//!
//! * **The host**: a store whose items live in a temporary directory and
//!   appear as `/gnu/store` inside a private mount namespace (a chroot
//!   whose top-level directories are the host's, plus `gnu/store`), so
//!   nothing is created under the real `/gnu`; a Guix-schema database;
//!   `GUIX_STATE_DIRECTORY`, `GUIX_CONFIGURATION_DIRECTORY` (signing key,
//!   ACL, machines.scm) — all under one temporary directory. The namespace
//!   is held by a sleeping process started in a LAN host's network
//!   namespace.
//! * **The hook process**: `$GUIX offload SYSTEM MAX_SILENT TRACE TIMEOUT`
//!   with `$GUIX` the project's `deploy/guix-dispatcher`, in its own session
//!   (`setsid`), cwd `/`, the daemon's environment only, fd 0 a pipe of
//!   requests, fds 1 and 2 one pipe back, fd 4 the build-log pipe, nothing
//!   else open.
//! * **The daemon's side of the protocol**: request lines (`L SYSTEM DRV
//!   FEATURES`, a trailing space without features), replies read up to the
//!   first line starting with `# `, the two lines after `# accept` (the
//!   `.drv` closure plus the inputs' closure, then the missing outputs,
//!   each path followed by a space, byte-wise sorted), then EOF on stdin.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use offload_core::derivation::Derivation;
use offload_core::keys::SecretKey;
use offload_core::store_path::{StoreDir, StorePath};
use offload_store::db::Db;
use offload_store::local::{LocalStore, Signatures};
use offload_store::store::Store;

use crate::lan::Lan;

/// The mount namespace's set-up: a tmpfs root holding the host's
/// top-level directories (bound) and `gnu/store` (the test's store).
const NAMESPACE_SCRIPT: &str = r#"
set -e
R=$1; S=$2
mount -t tmpfs -o mode=0755 offload-root "$R"
own=${R#/}; own=${own%%/*}
for e in /*; do
  n=${e#/}
  case "$n" in gnu|lost+found) continue;; esac
  if [ -L "$e" ]; then
    ln -s "$(readlink "$e")" "$R/$n"
  elif [ -d "$e" ]; then
    mkdir "$R/$n"
    if [ "$n" = "$own" ]; then mount --bind "$e" "$R/$n"; else mount --rbind "$e" "$R/$n"; fi
  fi
done
mkdir -p "$R/gnu/store"
mount --bind "$S" "$R/gnu/store"
cd "$R"
exec chroot "$R" /bin/sleep 1000000
"#;

/// A daemon host on host `i` of a LAN.
pub struct GuixHost {
    dir: tempfile::TempDir,
    holder: u32,
    /// The host's signing key (the master's).
    pub key: Arc<SecretKey>,
    env: Vec<(String, String)>,
}

impl GuixHost {
    /// A host on `lan`'s host `i`, its key generated, its ACL empty.
    pub fn new(lan: &Lan, i: usize) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("guix-host-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        for sub in ["store", "var/db", "etc", "root", "var/log"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        Db::open_or_create(&d.join("var/db")).expect("create the database");
        crate::generate_key(&d.join("etc"));
        let key = Arc::new(
            offload_files::key_file::load_secret(&d.join("etc/signing-key.sec")).expect("key"),
        );
        let mut cmd = lan.command(i, "unshare");
        cmd.args(["-m", "--propagation", "private", "/bin/sh", "-c"])
            .arg(NAMESPACE_SCRIPT)
            .arg("sh")
            .arg(d.join("root"))
            .arg(d.join("store"));
        let holder = lan.spawn(cmd);
        let ready = crate::agents::wait_for(Duration::from_secs(10), || {
            Path::new(&format!("/proc/{holder}/root/gnu/store")).is_dir()
        });
        assert!(
            ready,
            "the mount namespace of the daemon host did not come up"
        );
        let s = |p: &Path| p.display().to_string();
        let env = vec![
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("HOME".into(), "/root".into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("NIX_STORE_DIR".into(), "/gnu/store".into()),
            ("GUIX_STATE_DIRECTORY".into(), s(&d.join("var"))),
            ("GUIX_DATABASE_DIRECTORY".into(), s(&d.join("var/db"))),
            ("GUIX_LOG_DIRECTORY".into(), s(&d.join("var/log"))),
            ("GUIX_CONFIGURATION_DIRECTORY".into(), s(&d.join("etc"))),
            ("GUIX".into(), s(&dispatcher())),
            ("OFFLOAD_MASTER".into(), s(&crate::bin("offload-master"))),
            ("OFFLOAD_MASTER_SOCKET".into(), s(&d.join("master.sock"))),
            ("RUST_LOG".into(), "warn".into()),
        ];
        Self {
            dir,
            holder,
            key,
            env,
        }
    }

    /// The directory holding everything.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `GUIX_CONFIGURATION_DIRECTORY`.
    pub fn etc(&self) -> PathBuf {
        self.dir().join("etc")
    }

    /// `GUIX_STATE_DIRECTORY`.
    pub fn state_dir(&self) -> PathBuf {
        self.dir().join("var")
    }

    /// Where `serve` listens for the hooks.
    pub fn socket(&self) -> PathBuf {
        self.dir().join("master.sock")
    }

    /// Set (or replace) a variable of the daemon's environment.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.into(), value.into()));
    }

    /// Trust `keys` (the agents' public keys): the host's ACL.
    pub fn authorize(&self, keys: &[&Path]) {
        for k in keys {
            crate::authorize_key(&self.etc().join("acl"), k);
        }
    }

    /// The host's store, opened by the test itself.
    pub fn store(&self) -> Store {
        let db = Db::open(&self.dir().join("var/db/db.sqlite")).expect("open the database");
        Store::Local(Arc::new(LocalStore::new(
            StoreDir::default(),
            self.dir().join("store"),
            db,
        )))
    }

    /// Register an export stream (the test's derivations and sources) as
    /// `guix build` would have made them.
    pub async fn seed(&self, stream: &[u8]) {
        self.store()
            .import(stream, Signatures::Ignore, &mut |_| {})
            .await
            .expect("seed the daemon host's store");
    }

    /// `offload-master serve` for this host on `lan`'s host `i`: its
    /// command (add flags, then `lan.spawn`).
    pub fn serve_command(&self, lan: &Lan, i: usize) -> Command {
        let mut cmd = lan.command(i, crate::bin("offload-master"));
        cmd.env("RUST_LOG", "warn")
            .arg("serve")
            .arg("--socket")
            .arg(self.socket())
            .arg("--machines")
            .arg(self.etc().join("machines.scm"))
            .arg("--acl")
            .arg(self.etc().join("acl"))
            .arg("--key")
            .arg(self.etc().join("signing-key.sec"))
            .args(["--interface", &lan.hosts()[i].iface]);
        cmd
    }

    /// A command running `program` on the host (its network and mount
    /// namespaces, cwd `/`) with the daemon's environment.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.holder.to_string(), "-m", "-n", "-r", "-w", "--"])
            .arg(program)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir("/");
        cmd
    }

    /// Start a hook exactly as guix-daemon does, with the four arguments.
    pub fn spawn_hook(&self, args: [&str; 4]) -> HookProcess {
        let (out_r, out_w) = std::io::pipe().expect("pipe");
        let (log_r, log_w) = std::io::pipe().expect("pipe");
        let mut cmd = self.command(dispatcher());
        cmd.arg("offload")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(out_w.try_clone().expect("dup"))
            .stderr(out_w);
        let log_fd = log_w.as_raw_fd();
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls (setsid, dup2, fcntl,
            // prctl) between fork and exec.
            #[allow(unsafe_code)]
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setsid() < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if log_fd == 4 {
                        if libc::fcntl(4, libc::F_SETFD, 0) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    } else if libc::dup2(log_fd, 4) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("start the hook");
        drop(cmd);
        drop(log_w);
        let stdin = child.stdin.take();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out_r).split(b'\n') {
                let Ok(line) = line else { break };
                if tx
                    .send(String::from_utf8_lossy(&line).into_owned())
                    .is_err()
                {
                    break;
                }
            }
        });
        let log = std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = BufReader::new(log_r).read_to_end(&mut all);
            all
        });
        HookProcess {
            child,
            stdin,
            lines,
            log: Some(log),
            chatter: Vec::new(),
        }
    }

    /// The two lines guix-daemon writes after `# accept` for `drv`: every
    /// path of the `.drv`'s closure and of its inputs' closure, then its
    /// outputs not valid yet; each byte-wise sorted.
    pub async fn accept_lines(&self, drv: &str) -> (Vec<String>, Vec<String>) {
        let mut store = self.store();
        let parse = |p: &str| StorePath::parse(p).expect("store path");
        let read_drv = |p: &str| {
            let text = std::fs::read(self.dir().join("store").join(parse(p).base()))
                .expect("read the .drv");
            Derivation::parse(&text).expect("parse the .drv")
        };
        let d = read_drv(drv);
        let mut roots = vec![parse(drv)];
        for (input, wanted) in &d.input_drvs {
            let input_drv = read_drv(input);
            for name in wanted {
                roots.push(parse(&input_drv.outputs[name].path));
            }
        }
        roots.extend(d.input_srcs.iter().map(|s| parse(s)));
        let inputs: BTreeSet<String> = store
            .closure(&roots)
            .await
            .expect("closure of the inputs (are they built?)")
            .iter()
            .map(ToString::to_string)
            .collect();
        let mut outputs = BTreeSet::new();
        for o in d.outputs.values() {
            if store
                .path_info(&parse(&o.path))
                .await
                .expect("db")
                .is_none()
            {
                outputs.insert(o.path.clone());
            }
        }
        (inputs.into_iter().collect(), outputs.into_iter().collect())
    }

    /// Build `drv` through a fresh hook as the daemon would, answering
    /// postpones by asking again (up to `patience`). Declines are refused.
    pub async fn offload(&self, drv: &str, features: &[&str], patience: Duration) -> HookEnd {
        let system = crate::current_system();
        let mut hook = self.start_hook(drv, features, [&system, "0", "1", "0"], patience);
        let (inputs, outputs) = self.accept_lines(drv).await;
        hook.send_paths(&inputs, &outputs);
        hook.finish()
    }

    /// A hook with `args` that has accepted `drv` (after postpones, up to
    /// `patience`); the caller sends the two lines.
    pub fn start_hook(
        &self,
        drv: &str,
        features: &[&str],
        args: [&str; 4],
        patience: Duration,
    ) -> HookProcess {
        let mut hook = self.spawn_hook(args);
        let line = request_line(true, args[0], drv, features);
        let reply = hook.ask_until_accepted(&line, patience);
        if reply != "accept" {
            let end = hook.finish();
            panic!("the hook answered {reply:?} for {drv}: {:?}", end.chatter);
        }
        hook
    }

    /// [`start_hook`](Self::start_hook) for `drv` without features, the
    /// two lines sent: the build is under way.
    pub fn start_build(
        &self,
        rt: &tokio::runtime::Runtime,
        drv: &str,
        args: [&str; 4],
    ) -> HookProcess {
        let mut hook = self.start_hook(drv, &[], args, Duration::from_secs(30));
        let (inputs, outputs) = rt.block_on(self.accept_lines(drv));
        hook.send_paths(&inputs, &outputs);
        hook
    }

    /// The output paths of `drv`, by name.
    pub fn outputs_of(&self, drv: &str) -> BTreeMap<String, String> {
        let base = StorePath::parse(drv).expect("drv path");
        let text = std::fs::read(self.dir().join("store").join(base.base())).expect("read drv");
        Derivation::parse(&text)
            .expect("parse drv")
            .outputs
            .into_iter()
            .map(|(k, o)| (k, o.path))
            .collect()
    }

    /// Whether `path` is valid in the host's store.
    pub fn has(&self, path: &str) -> bool {
        let db = Db::open(&self.dir().join("var/db/db.sqlite")).expect("db");
        db.is_valid(&StorePath::parse(path).expect("path"))
            .expect("query")
    }
}

/// 30 derivations: a root, a fan-out of 8, two layers of 8 sharing
/// inputs pairwise, one needing the feature `big`, 3 fan-ins of 2, and a
/// top depending on 12 of them. Each output names and copies its inputs
/// (so outputs refer to outputs). The DAG30 expression; `work` runs in every builder first (e.g.
/// `/bin/sleep 0.5;` to stand for real work).
pub fn dag30(work: &str) -> String {
    DAG30_TEMPLATE.replace("@WORK@", work)
}

const DAG30_TEMPLATE: &str = r#"
let
  mk = name: deps: extra: derivation ({
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" ("@WORK@ echo ${name} > $out; " + builtins.concatStringsSep "" (map (d: "echo ${d} >> $out; /bin/cat ${d} >> $out; ") deps)) ];
  } // extra);
  next = i: if i == 7 then 0 else i + 1;
  r0 = mk "r0" [] {};
  a = builtins.genList (i: mk "a${toString i}" [ r0 ] {}) 8;
  b = builtins.genList (i: mk "b${toString i}" [ (builtins.elemAt a i) (builtins.elemAt a (next i)) ] {}) 8;
  c = builtins.genList (i: mk "c${toString i}" [ (builtins.elemAt b i) (builtins.elemAt b (next i)) ] {}) 8;
  feat = mk "feat" [ r0 ] { requiredSystemFeatures = [ "big" ]; };
  d = builtins.genList (i: mk "d${toString i}" [ (builtins.elemAt c (i * 2)) (builtins.elemAt c (i * 2 + 1)) ] {}) 3;
  top = mk "top" (c ++ [ feat ] ++ d) {};
in [ r0 ] ++ a ++ b ++ c ++ [ feat ] ++ d ++ [ top ]
"#;

/// Parse a `.drv` of the daemon host's store.
pub fn derivation(host: &GuixHost, drv: &str) -> offload_core::derivation::Derivation {
    let base = offload_core::store_path::StorePath::parse(drv).expect("drv path");
    let text = std::fs::read(host.dir().join("store").join(base.base())).expect("read drv");
    offload_core::derivation::Derivation::parse(&text).expect("parse drv")
}

/// Build every derivation of `drvs` through hooks, as the daemon would:
/// each as soon as its inputs are built, up to `parallel` hooks at once.
pub fn build_all(host: &GuixHost, drvs: &[String], parallel: usize) -> Vec<(String, HookEnd)> {
    use std::collections::{BTreeMap, BTreeSet};
    let inputs: BTreeMap<String, BTreeSet<String>> = drvs
        .iter()
        .map(|d| {
            (
                d.clone(),
                derivation(host, d).input_drvs.keys().cloned().collect(),
            )
        })
        .collect();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut started: BTreeSet<String> = BTreeSet::new();
    let mut ends = Vec::new();
    std::thread::scope(|s| {
        let (tx, finished) = std::sync::mpsc::channel::<(String, HookEnd)>();
        let mut running = 0;
        while done.len() < drvs.len() {
            let ready: Vec<&String> = drvs
                .iter()
                .filter(|d| !started.contains(*d) && inputs[*d].iter().all(|i| done.contains(i)))
                .take(parallel - running)
                .collect();
            assert!(running > 0 || !ready.is_empty(), "nothing ready: a cycle?");
            for d in ready {
                started.insert(d.clone());
                running += 1;
                let tx = tx.clone();
                s.spawn(move || {
                    let features = derivation(host, d).required_system_features();
                    let features: Vec<&str> = features.iter().map(String::as_str).collect();
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    let end = rt.block_on(host.offload(d, &features, Duration::from_secs(120)));
                    let _ = tx.send((d.clone(), end));
                });
            }
            let (d, end) = finished.recv().expect("a hook thread ended");
            running -= 1;
            assert_eq!(end.code(), Some(0), "{d}: {end:#?}");
            done.insert(d.clone());
            ends.push((d, end));
        }
    });
    ends
}

/// The project's `deploy/guix-dispatcher`.
pub fn dispatcher() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/guix-dispatcher")
}

/// `L SYSTEM DRV FEATURES` as guix-daemon formats it (`%1% %2% %3% %4%`).
pub fn request_line(local_free: bool, system: &str, drv: &str, features: &[&str]) -> String {
    format!(
        "{} {system} {drv} {}",
        if local_free { 1 } else { 0 },
        features.join(",")
    )
}

/// A running hook.
pub struct HookProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    log: Option<std::thread::JoinHandle<Vec<u8>>>,
    /// Lines that were not replies, in order.
    pub chatter: Vec<String>,
}

/// How a hook ended.
#[derive(Debug)]
pub struct HookEnd {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote on stdout/stderr that was not a reply.
    pub chatter: Vec<String>,
    /// Everything it wrote on fd 4.
    pub log: Vec<u8>,
}

impl HookEnd {
    /// The exit code (`None`: killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

impl HookProcess {
    /// Its pid (also its process group and session).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a request line; the reply word (`accept`, `decline`,
    /// `postpone`, or whatever followed `# `). Lines before it are kept
    /// as chatter.
    pub fn ask(&mut self, line: &str) -> String {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .expect("write the request");
        loop {
            match self.lines.recv_timeout(Duration::from_secs(60)) {
                Ok(l) => match l.strip_prefix("# ") {
                    Some(word) => return word.to_owned(),
                    None => self.chatter.push(l),
                },
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no reply within 60 s; chatter: {:?}", self.chatter)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return String::from("<EOF>");
                }
            }
        }
    }

    /// Ask with `line` again after each `postpone` (as the daemon does,
    /// every 250 ms here) for at most `patience`; the last reply.
    pub fn ask_until_accepted(&mut self, line: &str, patience: Duration) -> String {
        let deadline = std::time::Instant::now() + patience;
        loop {
            let reply = self.ask(line);
            if reply != "postpone" || std::time::Instant::now() >= deadline {
                return reply;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The two lines after accept (each path followed by a space), then
    /// EOF on stdin.
    pub fn send_paths(&mut self, inputs: &[String], outputs: &[String]) {
        let mut stdin = self.stdin.take().expect("stdin open");
        let line = |paths: &[String]| paths.iter().map(|p| format!("{p} ")).collect::<String>();
        let text = format!("{}\n{}\n", line(inputs), line(outputs));
        stdin.write_all(text.as_bytes()).expect("write the paths");
    }

    /// Close stdin (the daemon is done with an idle hook).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Lines written so far that were not replies.
    pub fn drain_chatter(&mut self) -> &[String] {
        while let Ok(l) = self.lines.try_recv() {
            self.chatter.push(l);
        }
        &self.chatter
    }

    /// Wait until a line containing `text` is written (up to `limit`).
    pub fn wait_for_line(&mut self, text: &str, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(text);
                    self.chatter.push(l);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    /// SIGKILL its process group, as the daemon does.
    pub fn kill_group(&self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.pid())])
            .status();
    }

    /// Wait for it to exit; its status, chatter and log.
    pub fn finish(mut self) -> HookEnd {
        self.stdin = None;
        let status = self.child.wait().expect("wait for the hook");
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.chatter.push(l);
        }
        let log = self
            .log
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        HookEnd {
            status,
            chatter: std::mem::take(&mut self.chatter),
            log,
        }
    }
}

impl Drop for HookProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill_group();
            let _ = self.child.wait();
        }
    }
}
