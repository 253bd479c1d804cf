//! `offload-master hook SYSTEM MAX_SILENT PRINT_BUILD_TRACE BUILD_TIMEOUT`:
//! the build hook `guix-daemon` spawns as `$GUIX offload …` (spec §1–§2).
//!
//! The daemon writes one request line at a time on stdin; the hook answers
//! `# accept`, `# decline` or `# postpone` on stdout (stdout and stderr are
//! one pipe to the daemon, which forwards every other line to its client,
//! so no other line ever starts with `# `). After `# accept` the daemon
//! writes two lines (the inputs, the missing outputs) and closes stdin;
//! the hook builds remotely, copies the build log raw to fd 4, registers
//! the outputs directly in the daemon's store and database (the daemon
//! holds their locks, so its own import would deadlock) and exits 0, 100
//! (the build failed), 101 (it timed out) or 1 (anything else).
//!
//! Decisions come from `offload-master serve` over its socket when it runs
//! (no mDNS wait here); otherwise from machines.scm, a short mDNS browse
//! and one link to each agent. A machine is used only once this process
//! holds one of its Guile-compatible slot locks *and* a lease from its
//! agent. A machine lost before the outputs are home is reported to
//! `serve` (which avoids it for a while) and the build goes to the next.
//!
//! Killed at any point (the daemon kills the process group), the kernel
//! drops the slot lock, the agent drops the lease with the connection, and
//! the store holds no partial item.

mod engine;
mod locality;
pub mod nix;
pub mod plan;
pub mod request;
mod setup;
pub mod slots;
mod voice;

use std::io::{BufRead, Read};

use engine::{Claim, Hook};
use locality::Probed;
use plan::Plan;
use request::BuildRequest;
pub use setup::{Args, Setup};
pub use voice::Voice;
pub(crate) use voice::{note, reply};

/// Exit status: the build failed (the daemon's permanent failure).
pub const EXIT_BUILD_FAILED: u8 = 100;
/// Exit status: the build timed out.
pub const EXIT_TIMED_OUT: u8 = 101;
/// Exit status: anything else.
pub const EXIT_HOOK_FAILED: u8 = 1;
/// Machines tried for one accepted build before giving up.
pub const MAX_ATTEMPTS: usize = 3;
/// How long a machine that lost a build is avoided.
pub const LOST_BACKOFF_MS: u64 = 60_000;

/// Read one line of at most `max` bytes (without its `\n`); `None` at EOF.
fn read_line(r: &mut impl BufRead, max: u64, what: &str) -> anyhow::Result<Option<String>> {
    let mut buf = Vec::new();
    r.take(max + 1).read_until(b'\n', &mut buf)?;
    if buf.is_empty() {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() as u64 > max {
        anyhow::bail!("{what} longer than {max} bytes");
    }
    Ok(Some(
        String::from_utf8(buf).map_err(|_| anyhow::anyhow!("{what} is not UTF-8"))?,
    ))
}

/// Run the hook on this process's stdin/stdout/stderr and fd 4; the exit
/// status.
pub fn run(args: Args, setup: Setup) -> u8 {
    match Hook::new(args, setup, Voice::Guix).and_then(|mut h| h.serve_requests()) {
        Ok(code) => code,
        Err(e) => {
            note(&format!(
                "offload-master hook: error: {}",
                offload_core::report::error_chain(e.as_ref())
            ));
            EXIT_HOOK_FAILED
        }
    }
}

impl Hook {
    fn serve_requests(&mut self) -> anyhow::Result<u8> {
        let mut stdin = std::io::stdin().lock();
        loop {
            let Some(line) = read_line(&mut stdin, request::MAX_REQUEST_LINE, "request line")?
            else {
                return Ok(0);
            };
            let req = request::parse_request(&line, &self.setup.store_dir)?;
            match self.plan(&req)? {
                Plan::Decline(why) => {
                    tracing::info!(drv = %req.drv, "decline: {why}");
                    note(&format!("not offloading '{}': {why}", req.drv));
                    reply("decline")?;
                }
                Plan::Postpone(why) => {
                    tracing::info!(drv = %req.drv, "postpone: {why}");
                    reply("postpone")?;
                }
                Plan::Accept(choices) => {
                    let mut candidates = self.by_locality(&req, choices);
                    match self.claim(&mut candidates, &[]) {
                        None => reply("postpone")?,
                        Some(claim) => {
                            reply("accept")?;
                            return self.accepted(&req, &mut stdin, claim, candidates);
                        }
                    }
                }
            }
        }
    }

    fn accepted(
        &mut self,
        req: &BuildRequest,
        stdin: &mut impl BufRead,
        first: Claim,
        candidates: Vec<Probed>,
    ) -> anyhow::Result<u8> {
        let dir = self.setup.store_dir.clone();
        let inputs = read_line(stdin, request::MAX_PATHS_LINE, "inputs line")?
            .ok_or_else(|| anyhow::anyhow!("the daemon closed stdin before the inputs line"))?;
        let outputs = read_line(stdin, request::MAX_PATHS_LINE, "outputs line")?
            .ok_or_else(|| anyhow::anyhow!("the daemon closed stdin before the outputs line"))?;
        let inputs = request::parse_paths(&inputs, &dir)?;
        let outputs = request::parse_paths(&outputs, &dir)?;
        self.build(req, &inputs, &outputs, first, candidates)
    }
}
