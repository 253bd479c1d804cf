//! `offload-agent run` and `stdio` as operators meet them: start-up
//! errors that name the file or port, and SIGTERM draining (running
//! builds finish, new leases are refused, then the agent exits), on
//! 127.0.0.1 without advertising (no mDNS here).

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use offload_core::proto::{BuildRequest, BuildStatus, FailureKind};
use offload_master::agent_link::LinkError;
use offload_tests::agents::{Drvs, connect, runtime, wait_for};
use offload_tests::{bin, key_and_acl, processes_with};

struct Setup {
    tmp: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        // The master's key in the agent's ACL, the agent's in the master's.
        key_and_acl(&tmp.path().join("master"), &tmp.path().join("agent-acl"));
        key_and_acl(&tmp.path().join("agent"), &tmp.path().join("master-acl"));
        Self { tmp }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// `offload-agent run` with everything under the temporary directory;
    /// `changes` replace (or add) flags.
    fn run_with(&self, listen: &str, changes: &[(&str, String)]) -> Command {
        let path = |rel: &str| self.p(rel).display().to_string();
        let mut flags: Vec<(&str, String)> = vec![
            ("--listen", listen.to_owned()),
            ("--systems", offload_tests::current_system()),
            ("--key", path("agent/signing-key.sec")),
            ("--acl", path("agent-acl")),
            ("--store", format!("embedded:{}", path("store"))),
            ("--state-dir", path("state")),
            ("--speed", "1".to_owned()),
        ];
        for (flag, value) in changes {
            match flags.iter_mut().find(|(f, _)| f == flag) {
                Some(slot) => slot.1 = value.clone(),
                None => flags.push((flag, value.clone())),
            }
        }
        let mut cmd = Command::new(bin("offload-agent"));
        cmd.env("RUST_LOG", "info").args(["run", "--no-advertise"]);
        for (flag, value) in flags {
            cmd.arg(flag).arg(value);
        }
        cmd
    }

    fn run(&self, listen: &str) -> Command {
        self.run_with(listen, &[])
    }

    fn master_key(&self) -> Arc<offload_core::keys::SecretKey> {
        Arc::new(offload_files::key_file::load_secret(&self.p("master/signing-key.sec")).unwrap())
    }

    fn agent_acl(&self) -> offload_core::acl::Acl {
        offload_files::acl_file::load(&self.p("master-acl")).unwrap()
    }
}

/// A UDP port free on 127.0.0.1 now.
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Run to completion; (exit code, stderr).
fn fails(cmd: &mut Command) -> (Option<i32>, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("run offload-agent");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_error(cmd: &mut Command, needles: &[&str]) {
    let (code, stderr) = fails(cmd);
    assert_eq!(code, Some(2), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{n:?} not in: {stderr}");
    }
}

#[test]
fn start_up_errors_name_the_file_or_port() {
    let s = Setup::new();
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let path = |rel: &str| s.p(rel).display().to_string();
    check_error(
        &mut s.run_with(&listen, &[("--key", path("missing.sec"))]),
        &["missing.sec", "offload-master key generate"],
    );
    check_error(
        &mut s.run_with(&listen, &[("--acl", path("no-acl"))]),
        &["no-acl", "offload-master key authorize"],
    );
    std::fs::write(s.p("bad-acl"), "(acl (entry))").unwrap();
    check_error(
        &mut s.run_with(&listen, &[("--acl", path("bad-acl"))]),
        &["bad-acl"],
    );
    check_error(
        &mut s.run_with(&listen, &[("--store", "embedded:/etc/passwd/store".into())]),
        &["embedded:/etc/passwd/store"],
    );
    std::fs::write(
        s.p("agent.toml"),
        "systems = [\"x86_64-linux\"]\nparalel-builds = 2\n",
    )
    .unwrap();
    check_error(
        &mut s.run_with(&listen, &[("--config", path("agent.toml"))]),
        &["agent.toml", "2:1", "paralel-builds"],
    );
    let taken = UdpSocket::bind(&listen).unwrap();
    check_error(
        &mut s.run(&listen),
        &[&format!("cannot listen on {listen}")],
    );
    drop(taken);
}

/// Start the agent; wait until it serves.
fn start(cmd: &mut Command, s: &Setup) -> Child {
    let log = std::fs::File::create(s.p("agent.log")).unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the agent");
    assert!(
        wait_for(Duration::from_secs(20), || {
            std::fs::read_to_string(s.p("agent.log")).is_ok_and(|l| l.contains("serving builds"))
        }),
        "the agent did not start: {}",
        std::fs::read_to_string(s.p("agent.log")).unwrap_or_default()
    );
    child
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn exited_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_drains_then_stops_and_a_second_signal_stops_now() {
    let s = Setup::new();
    let port = free_port();
    let mut agent = start(&mut s.run(&format!("127.0.0.1:{port}")), &s);
    let addr = ([127, 0, 0, 1], port).into();
    let drvs = Drvs::new();
    let drv = drvs.sh("drain", "echo started; /bin/sleep 3; echo done > $out");
    let rt = runtime();
    let master = s.master_key();
    let acl = s.agent_acl();
    rt.block_on(async {
        let link = connect(addr, &master, &acl, None).await.expect("connect");
        let closure = drvs.closure(&[&drv]);
        let stream = drvs.signed_export(&closure, &master).await;
        link.import(&mut &stream[..]).await.expect("import");
        let lease = link.lease().await.expect("lease");
        let link = Arc::new(link);
        let build = {
            let (link, drv) = (Arc::clone(&link), drv.clone());
            tokio::spawn(async move {
                let req = BuildRequest {
                    lease: lease.id,
                    drv,
                    max_silent_secs: 0,
                    timeout_secs: 0,
                };
                link.build(req, &mut |_| {}).await
            })
        };
        tokio::time::sleep(Duration::from_millis(800)).await;
        signal(&agent, "TERM");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let status = link.status().await.expect("status while draining");
        assert!(status.draining && status.running == 1, "{status:?}");
        let other = connect(addr, &master, &acl, None)
            .await
            .expect("a second master connects");
        let refused = other.lease().await.expect_err("no lease while draining");
        assert!(
            matches!(&refused, LinkError::Failed(f) if f.kind == FailureKind::Draining),
            "{refused}"
        );
        let outcome = build.await.unwrap().expect("the running build finishes");
        assert_eq!(outcome.status, BuildStatus::Built, "{outcome:?}");
    });
    let status = exited_within(&mut agent, Duration::from_secs(15))
        .expect("the agent stops after its build");
    assert!(status.success(), "{status}");

    // Again, with a second signal while a long build runs: it stops now.
    let marker = format!("2000.000{}", std::process::id());
    let long = drvs.sh(
        "stop-now",
        &format!("echo started; exec /bin/sleep {marker}"),
    );
    let mut agent = start(&mut s.run(&format!("127.0.0.1:{port}")), &s);
    rt.block_on(async {
        let link = connect(addr, &master, &acl, None).await.expect("connect");
        let closure = drvs.closure(&[&long]);
        let stream = drvs.signed_export(&closure, &master).await;
        link.import(&mut &stream[..]).await.expect("import");
        let lease = link.lease().await.expect("lease");
        let req = BuildRequest {
            lease: lease.id,
            drv: long.clone(),
            max_silent_secs: 0,
            timeout_secs: 0,
        };
        let mut log = |_: &[u8]| {};
        let build = link.build(req, &mut log);
        tokio::pin!(build);
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut build).await;
        assert!(
            wait_for(Duration::from_secs(5), || !processes_with(&marker)
                .is_empty()),
            "the build runs"
        );
        signal(&agent, "TERM");
        tokio::time::sleep(Duration::from_millis(300)).await;
        signal(&agent, "TERM");
        let ended = tokio::time::timeout(Duration::from_secs(15), &mut build).await;
        assert!(ended.is_ok(), "the master hears of the stop");
    });
    assert!(
        exited_within(&mut agent, Duration::from_secs(15)).is_some(),
        "stopped"
    );
    assert!(
        wait_for(Duration::from_secs(20), || processes_with(&marker)
            .is_empty()),
        "the build died with the agent"
    );
}
