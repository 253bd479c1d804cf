//! Real Avahi on a host of a [`Lan`](crate::lan): a private D-Bus
//! system bus and a private `/run/avahi-daemon` (its own mount namespace)
//! per host, the daemon restricted to the host's veth, IPv4 only, as in the
//! project's TESTBED notes. Processes are started through the LAN, so they
//! are killed at its teardown.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::lan::Lan;

/// Avahi running on one host.
pub struct Avahi {
    host: usize,
    bus: String,
}

impl Avahi {
    /// Start D-Bus and avahi-daemon on host `host`; `dir` holds their files.
    pub fn start(lan: &Lan, host: usize, dir: &Path) -> Self {
        crate::require_program("avahi-daemon", "avahi-daemon");
        crate::require_program("avahi-browse", "avahi-utils");
        crate::require_program("dbus-daemon", "dbus");
        std::fs::create_dir_all("/run/avahi-daemon").expect("create /run/avahi-daemon");
        let dir: PathBuf = dir.join(format!("avahi-{host}"));
        std::fs::create_dir_all(&dir).expect("avahi dir");
        let socket = dir.join("bus.sock");
        let bus = format!("unix:path={}", socket.display());
        std::fs::write(
            dir.join("bus.conf"),
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
  </policy>
  <include ignore_missing="yes">/usr/share/dbus-1/system.d/avahi-dbus.conf</include>
</busconfig>
"#,
                socket.display()
            ),
        )
        .expect("bus config");
        let iface = &lan.hosts()[host].iface;
        std::fs::write(
            dir.join("avahi.conf"),
            format!(
                "[server]\nhost-name=avahi{host}\nuse-ipv4=yes\nuse-ipv6=no\nallow-interfaces={iface}\nenable-dbus=yes\nratelimit-interval-usec=0\n\
                 [wide-area]\nenable-wide-area=no\n[publish]\npublish-workstation=no\npublish-hinfo=no\npublish-aaaa-on-ipv4=no\n[reflector]\n[rlimits]\n"
            ),
        )
        .expect("avahi config");
        let mut dbus = lan.command(host, "dbus-daemon");
        dbus.arg(format!("--config-file={}", dir.join("bus.conf").display()))
            .args(["--nofork", "--nopidfile"]);
        lan.spawn(dbus);
        wait_for(|| socket.exists(), "the private D-Bus socket");
        let mut daemon = lan.command(host, "unshare");
        daemon.env("DBUS_SYSTEM_BUS_ADDRESS", &bus).args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &format!(
                "mount -t tmpfs tmpfs /run/avahi-daemon && exec avahi-daemon --no-drop-root --no-chroot --no-rlimits -f {}",
                dir.join("avahi.conf").display()
            ),
        ]);
        lan.spawn(daemon);
        let me = Self { host, bus };
        wait_for(
            || {
                me.client(lan, "avahi-browse")
                    .args(["-t", "-p", "_none._tcp"])
                    .output()
                    .is_ok_and(|o| o.status.success())
            },
            "avahi-daemon to run",
        );
        me
    }

    /// A client program (`avahi-browse`, `avahi-publish`) bound to this host's daemon.
    pub fn client(&self, lan: &Lan, program: &str) -> Command {
        let mut cmd = lan.command(self.host, program);
        cmd.env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus);
        cmd
    }

    /// `avahi-browse -rpt TYPE`, parsed: resolved (`=`) lines as fields,
    /// with `\DDD` escapes decoded.
    pub fn browse(&self, lan: &Lan, service_type: &str) -> Vec<Vec<String>> {
        let out: Output = self
            .client(lan, "avahi-browse")
            .args(["-r", "-p", "-t", service_type])
            .output()
            .expect("avahi-browse");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with('='))
            .map(|l| l.split(';').map(decode).collect())
            .collect()
    }
}

/// Decode avahi-browse's `\DDD` (decimal) escapes.
fn decode(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(u8::is_ascii_digit)
        {
            let n: u32 = field[i + 1..i + 4].parse().unwrap_or(0);
            out.push(u8::try_from(n).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn wait_for(ok: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
