//! The embedded store's sandbox, attacked: builders given hostile scripts
//! (writing into inputs and the store, reading a secret at a host path,
//! reaching a loopback listener of the host, leaving their process group,
//! holding terminals and descriptors) must damage nothing, learn nothing
//! and leave nothing behind; afterwards every item of the store is hashed
//! again against its registration. Split from `store_embedded.rs`, whose
//! derivation kit (`embedded_kit`) it shares.

mod embedded_kit;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use offload_core::store_path::StorePath;
use offload_store::embedded::EmbeddedStore;
use offload_store::embedded::build::{BuildEvent, BuildOptions, BuildStatus, Exit};
use offload_tests::nixd::IsolatedNix;
use sha2::{Digest, Sha256};

use embedded_kit::*;

// --- The sandbox -----------------------------------------------------------

/// Every item in the store's directory (but dot files) is registered and its files still
/// hash to the registered NAR hash and size; the names of the items.
fn assert_store_intact(store: &EmbeddedStore) -> Vec<String> {
    let local = store.local();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(local.real_dir()).expect("read the store") {
        let name = entry.expect("entry").file_name();
        let name = name.to_str().expect("UTF-8 name").to_owned();
        if name.starts_with('.') {
            // Nix's own `.links` (the direct store shares its directory).
            continue;
        }
        let item = StorePath::from_base(local.store_dir().clone(), &name)
            .unwrap_or_else(|e| panic!("{name} in the store: {e}"));
        let info = local
            .db()
            .path_info(&item)
            .expect("path info")
            .unwrap_or_else(|| panic!("{item} is in the store but not registered"));
        let nar = offload_files::dump::dump_path(&local.real_path(&item), Vec::new())
            .expect("dump an item");
        assert_eq!(
            (<[u8; 32]>::from(Sha256::digest(&nar)), nar.len() as u64),
            (info.nar_hash, info.nar_size),
            "{item} was modified"
        );
        names.push(name);
    }
    names.sort();
    names
}

/// A derivation depending on a directory and a file that tries to damage
/// them and the store, read `secret`, reach `port` on the host's loopback
/// and regain privileges; it writes what it managed into `$out`.
fn attacker(secret: &Path, port: u16) -> String {
    let dir = sh(
        "victim-dir",
        "/usr/bin/mkdir $out; echo original > $out/file",
        "",
    );
    let file = sh("victim-file", "echo original > $out", "");
    let script = format!(
        "try() {{ if \"$@\" > /dev/null 2>&1; then echo \"ESCAPED: $*\"; else echo \"denied: $1\"; fi; }}; {{ \
         try /bin/sh -c 'echo x >> ${{f}}'; \
         try /bin/sh -c 'echo x > ${{d}}/file'; \
         try /usr/bin/touch ${{d}}/new; \
         try /usr/bin/chmod u+w ${{d}} ${{f}}; \
         try /usr/bin/rm -rf ${{d}}; \
         try /usr/bin/mv ${{f}} $NIX_STORE/moved; \
         try /usr/bin/mount -o remount,rw ${{d}}; \
         try /usr/bin/cat /etc/shadow; \
         try /usr/bin/cat {secret}; \
         try /usr/bin/bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}'; \
         try /usr/bin/unshare --user --map-root-user /bin/sh -c :; \
         echo escaped > $NIX_STORE/00000000000000000000000000000000-evil; \
         /usr/bin/mkdir $NIX_STORE/11111111111111111111111111111111-evil-dir; \
         echo uid=$(/usr/bin/id -u); /usr/bin/hostname; /usr/bin/cat /etc/passwd; echo done; \
         }} > $out",
        secret = secret.display()
    );
    format!(
        "let d = {dir}; f = {file}; in {}",
        sh("attacker", &script, "")
    )
}

/// What the attacker wrote: nothing escaped, every attempt is listed.
fn check_attacker_output(out: &str, root: bool) {
    assert!(!out.contains("ESCAPED"), "{out}");
    assert!(!out.contains("SECRET-KEY-MATERIAL"), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("denied: ")).count(),
        11,
        "{out}"
    );
    let uid = if root { "uid=30001" } else { "uid=0" };
    for line in [uid, "localhost", "done"] {
        assert!(out.lines().any(|l| l == line), "{line:?} in {out}");
    }
    assert!(out.contains("nixbld:x:"), "{out}");
}

/// A loopback listener of the host, and whether anyone connected to it.
struct Listener(std::net::TcpListener);

impl Listener {
    fn new() -> Self {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        l.set_nonblocking(true).expect("non-blocking");
        Self(l)
    }

    fn port(&self) -> u16 {
        self.0.local_addr().expect("address").port()
    }

    fn was_reached(&self) -> bool {
        match self.0.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("accept: {e}"),
        }
    }
}

#[test]
fn builders_can_damage_nothing_read_no_secret_and_reach_no_network() {
    let nix = IsolatedNix::new();
    // World-readable, at a host path: invisible rather than unreadable.
    let secret = nix.root().join("signing-key.sec");
    std::fs::write(&secret, "SECRET-KEY-MATERIAL\n").expect("write the secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let listener = Listener::new();
    let expr = attacker(&secret, listener.port());

    // The store at another real directory, and at its logical one.
    let drv = nix.instantiate(&expr);
    let store = namespace_store(&nix, &[&drv]);
    let mut direct = Direct::new(&nix);
    let direct_drv = direct.instantiate(&expr);
    for (store, drv) in [(&store, drv.as_str()), (&direct.store, &direct_drv)] {
        let before = assert_store_intact(store);
        let (results, events) = build_all(store, &[drv], &opts());
        let result = &results[0];
        assert_eq!(result.status, BuildStatus::Built, "{result:?} {events:?}");
        let out = std::fs::read_to_string(store.local().real_path(&result.outputs["out"]))
            .expect("the attacker's report");
        check_attacker_output(&out, offload_tests::running_as_root());
        // The victims were built as inputs; besides them only the outputs
        // appeared, and every item is intact.
        let after = assert_store_intact(store);
        let new: Vec<&String> = after.iter().filter(|n| !before.contains(n)).collect();
        assert_eq!(new.len(), 3, "{new:?}");
        assert!(
            new.iter().all(|n| n.ends_with("-victim-dir")
                || n.ends_with("-victim-file")
                || n.ends_with("-attacker")),
            "{new:?}"
        );
        let tmp: Vec<_> = std::fs::read_dir(store.root().join("tmp"))
            .expect("tmp")
            .collect();
        assert!(tmp.is_empty(), "left in tmp: {tmp:?}");
    }
    assert!(
        !listener.was_reached(),
        "a builder reached the host's loopback"
    );
    assert!(std::fs::read_to_string(&secret).is_ok_and(|s| s == "SECRET-KEY-MATERIAL\n"));
}

#[test]
fn fixed_output_derivations_keep_the_network() {
    let nix = IsolatedNix::new();
    let listener = Listener::new();
    let connect = format!(
        "if /usr/bin/bash -c 'exec 3<>/dev/tcp/127.0.0.1/{}'; then echo connected; else echo isolated; fi > $out",
        listener.port()
    );
    let plain = nix.instantiate(&sh("plain", &connect, ""));
    let fixed = nix.instantiate(&sh(
        "fixed",
        &connect,
        &format!(
            "outputHashAlgo = \"sha256\"; outputHashMode = \"flat\"; outputHash = \"{}\";",
            hex(&Sha256::digest(b"connected\n"))
        ),
    ));
    let store = namespace_store(&nix, &[&plain, &fixed]);
    let (results, events) = build_all(&store, &[&plain], &opts());
    assert_eq!(results[0].status, BuildStatus::Built, "{events:?}");
    let out = std::fs::read_to_string(store.local().real_path(&results[0].outputs["out"]))
        .expect("output");
    assert_eq!(out, "isolated\n");
    assert!(!listener.was_reached());

    let (results, events) = build_all(&store, &[&fixed], &opts());
    assert_eq!(
        results[0].status,
        BuildStatus::Built,
        "{results:?} {events:?}"
    );
    assert!(
        listener.was_reached(),
        "the fixed-output derivation had no network"
    );
    assert_store_intact(&store);
}

#[test]
fn processes_that_leave_the_process_group_die_with_the_build() {
    let nix = IsolatedNix::new();
    // Leaves its session and group, then writes into the (kept) build
    // directory after the builder failed.
    let late = nix.instantiate(&sh(
        "escapes-then-fails",
        "/usr/bin/setsid /bin/sh -c '/usr/bin/sleep 1.0419; echo alive > $NIX_BUILD_TOP/late' > /dev/null 2>&1 & exit 1",
        "",
    ));
    // Two children leave the session (process 1 leads its own already, so
    // `setsid` forks for it); killed at the timeout.
    let stuck = nix.instantiate(&sh(
        "escapes-and-hangs",
        "/usr/bin/setsid /usr/bin/sleep 29.4837 & exec /usr/bin/setsid --wait /usr/bin/sleep 29.4838",
        "",
    ));
    let store = namespace_store(&nix, &[&late, &stuck]);
    let (results, _) = build_all(
        &store,
        &[&late],
        &BuildOptions {
            keep_failed: true,
            ..opts()
        },
    );
    assert_eq!(results[0].status, BuildStatus::Failed(Exit::Code(1)));
    let kept = results[0].kept_build_dir.clone().expect("kept");
    let (results, _) = build_all(
        &store,
        &[&stuck],
        &BuildOptions {
            timeout: Some(Duration::from_secs(1)),
            ..opts()
        },
    );
    assert_eq!(results[0].status, BuildStatus::TimedOut, "{results:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !offload_tests::processes_with("29.483").is_empty()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        offload_tests::processes_with("29.483"),
        Vec::<String>::new()
    );
    // The escaped writer is gone with its namespace: it can never write.
    assert_eq!(
        offload_tests::processes_with("1.0419"),
        Vec::<String>::new()
    );
    assert!(
        !kept.join("late").exists(),
        "a process of the failed builder outlived it"
    );
    assert_store_intact(&store);
}

// --- Hardening: cleanup, outputs, terminal, fixed outputs, root ------------

/// The processes (their `stat` lines) of the PID namespace `ns` (as
/// `readlink /proc/PID/ns/pid` shows it) that are not dead yet (zombies
/// hold nothing).
fn live_processes_in(ns: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(link) = std::fs::read_link(entry.path().join("ns/pid")) else {
            continue;
        };
        if link.to_string_lossy() != ns {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        if !matches!(state, Some("Z" | "X") | None) {
            found.push(stat);
        }
    }
    found
}

/// The value of `KEY=…` among the log lines of `drv`.
fn logged(events: &[BuildEvent], drv: &str, key: &str) -> String {
    log_lines(events, drv)
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_owned))
        .unwrap_or_else(|| panic!("no {key}= in the log: {events:?}"))
}

#[test]
fn a_killed_build_s_namespace_is_gone_before_its_directories_are_touched() {
    let nix = IsolatedNix::new();
    // Slow to die: many processes that left the session, one of them with
    // a large address space to free.
    let drv = nix.instantiate(&sh(
        "slow-to-die",
        "echo ns=$(/usr/bin/readlink /proc/self/ns/pid); i=0; \
         while [ $i -lt 64 ]; do /usr/bin/setsid /usr/bin/sleep 31.4159 & i=$((i+1)); done; \
         /usr/bin/setsid /usr/bin/perl -e '$x = \"a\" x (1 << 28); print STDERR \"big\\n\"; sleep 60' & \
         exec /usr/bin/sleep 60",
        "",
    ));
    let store = namespace_store(&nix, &[&drv]);
    let (results, events) = build_all(
        &store,
        &[&drv],
        &BuildOptions {
            timeout: Some(Duration::from_secs(4)),
            ..opts()
        },
    );
    let live = live_processes_in(&logged(&events, &drv, "ns"));
    assert_eq!(results[0].status, BuildStatus::TimedOut, "{results:?}");
    assert!(
        log_lines(&events, &drv).iter().any(|l| l == "big"),
        "{events:?}"
    );
    assert_eq!(live, Vec::<String>::new(), "alive after the build returned");
    let tmp: Vec<_> = std::fs::read_dir(store.root().join("tmp"))
        .expect("tmp")
        .collect();
    assert!(tmp.is_empty(), "left in tmp: {tmp:?}");
}

/// Watches `path` from another thread until dropped: whether it ever
/// existed, and what `judge` said of it each time it did.
struct Watch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(bool, Vec<String>)>>,
}

impl Watch {
    fn new(path: std::path::PathBuf, judge: fn(&Path) -> Option<String>) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut seen, mut bad) = (false, Vec::new());
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if std::fs::symlink_metadata(&path).is_ok() {
                    seen = true;
                    if let Some(why) = judge(&path)
                        && !bad.contains(&why)
                    {
                        bad.push(why);
                    }
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            (seen, bad)
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (bool, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().expect("thread").join().expect("watcher")
    }
}

#[test]
fn outputs_reach_the_store_only_checked_and_canonical() {
    use std::os::unix::fs::MetadataExt;
    let nix = IsolatedNix::new();
    // Many files, so that checking takes a while; a world-writable
    // directory and a setuid file, as the builder left them.
    let make = "/usr/bin/mkdir $out; cd $out; i=0; while [ $i -lt 20000 ]; do : > f$i; i=$((i+1)); done; \
                echo $out > self; echo x > s; /usr/bin/chmod 4755 s; /usr/bin/mkdir w; /usr/bin/chmod 777 w";
    let rejected = nix.instantiate(&sh("rejected", make, "allowedReferences = [];"));
    let accepted = nix.instantiate(&sh("accepted", make, ""));
    let out_of = |drv: &str| nix.run("nix-store", &["--query", "--outputs", drv]);
    let store = namespace_store(&nix, &[&rejected, &accepted]);

    let real = store.local().real_path(&path(&out_of(&rejected)));
    let watch = Watch::new(real.clone(), |_| None);
    let (results, _) = build_all(&store, &[&rejected], &opts());
    let (seen, _) = watch.finish();
    assert_eq!(
        results[0].status,
        BuildStatus::OutputRejected,
        "{results:?}"
    );
    assert!(!seen, "the rejected output appeared in the store");
    assert!(!real.exists());

    let real = store.local().real_path(&path(&out_of(&accepted)));
    let watch = Watch::new(real, |p| {
        let top = std::fs::symlink_metadata(p).ok()?;
        let mode =
            |name: &str| std::fs::symlink_metadata(p.join(name)).map_or(0, |m| m.mode() & 0o7777);
        match (top.mode() & 0o7777, mode("s"), mode("w")) {
            (0o555, 0o555, 0o555) if top.mtime() == 1 => None,
            (top, s, w) => Some(format!("top {top:o}, s {s:o}, w {w:o}")),
        }
    });
    let (results, _) = build_all(&store, &[&accepted], &opts());
    let (seen, bad) = watch.finish();
    assert_eq!(results[0].status, BuildStatus::Built, "{results:?}");
    assert!(seen);
    assert_eq!(
        bad,
        Vec::<String>::new(),
        "seen in the store before canonical"
    );
    assert_store_intact(&store);
}

#[test]
fn builders_have_no_terminal_and_a_session_of_their_own() {
    let nix = IsolatedNix::new();
    let drv = nix.instantiate(&sh(
        "no-tty",
        "if [ -e /dev/tty ]; then echo tty=present; else echo tty=absent; fi; \
         read -r pid comm state ppid pgrp sid rest < /proc/$$/stat; echo sid=$sid; echo pid=$pid; \
         echo ok > $out",
        "",
    ));
    let store = namespace_store(&nix, &[&drv]);
    let (results, events) = build_all(&store, &[&drv], &opts());
    assert_eq!(results[0].status, BuildStatus::Built, "{events:?}");
    assert_eq!(logged(&events, &drv, "tty"), "absent");
    // Its own session: led by itself, not ours (outside its namespace,
    // which would show as 0).
    assert_eq!(logged(&events, &drv, "sid"), logged(&events, &drv, "pid"));
}

/// A process of the host that receives file descriptors on the abstract
/// Unix socket `name`, then, told to, writes through them.
struct FdCatcher(std::process::Child);

impl FdCatcher {
    const SCRIPT: &str = "import os, socket, sys\n\
        s = socket.socket(socket.AF_UNIX)\n\
        s.bind('\\0' + sys.argv[1]); s.listen(1)\n\
        print('listening', flush=True)\n\
        c, _ = s.accept()\n\
        _, fds, _, _ = socket.recv_fds(c, 16, 4)\n\
        c.send(b'k')\n\
        print('got', len(fds), flush=True)\n\
        sys.stdin.readline()\n\
        for fd in fds: os.pwrite(fd, b'EVIL!\\n', 0)\n\
        print('wrote', flush=True)\n";

    fn new(name: &str) -> Self {
        let child = std::process::Command::new("python3")
            .args(["-c", Self::SCRIPT, name])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut this = Self(child);
        assert_eq!(this.line(), "listening");
        this
    }

    fn line(&mut self) -> String {
        use std::io::Read;
        let mut line = Vec::new();
        let out = self.0.stdout.as_mut().expect("stdout");
        let mut byte = [0u8];
        while out.read(&mut byte).expect("read") == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        String::from_utf8_lossy(&line).into_owned()
    }

    fn write_through_them(&mut self) -> String {
        use std::io::Write;
        self.0
            .stdin
            .as_mut()
            .expect("stdin")
            .write_all(b"go\n")
            .expect("tell");
        self.line()
    }
}

impl Drop for FdCatcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn fixed_outputs_are_out_of_reach_of_descriptors_their_builder_handed_out() {
    let nix = IsolatedNix::new();
    let name = format!("offload-test-fd-{}", std::process::id());
    let mut catcher = FdCatcher::new(&name);
    // The builder keeps its output open for writing and hands the
    // descriptor to the host process before it exits.
    let fixed = nix.instantiate(&sh(
        "hands-out",
        &format!(
            "/usr/bin/python3 -c 'import os, socket\n\
             fd = os.open(os.environ[\"out\"], os.O_RDWR | os.O_CREAT, 0o644)\n\
             os.write(fd, b\"fixed\\n\")\n\
             s = socket.socket(socket.AF_UNIX); s.connect(\"\\0{name}\")\n\
             socket.send_fds(s, [b\"x\"], [fd]); s.recv(1)'"
        ),
        &format!(
            "outputHashAlgo = \"sha256\"; outputHashMode = \"flat\"; outputHash = \"{}\";",
            hex(&Sha256::digest(b"fixed\n"))
        ),
    ));
    let store = namespace_store(&nix, &[&fixed]);
    let (results, events) = build_all(&store, &[&fixed], &opts());
    assert_eq!(results[0].status, BuildStatus::Built, "{events:?}");
    assert_eq!(catcher.line(), "got 1");
    assert_eq!(catcher.write_through_them(), "wrote");
    let out = store.local().real_path(&results[0].outputs["out"]);
    assert_eq!(std::fs::read(&out).expect("output"), b"fixed\n");
    assert_store_intact(&store);
}

#[test]
fn root_refuses_to_build_without_a_sandbox() {
    // Root is what this is about; CI runs the suite as root. Elsewhere it
    // fails with the reason rather than passing without testing.
    assert!(
        offload_tests::running_as_root(),
        "this test needs root (it checks what root refuses to do); run the suite as root, as CI does"
    );
    let nix = IsolatedNix::new();
    let marker = nix.root().join("ran-as-root");
    let mut direct = Direct::new(&nix);
    let drv = direct.instantiate(&sh(
        "needs-a-sandbox",
        &format!("echo ran > {}; echo x > $out", marker.display()),
        "",
    ));
    let root = direct.store.root().to_owned();
    let store_dir = direct.store.local().store_dir().to_string();
    drop(direct);
    // Root without CAP_SYS_ADMIN: no namespace can be made.
    let out = std::process::Command::new(offload_tests::require_program("setpriv", "util-linux"))
        .args(["--inh-caps=-all", "--bounding-set=-sys_admin", "--"])
        .arg(offload_tests::bin("offload-agent"))
        .args(["build", "--store"])
        .arg(format!("embedded:{}", root.display()))
        .args(["--store-dir", &store_dir, &drv])
        .env("RUST_LOG", "warn")
        .output()
        .expect("offload-agent build");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("refusing to run builders as root without a sandbox")
            && err.contains("cannot create the namespaces"),
        "{err}"
    );
    assert!(!marker.exists(), "the builder ran as root");
}
