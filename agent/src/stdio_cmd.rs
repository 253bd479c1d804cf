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
        let state_dir = args
            .common
            .state_dir
            .clone()
            .or_else(|| {
                args.common
                    .config
                    .as_ref()
                    .and_then(|c| offload_agent::config::File::load(c).ok())
                    .and_then(|f| f.state_dir)
            })
            .unwrap_or_else(offload_agent::config::default_state_dir);
        let socket = options::local_socket(&state_dir);
        if let Ok(stream) = tokio::net::UnixStream::connect(&socket).await {
            tracing::debug!(socket = %socket.display(), "handing the session to the running agent");
            return hand_over(stream).await;
        }
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

/// Copy stdin to the running agent and its answers to stdout.
async fn hand_over(stream: tokio::net::UnixStream) -> anyhow::Result<()> {
    let (mut r, mut w) = stream.into_split();
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let up = async {
        let _ = tokio::io::copy(&mut stdin, &mut w).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
    };
    let down = async {
        let copied = tokio::io::copy(&mut r, &mut stdout).await;
        let _ = tokio::io::AsyncWriteExt::flush(&mut stdout).await;
        copied
    };
    let (_, down) = tokio::join!(up, down);
    down.context("relaying the session")?;
    Ok(())
}
