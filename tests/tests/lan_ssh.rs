//! `offload-agent stdio` through a real OpenSSH server on a namespace LAN
//! host: the master runs `ssh root@HOST offload-agent stdio` with the host
//! key pinned and proves its own key inside the session (SSH's login is
//! not taken as proof); a wrong host key stops ssh before the agent runs.

use std::process::Stdio;
use std::sync::Arc;

use offload_core::proto::{BuildRequest, BuildStatus};
use offload_master::agent_link::{AgentLink, Expect, LinkError};
use offload_tests::agents::{Drvs, runtime};
use offload_tests::lan::Lan;
use offload_tests::sshd::Sshd;
use offload_tests::{bin, key_and_acl};

fn load_key(path: &std::path::Path) -> Arc<offload_core::keys::SecretKey> {
    Arc::new(offload_files::key_file::load_secret(path).expect("key"))
}

#[test]
fn stdio_through_a_real_sshd_with_the_host_key_pinned() {
    let lan = Lan::new(2);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    key_and_acl(&dir.join("master"), &dir.join("agent-acl"));
    key_and_acl(&dir.join("agent"), &dir.join("master-acl"));
    key_and_acl(&dir.join("stranger"), &dir.join("stranger-acl"));
    let sshd = Sshd::start(&lan, 1, &dir.join("sshd"));
    let agent_bin = bin("offload-agent");
    let store = format!("embedded:{}", dir.join("store").display());
    let remote = |acl: &str| -> Vec<String> {
        vec![
            agent_bin.display().to_string(),
            "stdio".into(),
            "--key".into(),
            dir.join("agent/signing-key.sec").display().to_string(),
            "--acl".into(),
            dir.join(acl).display().to_string(),
            "--store".into(),
            store.clone(),
            "--state-dir".into(),
            dir.join("state").display().to_string(),
            "--systems".into(),
            offload_tests::current_system(),
        ]
    };
    let expect = Expect {
        acl: Arc::new(offload_files::acl_file::load(&dir.join("master-acl")).unwrap()),
        fingerprint: None,
    };
    let drvs = Drvs::new();
    let drv = drvs.sh("over-ssh", "echo built over ssh; echo ok > $out");
    let rt = runtime();
    let open = |known_hosts: &std::path::Path, acl: &str, key: &str| {
        let remote = remote(acl);
        let args: Vec<&str> = remote.iter().map(String::as_str).collect();
        let mut cmd = sshd.command(&lan, 0, known_hosts, &args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join(format!("ssh-{key}.log"))).unwrap());
        let mut child = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .spawn()
            .expect("ssh");
        let (r, w) = (child.stdout.take().unwrap(), child.stdin.take().unwrap());
        let key = load_key(&dir.join(format!("{key}/signing-key.sec")));
        let expect = expect.clone();
        async move { (AgentLink::connect_stream(r, w, &key, &expect).await, child) }
    };

    rt.block_on(async {
        let (link, mut child) = open(&sshd.known_hosts, "agent-acl", "master").await;
        let link = link.expect("a session over ssh");
        let master = load_key(&dir.join("master/signing-key.sec"));
        let closure = drvs.closure(&[&drv]);
        let missing = link.query_missing(&closure).await.expect("query");
        let stream = drvs.signed_export(&missing, &master).await;
        link.import(&mut &stream[..]).await.expect("import");
        let lease = link.lease().await.expect("lease");
        let mut log = Vec::new();
        let req = BuildRequest {
            lease: lease.id,
            drv: drv.clone(),
            max_silent_secs: 0,
            timeout_secs: 0,
        };
        let outcome = link
            .build(req, &mut |c| log.extend_from_slice(c))
            .await
            .expect("build");
        assert_eq!(outcome.status, BuildStatus::Built, "{outcome:?}");
        assert!(String::from_utf8_lossy(&log).contains("built over ssh"));
        let mut out = Vec::new();
        link.export(&[outcome.outputs[0].1.clone()], &mut out)
            .await
            .expect("export");
        assert!(!out.is_empty());
        link.close().await;
        let status = child.wait().await.unwrap();
        assert!(status.success(), "ssh: {status}");

        // A master whose key the agent does not hold is refused, whatever
        // SSH let in.
        let (link, _child) = open(&sshd.known_hosts, "agent-acl", "stranger").await;
        let err = link.err().expect("refused");
        assert!(matches!(err, LinkError::Refused(_)), "{err}");
    });

    // A known-hosts file with another key for this host: ssh refuses
    // before anything runs there.
    let wrong = dir.join("wrong_known_hosts");
    let other = dir.join("other_host_key");
    offload_tests::run_ok(
        std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&other),
        b"",
    );
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    std::fs::write(
        &wrong,
        format!(
            "[{}]:{} {}",
            sshd.addr,
            offload_tests::sshd::PORT,
            other_pub
        ),
    )
    .unwrap();
    rt.block_on(async {
        let (link, mut child) = open(&wrong, "agent-acl", "master").await;
        assert!(link.is_err());
        let status = child.wait().await.unwrap();
        assert_eq!(status.code(), Some(255));
    });
    let said = std::fs::read_to_string(dir.join("ssh-master.log")).unwrap();
    assert!(said.contains("Host key verification failed"), "{said}");
}
