//! Building through a daemon: one derivation at a time, each with its own
//! result, the daemon's log lines turned into build events as they arrive.

use std::collections::BTreeMap;

use offload_core::store_path::{StoreDir, StorePath};

use super::{Error, drv_output_paths};
use crate::daemon::{self, BuildMode, Connection, DaemonClient, Dialect, LogEvent, Options};
use crate::embedded::build::{BuildEvent, BuildOptions, BuildResult, BuildStatus, Exit};

/// Build through a daemon, one derivation at a time so that each gets its
/// own result; the daemon's log lines become `Log` events as they arrive.
pub(super) async fn daemon_build(
    client: &mut DaemonClient<Connection>,
    store_dir: &StoreDir,
    drvs: &[StorePath],
    opts: &BuildOptions,
    events: &mut (dyn FnMut(BuildEvent) + Send),
) -> Result<Vec<BuildResult>, Error> {
    let mut overrides = Vec::new();
    if let Some(t) = opts.timeout {
        overrides.push(("build-timeout".to_owned(), t.as_secs().to_string()));
    }
    let options = Options {
        keep_failed: opts.keep_failed,
        max_build_jobs: opts.max_jobs.max(1) as u64,
        max_silent_time: opts.max_silent_time.map_or(0, |t| t.as_secs()),
        build_cores: u64::from(opts.cores),
        overrides,
        ..Options::default()
    };
    client.set_options(&options).await?;
    let dir = std::path::PathBuf::from(store_dir.as_str());
    let mut results = Vec::with_capacity(drvs.len());
    for drv in drvs {
        let outputs = outputs_of(client, &dir, drv).await?;
        let printed: Vec<String> = outputs.values().map(ToString::to_string).collect();
        let wanted: Vec<&str> = printed.iter().map(String::as_str).collect();
        if client.query_valid_paths(&wanted).await?.len() == wanted.len() {
            results.push(BuildResult {
                drv: drv.clone(),
                status: BuildStatus::AlreadyValid,
                outputs,
                message: None,
                kept_build_dir: None,
            });
            continue;
        }
        events(BuildEvent::Started { drv: drv.clone() });
        let printed_drv = drv.to_string();
        let one = [printed_drv.as_str()];
        // Guix sends build logs as plain messages; Nix as build-log results.
        let guix = client.dialect() == Dialect::Guix;
        let with_results = !guix && client.daemon_version() & 0xff >= 34;
        // Log lines reach `events` as the daemon sends them: a slow reader
        // slows the daemon's connection down, nothing piles up here.
        let mut log = |e: LogEvent| forward(drv, e, guix, events);
        let outcome = if with_results {
            client
                .build_paths_with_results_logged(&one, BuildMode::Normal, Some(&mut log))
                .await
                .map(|mut r| r.pop().map(|r| nix_status(r.status, r.error)))
        } else {
            client
                .build_paths_logged(&one, BuildMode::Normal, Some(&mut log))
                .await
                .map(|()| None)
        };
        let (status, message) = match outcome {
            Ok(None) => (BuildStatus::Built, None),
            Ok(Some(result)) => result,
            // Guix's statuses (`Worker::exitStatus`): 100 failed, 101 timed out.
            Err(daemon::Error::Daemon { message, status }) => (
                match status {
                    100 => BuildStatus::Failed(Exit::Unknown),
                    101 => BuildStatus::TimedOut,
                    _ => BuildStatus::MiscFailure,
                },
                Some(message),
            ),
            Err(e) => return Err(e.into()),
        };
        events(match &message {
            None => BuildEvent::Built {
                drv: drv.clone(),
                outputs: outputs.clone(),
            },
            Some(m) => BuildEvent::Failed {
                drv: drv.clone(),
                message: m.clone(),
            },
        });
        results.push(BuildResult {
            drv: drv.clone(),
            status,
            outputs,
            message,
            kept_build_dir: None,
        });
    }
    Ok(results)
}

/// Nix's `BuildResult::Status` as ours, with the message for failures.
fn nix_status(status: u64, error: String) -> (BuildStatus, Option<String>) {
    let status = match status {
        0 | 1 => BuildStatus::Built,
        2 | 13 => BuildStatus::AlreadyValid,
        3 | 7 => BuildStatus::Failed(Exit::Unknown),
        5 => BuildStatus::OutputRejected,
        8 => BuildStatus::TimedOut,
        10 => BuildStatus::DependencyFailed,
        11 => BuildStatus::LogLimitExceeded,
        _ => BuildStatus::MiscFailure,
    };
    let message = (!status.is_success()).then_some(error);
    (status, message)
}

fn forward(
    drv: &StorePath,
    e: LogEvent,
    messages_are_log: bool,
    events: &mut (dyn FnMut(BuildEvent) + Send),
) {
    match e {
        LogEvent::BuildLine(line) => events(BuildEvent::Log {
            drv: drv.clone(),
            line,
        }),
        LogEvent::Message(line) if messages_are_log => events(BuildEvent::Log {
            drv: drv.clone(),
            line,
        }),
        _ => {}
    }
}

/// The outputs of `drv` as the daemon recorded them; from the `.drv` file
/// itself when the daemon has none recorded (items registered by Guix's
/// Scheme code have no `DerivationOutputs` rows).
async fn outputs_of(
    client: &mut DaemonClient<Connection>,
    store_dir: &std::path::Path,
    drv: &StorePath,
) -> Result<BTreeMap<String, StorePath>, Error> {
    let recorded = client.query_derivation_outputs(&drv.to_string()).await?;
    if recorded.is_empty() {
        return drv_output_paths(&store_dir.join(drv.base()), drv);
    }
    recorded
        .into_iter()
        .map(|(name, path)| {
            let path = path.ok_or_else(|| {
                Error::Other(format!(
                    "{drv}: the path of output {name} is not known (content-addressed outputs are not supported)"
                ))
            })?;
            StorePath::parse(&path)
                .map(|p| (name, p))
                .map_err(|e| Error::Other(format!("{drv}: output {path}: {e}")))
        })
        .collect()
}
