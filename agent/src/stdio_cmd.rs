//! `offload-agent stdio`: one master on stdin and stdout.

use std::sync::Arc;

use anyhow::Context;
use offload_agent::service;

use crate::options::{self, Common};

/// Arguments of `offload-agent stdio`.
#[derive(Debug, clap::Args)]
pub(crate) struct StdioArgs {
    #[command(flatten)]
    common: Common,
}

pub(crate) fn run(args: StdioArgs) -> anyhow::Result<()> {
    options::prepare_process();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // A running agent takes the session: one lease table, one store.
        let state_dir = args.common.state_dir()?;
        let socket = options::local_socket(&state_dir);
        if let Ok(stream) = tokio::net::UnixStream::connect(&socket).await {
            tracing::debug!(socket = %socket.display(), "handing the session to the running agent");
            let relayed = hand_over(stream).await;
            // The agent's side is over: so is the session (stdin may still
            // be open, and a read of it cannot be cancelled).
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
            std::process::exit(match relayed {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!("{e:#}");
                    2
                }
            });
        }
        // No running agent: this session has the slots to itself, and no
        // other may run beside it (each would count its own).
        let _lock = options::lock_state_dir(&state_dir)?;
        let opened = args.common.open(false).await?;
        let timer = tokio::spawn(Arc::clone(&opened.service).run_lease_timer());
        let result = service::stdio::serve(
            Arc::clone(&opened.service),
            tokio::io::stdin(),
            tokio::io::stdout(),
        )
        .await;
        timer.abort();
        result.context("stdio session")
    })
}

/// Copy stdin to the running agent and its answers to stdout, until the
/// agent's side ends.
async fn hand_over(stream: tokio::net::UnixStream) -> anyhow::Result<()> {
    let (mut r, mut w) = stream.into_split();
    let up = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let _ = tokio::io::copy(&mut stdin, &mut w).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
    });
    let mut stdout = tokio::io::stdout();
    let copied = tokio::io::copy(&mut r, &mut stdout).await;
    let _ = tokio::io::AsyncWriteExt::flush(&mut stdout).await;
    up.abort();
    copied.context("relaying the session")?;
    Ok(())
}
