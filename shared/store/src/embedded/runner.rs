//! A builder's life: start it, stream its output into the log file and
//! into log lines, enforce the time and log limits, and collect its end.
//!
//! As Nix 2.8's worker (`builder.md` §2): the silence timer restarts on
//! every byte read; the silence limit is checked before the total one; on
//! a limit, or at the end of the output (EOF on the pipe), the builder's
//! process group is killed with SIGKILL before its leader is reaped, so
//! nothing it started survives it (in a sandbox, its whole PID namespace
//! is killed, and waited for: [`Lingering`] if it does not end in time,
//! and then nothing the build used may be touched). Lines are cut at
//! `\n`; `\r` returns to the start of the current line, which later bytes
//! overwrite (as Nix shows it); a line longer than [`MAX_LINE`] is cut
//! there.

use std::io::{self, BufWriter, Write};
use std::process::ExitStatus;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::sandbox::{self, BuildGuard, BuildProcesses, Isolation, SETUP_DONE, Spec};

/// Longest log line handed on; longer ones are cut into pieces.
pub(crate) const MAX_LINE: usize = 64 << 10;
/// Most set-up output kept for an error message.
const MAX_SETUP_OUTPUT: usize = 16 << 10;

/// The limits of one build.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Limits {
    /// Longest time without output.
    pub(crate) max_silent_time: Option<Duration>,
    /// Longest run.
    pub(crate) timeout: Option<Duration>,
    /// Most bytes of output.
    pub(crate) max_log_size: Option<u64>,
}

/// How a builder ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// It exited (or died of a signal) on its own.
    Exited(ExitStatus),
    /// Killed after `max_silent_time` without output.
    Silent,
    /// Killed after `timeout`.
    TooLong,
    /// Killed after writing more than `max_log_size` bytes.
    LogTooLong,
    /// It could not be started (the reason).
    NotStarted(String),
}

/// A build's PID namespace was still not gone
/// [`sandbox::NAMESPACE_EXIT_LIMIT`] after it was killed: its directories
/// may still be in use.
#[derive(Debug)]
pub(crate) struct Lingering;

/// Run the builder of `spec`; each complete log line goes to `lines`
/// tagged with `index`, and all its output to `log`. The channel is
/// bounded: a slow reader of the log slows the builder down (its pipe
/// fills) instead of filling memory. How it ended, once everything it
/// started is gone.
pub(crate) async fn run(
    spec: &Spec,
    limits: Limits,
    log: std::fs::File,
    lines: &mpsc::Sender<(usize, Vec<u8>)>,
    index: usize,
) -> Result<Ended, Lingering> {
    let namespaced = matches!(spec.isolation, Isolation::Sandbox(_));
    let (mut child, mut output) = match sandbox::spawn(spec) {
        Ok(started) => started,
        Err(e) if namespaced => {
            return Ok(Ended::NotStarted(format!(
                "while setting up the build environment: {e}"
            )));
        }
        Err(e) => {
            return Ok(Ended::NotStarted(format!(
                "executing '{}': {e}",
                spec.builder
            )));
        }
    };
    let lingering = match &spec.isolation {
        Isolation::Sandbox(sb) => Some(sb.scratch.leave_flag()),
        Isolation::Direct => None,
    };
    let mut guard = BuildGuard::new(child.id().map(|l| {
        let procs = BuildProcesses::new(l, namespaced);
        match lingering {
            Some(flag) => procs.on_lingering(flag),
            None => procs,
        }
    }));
    let mut log = LogFile::new(log);
    let mut splitter = LineSplitter::default();
    let mut setup = namespaced.then(Vec::new);
    let started = Instant::now();
    let mut last_output = started;
    let mut total: u64 = 0;
    let mut buf = vec![0u8; 64 << 10];
    let ended = loop {
        let silence = limits
            .max_silent_time
            .map(|t| (last_output + t, Ended::Silent));
        let run_out = limits.timeout.map(|t| (started + t, Ended::TooLong));
        let next = match (silence, run_out) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        };
        let deadline = next.as_ref().map(|(at, _)| *at);
        let read = tokio::select! {
            read = output.read(&mut buf) => read,
            () = sleep_until(deadline) => {
                break next.map_or(Ended::TooLong, |(_, why)| why);
            }
        };
        let n = match read {
            Ok(0) => break Ended::Exited(ExitStatus::default()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!("reading the builder's output: {e}");
                break Ended::Exited(ExitStatus::default());
            }
        };
        last_output = Instant::now();
        let mut data = &buf[..n];
        if let Some(text) = &mut setup {
            let (done, rest) = setup_output(text, data);
            if !done {
                continue;
            }
            if !text.is_empty() {
                tracing::debug!("sandbox set-up: {}", String::from_utf8_lossy(text));
            }
            setup = None;
            data = rest;
            if let Some(procs) = guard.processes() {
                procs.find_init();
            }
        }
        total += data.len() as u64;
        log.write(data);
        let mut complete = Vec::new();
        splitter.push(data, &mut |l| complete.push(l));
        for l in complete {
            // A closed channel means nobody listens any more: keep building.
            let _ = lines.send((index, l)).await;
        }
        if limits.max_log_size.is_some_and(|max| total > max) {
            break Ended::LogTooLong;
        }
    };
    let mut last = Vec::new();
    splitter.finish(&mut |l| last.push(l));
    for l in last {
        let _ = lines.send((index, l)).await;
    }
    log.finish();
    let gone = match guard.take() {
        Some(procs) => sandbox::kill_build(procs).await,
        None => true,
    };
    let status = child.wait().await;
    if !gone {
        return Err(Lingering);
    }
    if let Some(text) = setup {
        let text = String::from_utf8_lossy(&text);
        return Ok(Ended::NotStarted(format!(
            "while setting up the build environment: {}",
            text.trim_end()
        )));
    }
    Ok(match (ended, status) {
        (Ended::Exited(_), Ok(status)) => Ended::Exited(status),
        (Ended::Exited(_), Err(e)) => Ended::NotStarted(format!("waiting for the builder: {e}")),
        (other, _) => other,
    })
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Collect set-up output until the marker line; whether it was seen, and
/// the builder's bytes after it.
fn setup_output<'a>(text: &mut Vec<u8>, data: &'a [u8]) -> (bool, &'a [u8]) {
    let start = text.len().saturating_sub(1);
    let old = text.len();
    text.extend_from_slice(data);
    // The marker is `\2\n` at the start of a line.
    let found = (start..text.len().saturating_sub(1)).find(|&i| {
        text[i] == SETUP_DONE && text[i + 1] == b'\n' && (i == 0 || text[i - 1] == b'\n')
    });
    match found {
        Some(i) => {
            let after = i + 2 - old.min(i + 2);
            let rest = data.get(after..).unwrap_or_default();
            text.truncate(i);
            (true, rest)
        }
        None => {
            if text.len() > MAX_SETUP_OUTPUT {
                let cut = text.len() - MAX_SETUP_OUTPUT;
                text.drain(..cut);
            }
            (false, &[])
        }
    }
}

/// The build log file; a write error is reported once and the log
/// abandoned, the build goes on. Writes are buffered and go to the page
/// cache, so they are done in place rather than on a blocking thread.
struct LogFile {
    file: Option<BufWriter<std::fs::File>>,
}

impl LogFile {
    fn new(file: std::fs::File) -> Self {
        Self {
            file: Some(BufWriter::with_capacity(64 << 10, file)),
        }
    }

    fn write(&mut self, data: &[u8]) {
        if let Some(f) = &mut self.file
            && let Err(e) = f.write_all(data)
        {
            tracing::warn!("writing the build log: {e}");
            self.file = None;
        }
    }

    fn finish(&mut self) {
        if let Some(f) = &mut self.file
            && let Err(e) = f.flush()
        {
            tracing::warn!("writing the build log: {e}");
        }
    }
}

/// Nix's `handleChildOutput` line assembly.
#[derive(Default)]
struct LineSplitter {
    current: Vec<u8>,
    pos: usize,
}

impl LineSplitter {
    fn push(&mut self, data: &[u8], emit: &mut (dyn FnMut(Vec<u8>) + Send)) {
        for &c in data {
            match c {
                b'\r' => self.pos = 0,
                b'\n' => self.flush(emit),
                _ => {
                    if self.pos < self.current.len() {
                        self.current[self.pos] = c;
                    } else {
                        self.current.push(c);
                    }
                    self.pos += 1;
                    if self.current.len() >= MAX_LINE {
                        self.flush(emit);
                    }
                }
            }
        }
    }

    fn flush(&mut self, emit: &mut (dyn FnMut(Vec<u8>) + Send)) {
        emit(std::mem::take(&mut self.current));
        self.pos = 0;
    }

    fn finish(&mut self, emit: &mut (dyn FnMut(Vec<u8>) + Send)) {
        if !self.current.is_empty() {
            self.flush(emit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        let mut s = LineSplitter::default();
        let mut emit = |l: Vec<u8>| out.push(String::from_utf8(l).unwrap());
        for c in chunks {
            s.push(c, &mut emit);
        }
        s.finish(&mut emit);
        out
    }

    #[test]
    fn lines_like_nix() {
        assert_eq!(split(&[b"a\nb", b"c\n\nd"]), ["a", "bc", "", "d"]);
        assert_eq!(split(&[b"abc\rX\n"]), ["Xbc"]);
        assert_eq!(
            split(&[b"progress 1\r", b"progress 22\rdone\n"]),
            ["doneress 22"]
        );
    }

    #[test]
    fn setup_marker_across_chunks() {
        let mut text = Vec::new();
        assert_eq!(
            setup_output(&mut text, b"mount: oops\n\x02"),
            (false, &b""[..])
        );
        let (done, rest) = setup_output(&mut text, b"\nbuilder says hi\n");
        assert!(done);
        assert_eq!(rest, b"builder says hi\n");
        assert_eq!(text, b"mount: oops\n");

        let mut text = Vec::new();
        assert_eq!(setup_output(&mut text, b"\x02\nout"), (true, &b"out"[..]));
        assert!(text.is_empty());
    }
}
