//! The demo's stand-in for guix-daemon: it spawns `offload-master hook`
//! exactly as the daemon does (argv, environment, its own session, fd 0
//! for requests, fds 1 and 2 one pipe back, fd 4 the build log), asks
//! for one derivation, answers postpones by asking again, and after
//! `# accept` writes the two lines the daemon writes.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::Context;

/// How one derivation went.
#[derive(Clone, Debug, Default)]
pub(super) struct Outcome {
    /// `built`, `failed`, `timed-out`, or `error`.
    pub(super) status: String,
    /// The machine it went to.
    pub(super) machine: String,
    /// Bytes of signed archives sent.
    pub(super) bytes_sent: u64,
    /// Bytes of signed archives received.
    pub(super) bytes_received: u64,
    /// Seconds building.
    pub(super) build_secs: f64,
    /// Seconds moving archives.
    pub(super) transfer_secs: f64,
    /// Seconds from the first request to the hook's exit.
    pub(super) seconds: f64,
    /// The build log (fd 4).
    pub(super) log: Vec<u8>,
    /// What the hook said besides its replies.
    pub(super) chatter: Vec<String>,
}

/// How to start a hook on the daemon host.
pub(super) struct HookCommand {
    /// `ip netns exec NS` and the like, then the program.
    pub(super) prefix: Vec<String>,
    /// The daemon's environment.
    pub(super) env: Vec<(String, String)>,
    /// The system argument.
    pub(super) system: String,
}

impl HookCommand {
    fn spawn(&self) -> anyhow::Result<(Child, Receiver<String>, std::thread::JoinHandle<Vec<u8>>)> {
        // The daemon's layout without unsafe code: a shell moves the log
        // pipe (its stdout) to fd 4 and makes fd 1 a copy of fd 2, then
        // execs the hook, in a session of its own.
        let mut cmd = Command::new("setsid");
        cmd.arg("/bin/sh")
            .arg("-c")
            .arg("exec 4>&1 1>&2; exec \"$@\"")
            .arg("sh")
            .args(&self.prefix)
            .args(["hook", &self.system, "0", "1", "0"])
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("starting offload-master hook")?;
        let out = child.stderr.take().context("hook stderr")?;
        let log = child.stdout.take().context("hook log")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).split(b'\n') {
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
            let _ = BufReader::new(log).read_to_end(&mut all);
            all
        });
        Ok((child, lines, log))
    }
}

/// Kill the hook and its process group. The group is made by `setsid`
/// after the spawn returns, so the process itself is killed directly too
/// (its pid stays the same through the execs).
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Offload `drv` (requiring `features`) through a fresh hook; `lines`
/// computes the two lines after accept. Gives up when `stop` is set or
/// after `patience` of postpones.
pub(super) fn offload(
    hook: &HookCommand,
    drv: &str,
    features: &[String],
    lines: &dyn Fn() -> anyhow::Result<(Vec<String>, Vec<String>)>,
    patience: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let (mut child, replies, log) = hook.spawn()?;
    let mut outcome = Outcome::default();
    let request = format!("1 {} {drv} {}\n", hook.system, features.join(","));
    let mut stdin = child.stdin.take().context("hook stdin")?;
    loop {
        if stop.load(Ordering::Relaxed) {
            kill_group(&mut child);
            anyhow::bail!("interrupted");
        }
        stdin.write_all(request.as_bytes())?;
        stdin.flush()?;
        let reply = loop {
            match replies.recv_timeout(Duration::from_millis(200)) {
                Ok(l) => match l.strip_prefix("# ") {
                    Some(word) => break word.to_owned(),
                    None => outcome.chatter.push(l),
                },
                Err(RecvTimeoutError::Timeout) if !stop.load(Ordering::Relaxed) => {}
                Err(RecvTimeoutError::Timeout) => {
                    kill_group(&mut child);
                    anyhow::bail!("interrupted");
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = child.wait();
                    anyhow::bail!(
                        "the hook ended without a reply: {}",
                        outcome.chatter.join("\n")
                    );
                }
            }
        };
        match reply.as_str() {
            "accept" => break,
            "postpone" if start.elapsed() < patience => {
                std::thread::sleep(Duration::from_millis(200));
            }
            other => {
                kill_group(&mut child);
                anyhow::bail!(
                    "the hook answered {other:?} for {drv}: {}",
                    outcome.chatter.join("\n")
                );
            }
        }
    }
    let (inputs, outputs) = lines()?;
    let line = |paths: &[String]| paths.iter().map(|p| format!("{p} ")).collect::<String>();
    stdin.write_all(format!("{}\n{}\n", line(&inputs), line(&outputs)).as_bytes())?;
    drop(stdin);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if stop.load(Ordering::Relaxed) {
            kill_group(&mut child);
            anyhow::bail!("interrupted");
        }
        while let Ok(l) = replies.try_recv() {
            outcome.chatter.push(l);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    while let Ok(l) = replies.recv_timeout(Duration::from_secs(2)) {
        outcome.chatter.push(l);
    }
    outcome.log = log.join().unwrap_or_default();
    outcome.seconds = start.elapsed().as_secs_f64();
    outcome.status = match status.code() {
        Some(0) => "built",
        Some(100) => "failed",
        Some(101) => "timed-out",
        _ => "error",
    }
    .into();
    for l in std::mem::take(&mut outcome.chatter) {
        if let Some(rest) = l.strip_prefix(&format!("@ build-remote {drv} ")) {
            outcome.machine = rest.to_owned();
        }
        if let Some(stats) = l.strip_prefix(&format!("offloaded '{drv}' to '")) {
            parse_stats(stats, &mut outcome);
        }
        outcome.chatter.push(l);
    }
    Ok(outcome)
}

/// `MACHINE': sent N bytes, received M bytes, build X s, transfer Y s`.
fn parse_stats(text: &str, o: &mut Outcome) {
    let Some((_, rest)) = text.split_once("': ") else {
        return;
    };
    let words: Vec<&str> = rest.split_whitespace().collect();
    for pair in words.windows(2) {
        match pair[0] {
            "sent" => o.bytes_sent = pair[1].parse().unwrap_or(0),
            "received" => o.bytes_received = pair[1].parse().unwrap_or(0),
            "build" => o.build_secs = pair[1].parse().unwrap_or(0.0),
            "transfer" => o.transfer_secs = pair[1].parse().unwrap_or(0.0),
            _ => {}
        }
    }
}

/// The program the hook runs as: this executable.
pub(super) fn this_program() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("finding this program")
}
