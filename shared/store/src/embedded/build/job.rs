//! One build task: running the builder, checking its outputs, and saying
//! how it ended as Nix does.
//!
//! Nothing the builder could reach is touched before its processes are
//! gone (in a sandbox: its whole PID namespace, module `runner`). If they
//! do not end in time, its build and scratch directories are left for the
//! next `open` of the store to sweep. Otherwise the outputs are checked
//! and canonicalised in the scratch directory and only then moved into
//! the store; the directories are removed without following symlinks.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use offload_files::atomic;
use tokio::sync::mpsc;

use super::{BuildStatus, Exit};
use crate::embedded::claims::Claim;
use crate::embedded::outputs;
use crate::embedded::runner::{self, Ended};
use crate::embedded::sandbox::{Isolation, NAMESPACE_EXIT_LIMIT, Scratch, Spec};
use crate::info::PathInfo;

/// What a finished build task reports.
pub(super) struct Finished {
    pub(super) status: BuildStatus,
    pub(super) message: Option<String>,
    pub(super) infos: Vec<PathInfo>,
    pub(super) kept_build_dir: Option<PathBuf>,
    /// The claim on the outputs, held until they are registered.
    pub(super) claim: Option<Claim>,
}

/// A log line of a running build.
pub(super) type Line = (usize, Vec<u8>);

/// One build, ready to run on its own.
pub(super) struct Job {
    pub(super) goal: String,
    pub(super) spec: Spec,
    pub(super) limits: runner::Limits,
    pub(super) log: fs::File,
    pub(super) check: outputs::Check,
    pub(super) keep_failed: bool,
}

impl Job {
    pub(super) async fn run(self, index: usize, lines: mpsc::Sender<Line>) -> Finished {
        let Self {
            goal,
            spec,
            limits,
            log,
            check,
            keep_failed,
        } = self;
        let ended = runner::run(&spec, limits, log, &lines, index).await;
        // The builder and its namespace are gone: what it left may be read.
        let Spec {
            build_dir,
            isolation,
            claim,
            ..
        } = spec;
        let (scratch, build_user) = match isolation {
            Isolation::Sandbox(sb) => {
                let sb = *sb;
                (Some(sb.scratch), sb.build_user)
            }
            Isolation::Direct => (None, None),
        };
        let drv = check.drv.clone();
        let seconds = |d: Option<Duration>| d.map_or(0, |d| d.as_secs());
        let Ok(ended) = ended else {
            if let Some(scratch) = scratch {
                scratch.leave();
            }
            // (Its build user is retired when dropped: the scratch
            // directory was left, which marks it.)
            drop(build_user);
            tracing::warn!("leaving {} in place", build_dir.display());
            return Finished {
                status: BuildStatus::MiscFailure,
                message: Some(format!(
                    "the processes of {goal} were still running {} seconds after being killed; its directories are left in place",
                    NAMESPACE_EXIT_LIMIT.as_secs()
                )),
                infos: Vec::new(),
                kept_build_dir: None,
                claim,
            };
        };
        // The build's processes are gone: its user may serve another.
        drop(build_user);
        // The claim goes with the work on the outputs (a blocking task runs
        // to its end even if this build is cancelled) and comes back for
        // the registration.
        let (status, message, infos, claim) = match ended {
            Ended::Exited(status) if status.success() => {
                let checked = tokio::task::spawn_blocking(move || {
                    let result = finish(scratch.as_ref(), &check);
                    drop(scratch);
                    if result.is_err() {
                        remove_real_outputs(&check);
                    }
                    (result, claim)
                })
                .await;
                match checked {
                    Ok((Ok(infos), claim)) => (BuildStatus::Built, None, infos, claim),
                    Ok((Err(why), claim)) => {
                        (BuildStatus::OutputRejected, Some(why), Vec::new(), claim)
                    }
                    Err(e) => (
                        BuildStatus::MiscFailure,
                        Some(format!("checking the outputs of '{drv}': {e}")),
                        Vec::new(),
                        None,
                    ),
                }
            }
            ended => {
                let (status, message) = match ended {
                    Ended::Exited(status) => {
                        let (exit, text) = describe_exit(status);
                        (
                            BuildStatus::Failed(exit),
                            format!("builder for '{drv}' {text}"),
                        )
                    }
                    Ended::Silent => (
                        BuildStatus::TimedOut,
                        format!(
                            "{goal} timed out after {} seconds of silence",
                            seconds(limits.max_silent_time)
                        ),
                    ),
                    Ended::TooLong => (
                        BuildStatus::TimedOut,
                        format!("{goal} timed out after {} seconds", seconds(limits.timeout)),
                    ),
                    Ended::LogTooLong => (
                        BuildStatus::LogLimitExceeded,
                        format!(
                            "{goal} killed after writing more than {} bytes of log output",
                            limits.max_log_size.unwrap_or(0)
                        ),
                    ),
                    Ended::NotStarted(why) => (BuildStatus::MiscFailure, why),
                };
                let claim = tokio::task::spawn_blocking(move || {
                    drop(scratch);
                    remove_real_outputs(&check);
                    claim
                })
                .await
                .ok()
                .flatten();
                (status, Some(message), Vec::new(), claim)
            }
        };
        let kept_build_dir = if status != BuildStatus::Built && keep_failed {
            // Ours and 0755 marks a kept directory for the sweep on open:
            // the build user can set the mode, not the owner.
            let _ = rustix::fs::chown(
                &build_dir,
                Some(rustix::process::geteuid()),
                Some(rustix::process::getegid()),
            );
            let _ = fs::set_permissions(&build_dir, fs::Permissions::from_mode(0o755));
            Some(build_dir)
        } else {
            let _ = tokio::task::spawn_blocking(move || atomic::remove_tree(&build_dir)).await;
            None
        };
        Finished {
            status,
            message,
            infos,
            kept_build_dir,
            claim,
        }
    }
}

/// Nix's `statusToString`; the exit as an [`Exit`].
fn describe_exit(status: std::process::ExitStatus) -> (Exit, String) {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return (Exit::Code(code), format!("failed with exit code {code}"));
    }
    match status.signal() {
        Some(sig) => (
            Exit::Signal(sig),
            format!("failed due to signal {sig} ({})", signal_name(sig)),
        ),
        None => (Exit::Code(-1), "died abnormally".to_owned()),
    }
}

/// `strsignal` for the usual signals.
fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "Hangup",
        2 => "Interrupt",
        3 => "Quit",
        4 => "Illegal instruction",
        5 => "Trace/breakpoint trap",
        6 => "Aborted",
        7 => "Bus error",
        8 => "Floating point exception",
        9 => "Killed",
        10 => "User defined signal 1",
        11 => "Segmentation fault",
        12 => "User defined signal 2",
        13 => "Broken pipe",
        14 => "Alarm clock",
        15 => "Terminated",
        _ => "Unknown signal",
    }
}

/// Check the outputs where the builder made them — in a sandbox, its
/// scratch store — and move them, checked and canonical, into the real
/// store (nothing else of the scratch store); their registrations.
fn finish(scratch: Option<&Scratch>, check: &outputs::Check) -> Result<Vec<PathInfo>, String> {
    let Some(scratch) = scratch else {
        let at: Vec<PathBuf> = check.outputs.iter().map(|o| o.real.clone()).collect();
        return outputs::check(check, &at, None).map(|c| c.infos);
    };
    let store = scratch.store();
    let at: Vec<PathBuf> = check
        .outputs
        .iter()
        .map(|o| store.join(o.path.base()))
        .collect();
    let checked = outputs::check(check, &at, Some(&scratch.fresh()))?;
    for o in &check.outputs {
        let from: &Path = checked.files.get(&o.name).map_or(Path::new(""), |p| p);
        scratch
            .take_output(from, &o.real)
            .map_err(|e| format!("moving output '{}' into the store: {e}", o.path))?;
    }
    Ok(checked.infos)
}

/// Delete the outputs a failed build left (none of them is valid: the
/// planner refuses partly valid derivations).
fn remove_real_outputs(check: &outputs::Check) {
    for o in &check.outputs {
        if let Err(e) = atomic::remove_tree(&o.real) {
            tracing::warn!("cannot remove {}: {e}", o.real.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_descriptions() {
        use std::os::unix::process::ExitStatusExt;
        let (exit, text) = describe_exit(std::process::ExitStatus::from_raw(3 << 8));
        assert_eq!(
            (exit, text.as_str()),
            (Exit::Code(3), "failed with exit code 3")
        );
        let (exit, text) = describe_exit(std::process::ExitStatus::from_raw(9));
        assert_eq!(
            (exit, text.as_str()),
            (Exit::Signal(9), "failed due to signal 9 (Killed)")
        );
    }
}
