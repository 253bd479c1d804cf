//! Test kit shared by the integration tests in `tests/tests/` and the benchmarks.
//!
//! What it is: helpers to find the workspace's binaries, run real peers
//! (`nix-store`, `guile`) with clear failures, and make temporary trees.
//! What it is not: a mock of anything. Every peer here is the real program,
//! installed by `tests/run` (see the README); when one is missing the test
//! fails and says how to install it, it is never skipped silently.

pub mod agents;
pub mod avahi;
pub mod guix_host;
pub mod lan;
pub mod nixd;
pub mod sshd;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// `offload-master key generate --dir DIR`: a Guix key pair in `dir`.
pub fn generate_key(dir: &Path) {
    run_ok(
        offload("offload-master")
            .args(["key", "generate", "--dir"])
            .arg(dir),
        b"",
    );
}

/// `offload-master key authorize --acl ACL < PUBLIC`.
pub fn authorize_key(acl: &Path, public: &Path) {
    let key = std::fs::read(public).unwrap_or_else(|e| panic!("reading {}: {e}", public.display()));
    run_ok(
        offload("offload-master")
            .args(["key", "authorize", "--acl"])
            .arg(acl),
        &key,
    );
}

/// Path of a binary built from this workspace (`offload-master`, `offload-agent`).
///
/// Integration tests in this crate run the real binaries. `tests/run` builds
/// them before the tests; when run by hand, `cargo build --bins` first.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash>: the binaries are in target/<profile>/.
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build --bins` (tests/run does this) before the integration tests",
        path.display()
    );
    path
}

/// Find a program of a real peer on the PATH, or fail saying which Debian package has it.
pub fn require_program(program: &str, debian_package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{program}` is not installed: this test needs the real program from the Debian package \
         `{debian_package}`; run tests/run (it installs it) or `apt-get install {debian_package}`"
    );
}

/// Run a command to completion with `stdin` as its input, returning its output.
pub fn run_with_input(cmd: &mut Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    let mut child_stdin = child.stdin.take().expect("piped stdin");
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        // The child may exit early on bad input: a broken pipe is its answer, not ours.
        let _ = child_stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for child");
    writer.join().expect("stdin writer thread");
    out
}

/// Run a command that must succeed; panic with its stderr otherwise.
pub fn run_ok(cmd: &mut Command, stdin: &[u8]) -> Vec<u8> {
    let out = run_with_input(cmd, stdin);
    assert!(
        out.status.success(),
        "{:?} {:?} failed ({}):\n{}",
        cmd.get_program(),
        cmd.get_args().collect::<Vec<&OsStr>>(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A command for one of our binaries, with a quiet log filter.
pub fn offload(name: &str) -> Command {
    let mut cmd = Command::new(bin(name));
    cmd.env("RUST_LOG", "warn");
    cmd
}

// --- Guile helpers ---
//
// The libgcrypt side of the interop tests: `tests/guile/gcrypt-interop.scm`
// run by the real Guile with guile-gcrypt (Guix's crypto stack). Its
// subcommands and framing are documented at the top of the script. Byte
// strings cross the pipe as raw bytes (the script's ports are ISO-8859-1).

/// Path of the Guile script `tests/guile/gcrypt-interop.scm`.
pub fn guile_interop_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("guile/gcrypt-interop.scm")
}

/// Append one frame, `<decimal length>\n<bytes>`, to `out` (the script's framing).
pub fn guile_frame(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(bytes);
}

/// Split a sequence of frames written by the script; panics on malformed framing.
pub fn guile_unframe(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let newline = bytes.iter().position(|&b| b == b'\n').unwrap_or_else(|| {
            panic!(
                "frame without a length line: {:?}",
                String::from_utf8_lossy(bytes)
            )
        });
        let len: usize = std::str::from_utf8(&bytes[..newline])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "bad frame length {:?}",
                    String::from_utf8_lossy(&bytes[..newline])
                )
            });
        let rest = &bytes[newline + 1..];
        assert!(
            rest.len() >= len,
            "truncated frame: {len} bytes announced, {} left",
            rest.len()
        );
        frames.push(rest[..len].to_vec());
        bytes = &rest[len..];
    }
    frames
}

/// The atoms of a signature s-expression as libgcrypt parsed them (bytes as stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuileSignatureParts {
    /// The hash value inside `(data … (hash sha256 H))`.
    pub hash: Vec<u8>,
    /// `r` of the `(sig-val (ecdsa (r …) (s …)))`, minimal-length big-endian.
    pub r: Vec<u8>,
    /// `s` of the sig-val, minimal-length big-endian.
    pub s: Vec<u8>,
    /// `q` of the signature's `public-key` (32 bytes for Ed25519).
    pub q: Vec<u8>,
}

/// Real libgcrypt through Guile and guile-gcrypt, driven by `gcrypt-interop.scm`.
///
/// Each method runs one Guile process for a whole batch.
#[derive(Debug, Clone)]
pub struct GuileGcrypt {
    guile: PathBuf,
    script: PathBuf,
}

impl GuileGcrypt {
    /// Find Guile and check that `(use-modules (gcrypt pk-crypto))` works.
    ///
    /// Panics (never skips) when `guile` or guile-gcrypt is missing.
    pub fn new() -> Self {
        let guile = require_program("guile", "guile-3.0");
        let out = Command::new(&guile)
            .args([
                "--no-auto-compile",
                "-c",
                "(use-modules (gcrypt pk-crypto))",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", guile.display()));
        assert!(
            out.status.success(),
            "Guile cannot load (gcrypt pk-crypto): install guile-gcrypt \
             (`apt-get install guile-gcrypt`, or run tests/run which installs it):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let script = guile_interop_script();
        assert!(script.is_file(), "missing {}", script.display());
        Self { guile, script }
    }

    /// The command `guile --no-auto-compile -s gcrypt-interop.scm ARGS…`.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.guile);
        cmd.arg("--no-auto-compile")
            .arg("-s")
            .arg(&self.script)
            .args(args);
        cmd
    }

    /// `genkey DIR`: a key pair made as `guix archive --generate-key` does, in
    /// `DIR/signing-key.pub` (0444) and `DIR/signing-key.sec` (0400).
    pub fn genkey(&self, dir: &Path) {
        run_ok(
            &mut self.command([OsStr::new("genkey"), dir.as_os_str()]),
            b"",
        );
    }

    /// `sign`: Guix's signature s-expression text for each hash, in order.
    pub fn sign(&self, secret_key: &Path, public_key: &Path, hashes: &[[u8; 32]]) -> Vec<Vec<u8>> {
        let mut input = Vec::new();
        for hash in hashes {
            input.extend_from_slice(data_encoding::HEXLOWER.encode(hash).as_bytes());
            input.push(b'\n');
        }
        let out = run_ok(
            &mut self.command([
                OsStr::new("sign"),
                secret_key.as_os_str(),
                public_key.as_os_str(),
            ]),
            &input,
        );
        let sigs = guile_unframe(&out);
        assert_eq!(
            sigs.len(),
            hashes.len(),
            "Guile returned a wrong number of signatures"
        );
        sigs
    }

    /// `verify`: check each `(expected hash, signature text)` as Guix does, with
    /// `public_keys` as the ACL. Returns `ok` or `fail <reason>` per item.
    pub fn verify(&self, public_keys: &[&Path], items: &[([u8; 32], Vec<u8>)]) -> Vec<String> {
        let mut input = Vec::new();
        for (hash, sig) in items {
            input.extend_from_slice(data_encoding::HEXLOWER.encode(hash).as_bytes());
            input.push(b'\n');
            guile_frame(&mut input, sig);
        }
        let mut args = vec![OsStr::new("verify")];
        args.extend(public_keys.iter().map(|p| p.as_os_str()));
        let out = run_ok(&mut self.command(args), &input);
        let lines: Vec<String> = String::from_utf8(out)
            .expect("verify prints ASCII")
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(
            lines.len(),
            items.len(),
            "Guile returned a wrong number of verdicts"
        );
        lines
    }

    /// `reprint`: libgcrypt's advanced-format printing of each parsed file.
    pub fn reprint(&self, files: &[&Path]) -> Vec<Vec<u8>> {
        let mut args = vec![OsStr::new("reprint")];
        args.extend(files.iter().map(|p| p.as_os_str()));
        let frames = guile_unframe(&run_ok(&mut self.command(args), b""));
        assert_eq!(
            frames.len(),
            files.len(),
            "Guile returned a wrong number of texts"
        );
        frames
    }

    /// `canon`: libgcrypt's advanced-format printing of each parsed text.
    pub fn canon(&self, texts: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut input = Vec::new();
        for text in texts {
            guile_frame(&mut input, text);
        }
        let frames = guile_unframe(&run_ok(&mut self.command(["canon"]), &input));
        assert_eq!(
            frames.len(),
            texts.len(),
            "Guile returned a wrong number of texts"
        );
        frames
    }

    /// `parts`: the hash, r, s and q atoms of each signature text, as libgcrypt parsed them.
    pub fn parts(&self, signatures: &[Vec<u8>]) -> Vec<GuileSignatureParts> {
        let mut input = Vec::new();
        for sig in signatures {
            guile_frame(&mut input, sig);
        }
        let out = run_ok(&mut self.command(["parts"]), &input);
        let text = String::from_utf8(out).expect("parts prints ASCII");
        let hex = |s: &str| {
            data_encoding::HEXLOWER
                .decode(s.as_bytes())
                .unwrap_or_else(|e| panic!("bad hex {s:?} from Guile: {e}"))
        };
        let parts: Vec<GuileSignatureParts> = text
            .lines()
            .map(|line| match line.split(' ').collect::<Vec<_>>()[..] {
                [hash, r, s, q] => GuileSignatureParts {
                    hash: hex(hash),
                    r: hex(r),
                    s: hex(s),
                    q: hex(q),
                },
                _ => panic!("bad parts line {line:?}"),
            })
            .collect();
        assert_eq!(
            parts.len(),
            signatures.len(),
            "Guile returned a wrong number of part lines"
        );
        parts
    }
}

impl Default for GuileGcrypt {
    fn default() -> Self {
        Self::new()
    }
}

// --- Nix helpers ---
//
// Helpers for the tests that run the real Nix 2.8 (`nix-store`) next to our
// binaries: an environment that keeps Nix inside a temporary directory, a
// deterministic generator of file trees full of corner cases, tree and byte
// comparisons that report where things differ. Paths are written out in full
// (`std::fs::…`) so that this section never clashes with imports added by
// other sections.

/// Environment variables that keep a `nix-store` run inside `tmp`.
///
/// * `NIX_CONFIG` is the configuration of `nix-daemon.md` §1, except that
///   `build-users-group` is empty: these tests never build, and the empty
///   value avoids a warning when the `nixbld` group is absent.
/// * `NIX_STATE_DIR`, `NIX_LOG_DIR` and `NIX_CONF_DIR` point under
///   `tmp/nix-env/`, as do `HOME` and the XDG directories, so nothing is
///   read from `/etc/nix` or written to `/nix/var` or the real home.
/// * `NIX_STORE_DIR` is deliberately **not** set: a chroot store
///   `local?root=…` then keeps the logical store `/nix/store`. Commands that
///   touch a store must name it with `--store` (`nix_store_url`).
///
/// Use it as `cmd.envs(nix_env(tmp))`; `nix_store` does this for you.
pub fn nix_env(tmp: &Path) -> Vec<(&'static str, std::ffi::OsString)> {
    nix_confined_to(&tmp.join("nix-env"))
}

/// The configuration of `nix_env`, with state, logs, configuration and home
/// directories under `base` (`base/var`, `base/var/log`, `base/etc`,
/// `base/home`).
pub fn nix_confined_to(base: &Path) -> Vec<(&'static str, std::ffi::OsString)> {
    let dir = |sub: &str| base.join(sub).into_os_string();
    vec![
        (
            "NIX_CONFIG",
            "build-users-group =\n\
             sandbox = false\n\
             substituters =\n\
             experimental-features = nix-command\n"
                .into(),
        ),
        ("NIX_STATE_DIR", dir("var")),
        ("NIX_LOG_DIR", dir("var/log")),
        ("NIX_CONF_DIR", dir("etc")),
        ("HOME", dir("home")),
        ("XDG_CACHE_HOME", dir("home/.cache")),
        ("XDG_CONFIG_HOME", dir("home/.config")),
        ("XDG_DATA_HOME", dir("home/.local/share")),
        ("XDG_STATE_HOME", dir("home/.local/state")),
    ]
}

/// A key pair in `dir` (`signing-key.sec`, `signing-key.pub`) made by
/// `offload-master key generate`, and an ACL at `acl` authorizing it.
pub fn key_and_acl(dir: &Path, acl: &Path) {
    run_ok(
        offload("offload-master")
            .arg("key")
            .arg("generate")
            .arg("--dir")
            .arg(dir),
        b"",
    );
    let public = std::fs::read(dir.join("signing-key.pub")).expect("public key");
    run_ok(
        offload("offload-master")
            .arg("key")
            .arg("authorize")
            .arg("--acl")
            .arg(acl),
        &public,
    );
}

/// A `nix-store` command confined to `tmp` by `nix_env`, with `NIX_REMOTE`
/// removed so that it never talks to a daemon, and `NIX_STORE_DIR` removed so
/// that the default logical store is `/nix/store`.
///
/// Fails (never skips) when `nix-store` is not installed.
pub fn nix_store(tmp: &Path) -> Command {
    let mut cmd = Command::new(require_program("nix-store", "nix-bin"));
    cmd.envs(nix_env(tmp))
        .env_remove("NIX_REMOTE")
        .env_remove("NIX_STORE_DIR");
    cmd
}

/// The `--store` URL of a chroot store whose files live under `root` and
/// whose logical store directory is `store_dir` (`nix-daemon.md` §3).
///
/// With `store_dir = "/gnu/store"` the items land in `root/nix/store` and
/// nothing is created under `/gnu`.
pub fn nix_store_url(root: &Path, store_dir: &str) -> String {
    format!("local?root={}&store={store_dir}", root.display())
}

/// `nix-store --dump PATH`: the NAR of any file, directory or symlink.
pub fn nix_dump(tmp: &Path, path: &Path) -> Vec<u8> {
    run_ok(nix_store(tmp).arg("--dump").arg(path), b"")
}

/// Assert that two byte strings are equal. On a mismatch the message gives
/// both lengths, the first differing offset and a short hex window around it,
/// never the whole (possibly megabytes long) contents.
pub fn assert_bytes_eq(what: &str, actual: &[u8], expected: &[u8]) {
    if actual == expected {
        return;
    }
    let first = actual
        .iter()
        .zip(expected)
        .position(|(a, e)| a != e)
        .unwrap_or_else(|| actual.len().min(expected.len()));
    let window = |bytes: &[u8]| {
        let start = first.saturating_sub(16);
        let end = (first + 32).min(bytes.len());
        let slice = bytes.get(start..end).unwrap_or_default();
        let hex: Vec<String> = slice.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "[{start:#x}..{end:#x}] {} {:?}",
            hex.join(" "),
            String::from_utf8_lossy(slice)
        )
    };
    panic!(
        "{what}: bytes differ: actual is {} bytes, expected {} bytes, first difference at offset {first} ({first:#x})\n  actual:   {}\n  expected: {}",
        actual.len(),
        expected.len(),
        window(actual),
        window(expected)
    );
}

/// Deterministic pseudo-random numbers (SplitMix64) for generated test data.
struct TreeRng(u64);

impl TreeRng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// Write `contents` to a new file at `path` and set its permission bits to `mode`.
pub fn write_file_mode(path: &Path, contents: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Create a symlink `link` pointing at the raw bytes `target`.
pub fn make_symlink(target: &[u8], link: &Path) {
    use std::os::unix::ffi::OsStrExt;
    std::os::unix::fs::symlink(OsStr::from_bytes(target), link)
        .unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
}

/// Write a deterministic tree of NAR corner cases at `root` (which must not exist).
///
/// The same `seed` always gives the same tree. Every tree contains:
/// * regular files of 0, 1, 7, 8, 9, 4095, 4097 bytes and a ~1 MiB file
///   (sizes that are and are not multiples of 8);
/// * executables (0755, 0700, an empty one) and a file whose only execute
///   bit is the group's (0654, not executable in a NAR);
/// * symlinks to relative targets, to a directory, upwards (`..`), to
///   dangling and absolute targets, a long target and a non-UTF-8 target;
/// * nested directories, empty directories (0755 and 0700);
/// * odd names: spaces, a leading `-`, `--`, a dot file, tab and newline,
///   unicode, a non-UTF-8 name, a 255-byte name, and `B a a.b a-b a0 A`,
///   which sort differently bytewise and case-insensitively.
///
/// On top of that the seed adds a few directories of random files, sizes,
/// execute bits and symlinks.
pub fn write_test_tree(root: &Path, seed: u64) {
    use std::os::unix::ffi::OsStrExt;
    let mut rng = TreeRng(seed ^ 0x6f66_666c_6f61_6421);
    let mkdir = |p: &Path| {
        std::fs::create_dir(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    };
    mkdir(root);

    // Sizes around the 8-byte padding and a page.
    for size in [0usize, 1, 7, 8, 9, 4095, 4097] {
        let contents = rng.bytes(size);
        write_file_mode(&root.join(format!("size-{size}")), &contents, 0o644);
    }
    let big = rng.bytes((1 << 20) + 3);
    write_file_mode(&root.join("big.bin"), &big, 0o644);

    // Execute bits.
    write_file_mode(&root.join("run.sh"), b"#!/bin/sh\necho run\n", 0o755);
    write_file_mode(&root.join("private-exec"), &rng.bytes(33), 0o700);
    write_file_mode(&root.join("exec-empty"), b"", 0o755);
    write_file_mode(&root.join("group-exec-only"), b"not executable\n", 0o654);
    write_file_mode(&root.join("read-only"), b"ro\n", 0o444);

    // Directories.
    mkdir(&root.join("empty-dir"));
    mkdir(&root.join("sub"));
    mkdir(&root.join("sub/deeper"));
    mkdir(&root.join("sub/deeper/deepest"));
    write_file_mode(&root.join("sub/deeper/deepest/leaf"), b"leaf\n", 0o644);
    write_file_mode(&root.join("sub/deeper/tool"), b"\x7fELF-ish", 0o755);
    mkdir(&root.join("sub/private-empty"));
    std::fs::set_permissions(
        root.join("sub/private-empty"),
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700),
    )
    .expect("chmod sub/private-empty");

    // Symlinks.
    make_symlink(b"size-1", &root.join("link-rel"));
    make_symlink(b"sub/deeper", &root.join("link-dir"));
    make_symlink(b"../../size-9", &root.join("sub/deeper/link-up"));
    make_symlink(b"does/not/exist", &root.join("dangling"));
    make_symlink(b"/etc/hostname", &root.join("abs"));
    make_symlink(
        b"/gnu/store/00000000000000000000000000000000-absent/bin/sh",
        &root.join("abs-dangling"),
    );
    make_symlink(b"/", &root.join("slash"));
    make_symlink("x/".repeat(150).as_bytes(), &root.join("long-target"));
    make_symlink(b"\xff\xfe-target", &root.join("non-utf8-target"));

    // Odd names.
    mkdir(&root.join("names"));
    let names: [&[u8]; 16] = [
        b"with space",
        b" leading space",
        b"-leading-dash",
        b"--",
        b".hidden",
        b"tab\tand\nnewline",
        "ünïcødé-名前".as_bytes(),
        b"non-utf8-\xe9\xff",
        b"B",
        b"a",
        b"a.b",
        b"a-b",
        b"a0",
        b"A",
        b"b",
        b"_",
    ];
    for name in names {
        let path = root.join("names").join(OsStr::from_bytes(name));
        write_file_mode(&path, name, 0o644);
    }
    let long_name = [b'n'; 255];
    write_file_mode(
        &root.join("names").join(OsStr::from_bytes(&long_name)),
        b"255-byte name\n",
        0o644,
    );
    let long_dir = [b'd'; 255];
    mkdir(&root.join(OsStr::from_bytes(&long_dir)));
    make_symlink(
        &long_name,
        &root.join(OsStr::from_bytes(&long_dir)).join("l"),
    );

    // Seeded part.
    let gen_root = root.join("gen");
    mkdir(&gen_root);
    let mut dirs = vec![gen_root];
    let mut files: Vec<String> = Vec::new();
    for i in 0..(8 + rng.below(8)) {
        let parent = dirs[rng.below(dirs.len() as u64) as usize].clone();
        match rng.below(6) {
            0 => {
                let dir = parent.join(format!("d{i}"));
                mkdir(&dir);
                dirs.push(dir);
            }
            1 if !files.is_empty() => {
                let target = files[rng.below(files.len() as u64) as usize].clone();
                make_symlink(target.as_bytes(), &parent.join(format!("l{i}")));
            }
            _ => {
                let size = match rng.below(3) {
                    0 => rng.below(17) as usize,
                    1 => 8 * rng.below(20) as usize,
                    _ => rng.below(10_000) as usize,
                };
                let mode = if rng.below(3) == 0 { 0o755 } else { 0o644 };
                let name = format!("f{i}-{size}");
                write_file_mode(&parent.join(&name), &rng.bytes(size), mode);
                files.push(name);
            }
        }
    }
}

/// `root` joined with a path `rel` from `walk_tree`: `root` itself for the
/// empty path (`Path::join("")` would add a trailing `/`, which makes
/// `lstat` follow a symlink root or fail on a file root).
pub fn tree_path(root: &Path, rel: &Path) -> PathBuf {
    if rel.as_os_str().is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

/// All paths of the tree at `root`, relative to it, sorted bytewise; the
/// root itself is the empty path (turn them back into full paths with
/// `tree_path`). Symlinks are listed, never followed.
pub fn walk_tree(root: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
        out.push(rel.to_path_buf());
        let path = tree_path(root, rel);
        let meta = std::fs::symlink_metadata(&path)
            .unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
        if meta.is_dir() {
            let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(&path)
                .unwrap_or_else(|e| panic!("readdir {}: {e}", path.display()))
                .map(|entry| entry.expect("directory entry").file_name())
                .collect();
            names.sort();
            for name in names {
                walk(root, &rel.join(name), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, Path::new(""), &mut out);
    out
}

/// Assert that the tree at `actual` has the same NAR-visible contents as the
/// tree at `expected`: the same names, node types, file contents, owner
/// execute bits and symlink targets (permissions otherwise and times are
/// ignored, as in a NAR).
pub fn assert_trees_equal(expected: &Path, actual: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let expected_paths = walk_tree(expected);
    let actual_paths = walk_tree(actual);
    assert_eq!(
        actual_paths,
        expected_paths,
        "the tree at {} does not have the paths of {}",
        actual.display(),
        expected.display()
    );
    for rel in expected_paths {
        let (e, a) = (tree_path(expected, &rel), tree_path(actual, &rel));
        let em = std::fs::symlink_metadata(&e).expect("lstat expected");
        let am = std::fs::symlink_metadata(&a).expect("lstat actual");
        let kind = |m: &std::fs::Metadata| {
            if m.is_dir() {
                "directory"
            } else if m.file_type().is_symlink() {
                "symlink"
            } else if m.is_file() {
                "regular"
            } else {
                "other"
            }
        };
        assert_eq!(kind(&am), kind(&em), "node type of {}", a.display());
        if em.file_type().is_symlink() {
            assert_eq!(
                std::fs::read_link(&a).expect("readlink actual"),
                std::fs::read_link(&e).expect("readlink expected"),
                "symlink target of {}",
                a.display()
            );
        } else if em.is_file() {
            assert_eq!(
                am.permissions().mode() & 0o100 != 0,
                em.permissions().mode() & 0o100 != 0,
                "owner execute bit of {} (mode {:o}, expected like {:o})",
                a.display(),
                am.permissions().mode(),
                em.permissions().mode()
            );
            assert_bytes_eq(
                &format!("contents of {}", a.display()),
                &std::fs::read(&a).expect("read actual"),
                &std::fs::read(&e).expect("read expected"),
            );
        }
    }
}

/// Give the owner write permission on every directory under `root`, so that
/// a tree restored read-only (directories 0555) can be deleted by a non-root
/// user when its `TempDir` is dropped.
pub fn make_tree_writable(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for rel in walk_tree(root) {
        let path = tree_path(root, &rel);
        let meta = std::fs::symlink_metadata(&path).expect("lstat");
        if meta.is_dir() {
            let mode = meta.permissions().mode() | 0o700;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        }
    }
}

/// Whether this process is root.
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Processes of this machine whose command line contains `marker`, as
/// their command lines (arguments joined by spaces).
pub fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(marker) {
                found.push(cmdline);
            }
        }
    }
    found
}

/// This machine's Nix system (`builtins.currentSystem`).
pub fn current_system() -> String {
    format!("{}-linux", std::env::consts::ARCH)
}
