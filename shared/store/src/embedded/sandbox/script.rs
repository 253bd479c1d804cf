//! The sandbox's set-up script (see the parent module for what it builds)
//! and the `/etc` files it writes. Every word is single-quoted, so no path
//! or file content is ever interpreted by the shell.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{Sandbox, Spec, User};

/// Host directories shown read-only in the sandbox (or their symlinks).
const HOST_DIRS: [&str; 7] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr"];

/// Device nodes bound into the sandbox's `/dev`: Nix 2.8's without `tty`,
/// which would be the caller's terminal.
const DEV_NODES: [&str; 5] = ["full", "null", "random", "urandom", "zero"];

/// The host's files a fixed-output derivation sees, as in Nix.
const NETWORK_FILES: [&str; 3] = ["/etc/resolv.conf", "/etc/services", "/etc/hosts"];

/// The uid and gid `nixbld` has in `/etc/passwd` when the builder is the
/// user namespace's root (Nix's `sandboxUid`/`sandboxGid`).
const NAMESPACE_NIXBLD: (u32, u32) = (1000, 100);

fn os<T: AsRef<OsStr> + ?Sized>(t: &T) -> &OsStr {
    t.as_ref()
}

/// The script: `bash SCRIPT ENV_FILE ENV -i -- COMMAND…` sets the sandbox
/// up and executes `ENV -i -- NAME=VALUE… COMMAND…`, the assignments read
/// from ENV_FILE (NUL-separated, readable by us only) into the script's
/// memory, so that they appear in no long-lived command line.
pub(super) fn setup(spec: &Spec, sb: &Sandbox) -> Vec<u8> {
    let p = &sb.programs;
    let root = &sb.mount_point;
    let inside = |path: &Path| -> PathBuf { root.join(path.strip_prefix("/").unwrap_or(path)) };
    let mut s = ScriptWriter::default();
    s.raw("set -e\numask 022\n");
    s.raw("mapfile -d '' -t offload_env < \"$1\"\nshift\n");
    s.run(
        &p.mount,
        &[
            os("-t"),
            os("tmpfs"),
            os("-o"),
            os("mode=0755"),
            os("offload-sandbox"),
            os(root),
        ],
    );
    s.run(&p.mkdir, &[os("-m"), os("1777"), os(&root.join("tmp"))]);

    let mut dirs: Vec<PathBuf> = ["dev/pts", "dev/shm", "proc", "etc"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    let mut binds = Vec::new();
    for name in HOST_DIRS {
        let host = Path::new("/").join(name);
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(&host) {
                    s.run(&p.ln, &[os("-s"), os(&target), os(&root.join(name))]);
                }
            }
            Ok(m) if m.is_dir() => {
                dirs.push(root.join(name));
                binds.push(host);
            }
            _ => {}
        }
    }
    dirs.push(inside(&sb.logical_store));
    dirs.push(inside(&sb.build_dir_inside));
    let mut mkdir: Vec<&OsStr> = vec![os("-p")];
    mkdir.extend(dirs.iter().map(os));
    s.run(&p.mkdir, &mkdir);
    for host in &binds {
        bind(&mut s, sb, host, &inside(host), true);
    }

    // /dev, as Nix 2.8 makes it.
    for name in DEV_NODES {
        let host = Path::new("/dev").join(name);
        if host.exists() {
            let at = root.join("dev").join(name);
            s.create_empty(&at);
            bind(&mut s, sb, &host, &at, false);
        }
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        s.run(
            &p.ln,
            &[os("-s"), os(target), os(&root.join("dev").join(link))],
        );
    }
    // A private devpts where the kernel allows it (else no pseudo-terminals).
    s.cmd(
        &p.mount,
        &[
            os("-t"),
            os("devpts"),
            os("-o"),
            os("newinstance,ptmxmode=0666,mode=0620"),
            os("devpts"),
            os(&root.join("dev/pts")),
        ],
    );
    s.raw(" && ");
    s.cmd(
        &p.ln,
        &[os("-s"), os("pts/ptmx"), os(&root.join("dev/ptmx"))],
    );
    s.raw(" || :\n");
    s.run(
        &p.mount,
        &[
            os("-t"),
            os("tmpfs"),
            os("-o"),
            os("size=50%"),
            os("shm"),
            os(&root.join("dev/shm")),
        ],
    );
    s.run(
        &p.mount,
        &[os("-t"), os("proc"), os("proc"), os(&root.join("proc"))],
    );

    // /etc: generated, plus the host's name service files for fixed outputs.
    let etc = root.join("etc");
    let home = sb.build_dir_inside.to_string_lossy();
    s.write_file(&etc.join("passwd"), &passwd(sb.user, &home));
    s.write_file(&etc.join("group"), &group(sb.user));
    if sb.private_network {
        s.write_file(&etc.join("hosts"), HOSTS);
    } else {
        s.write_file(&etc.join("nsswitch.conf"), NSSWITCH);
        for file in NETWORK_FILES {
            let host = Path::new(file);
            if host.exists() {
                let at = inside(host);
                s.create_empty(&at);
                bind(&mut s, sb, host, &at, true);
            }
        }
    }

    // The scratch store with its read-only inputs, and the build directory.
    let store = inside(&sb.logical_store);
    bind(&mut s, sb, &sb.scratch.store(), &store, false);
    for input in sb.scratch.binds() {
        bind(&mut s, sb, &input.real, &store.join(&input.base), true);
    }
    bind(
        &mut s,
        sb,
        &spec.build_dir,
        &inside(&sb.build_dir_inside),
        false,
    );

    // Loopback up and host name set where the programs exist; failures
    // are reported in the set-up output but do not stop the build.
    if sb.private_network
        && let Some(ip) = &p.ip
    {
        s.cmd(ip, &[os("link"), os("set"), os("lo"), os("up")]);
        s.raw(" || :\n");
    }
    if let Some(hostname) = &p.hostname {
        s.cmd(hostname, &[os("localhost")]);
        s.raw(" || :\n");
    }
    s.raw("printf '\\002\\n' >&2\nexec \"$1\" \"$2\" \"$3\" \"${offload_env[@]}\" \"${@:4}\"\n");
    s.text
}

fn bind(s: &mut ScriptWriter, sb: &Sandbox, from: &Path, to: &Path, read_only: bool) {
    let mut args = vec![os("--bind")];
    if read_only {
        args.extend([os("-o"), os("ro")]);
    }
    args.extend([os(from), os(to)]);
    s.run(&sb.programs.mount, &args);
}

/// `/etc/passwd`: root, the build user and nobody, home the build
/// directory (Nix 2.8 `startBuilder`).
fn passwd(user: User, home: &str) -> String {
    let (uid, gid) = nixbld(user);
    format!(
        "root:x:0:0:Nix build user:{home}:/noshell\n\
         nixbld:x:{uid}:{gid}:Nix build user:{home}:/noshell\n\
         nobody:x:65534:65534:Nobody:/:/noshell\n"
    )
}

/// `/etc/group`, as Nix 2.8.
fn group(user: User) -> String {
    let (_, gid) = nixbld(user);
    format!("root:x:0:\nnixbld:!:{gid}:\nnogroup:x:65534:\n")
}

fn nixbld(user: User) -> (u32, u32) {
    match user {
        User::Build { uid, gid } => (uid, gid),
        User::MapRoot => NAMESPACE_NIXBLD,
    }
}

/// `/etc/hosts` without network.
const HOSTS: &str = "127.0.0.1 localhost\n::1 localhost\n";

/// `/etc/nsswitch.conf` of fixed-output derivations.
const NSSWITCH: &str = "hosts: files dns\nservices: files\n";

/// A POSIX shell script, every word single-quoted.
#[derive(Default)]
struct ScriptWriter {
    text: Vec<u8>,
}

impl ScriptWriter {
    fn raw(&mut self, text: &str) {
        self.text.extend_from_slice(text.as_bytes());
    }

    /// A command, without the end of the line.
    fn cmd(&mut self, program: &Path, args: &[&OsStr]) {
        self.quote(program.as_os_str());
        for a in args {
            self.text.push(b' ');
            self.quote(a);
        }
    }

    /// A command on a line of its own.
    fn run(&mut self, program: &Path, args: &[&OsStr]) {
        self.cmd(program, args);
        self.text.push(b'\n');
    }

    fn create_empty(&mut self, path: &Path) {
        self.raw(": > ");
        self.quote(path.as_os_str());
        self.text.push(b'\n');
    }

    fn write_file(&mut self, path: &Path, contents: &str) {
        self.raw("printf '%s' ");
        self.quote(OsStr::new(contents));
        self.raw(" > ");
        self.quote(path.as_os_str());
        self.text.push(b'\n');
    }

    fn quote(&mut self, word: &OsStr) {
        self.text.push(b'\'');
        for &b in word.as_bytes() {
            if b == b'\'' {
                self.text.extend_from_slice(b"'\\''");
            } else {
                self.text.push(b);
            }
        }
        self.text.push(b'\'');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_the_shell() {
        let mut s = ScriptWriter::default();
        s.write_file(Path::new("/dev/stdout"), "it's $HOME `x`\n");
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(std::ffi::OsStr::from_bytes(&s.text))
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"it's $HOME `x`\n");
    }

    #[test]
    fn etc_files_like_nix() {
        let build = User::Build {
            uid: 30001,
            gid: 30001,
        };
        assert_eq!(
            passwd(build, "/build"),
            "root:x:0:0:Nix build user:/build:/noshell\n\
             nixbld:x:30001:30001:Nix build user:/build:/noshell\n\
             nobody:x:65534:65534:Nobody:/:/noshell\n"
        );
        assert_eq!(
            group(User::MapRoot),
            "root:x:0:\nnixbld:!:100:\nnogroup:x:65534:\n"
        );
    }
}
