//! Bytes from a store daemon (a Guix or Nix daemon, later over SSH): the
//! worker-protocol client's handshake, stderr loop and replies never panic
//! or hang, whatever the daemon sends; they end in a result or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use offload_core::store_path::StorePath;
use offload_store::daemon::{BuildMode, DaemonClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (client_end, mut peer) = tokio::io::duplex(1 << 20);
        let reply = data.to_vec();
        let daemon = tokio::spawn(async move {
            let _ = peer.write_all(&reply).await;
            // Then the daemon hangs up: the client sees the end of input.
            let _ = peer.shutdown().await;
            // Drain what the client sends until it gives up.
            let mut sink = Vec::new();
            let _ = peer.read_to_end(&mut sink).await;
        });
        if let Ok(mut c) = DaemonClient::handshake(client_end, None).await {
            let path = StorePath::parse("/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-x")
                .expect("path");
            let _ = c.query_path_info(&path).await;
            let _ = c.query_valid_paths(&["/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-x"]).await;
            let _ = c.build_paths(&["/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-x.drv"], BuildMode::Normal).await;
            let _ = c.build_paths_with_results(&["/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-x.drv"], BuildMode::Normal).await;
            let _ = c.query_derivation_outputs("/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-x.drv").await;
            let mut out = Vec::new();
            let _ = c.export_path("/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-x", false, &mut out).await;
            let mut source: &[u8] = b"stream";
            let _ = c.import_paths(&mut source).await;
        }
        daemon.abort();
    });
});
