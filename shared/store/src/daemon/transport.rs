//! Byte streams to a daemon: its Unix socket, or a child process speaking
//! the protocol on stdin/stdout.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// A connection to a daemon.
pub enum Connection {
    /// The daemon's socket.
    Socket(UnixStream),
    /// A child process (`nix-daemon --stdio`, `ssh HOST …`).
    Process(Box<ChildIo>),
}

/// A child process and its pipes.
pub struct ChildIo {
    /// The process; killed when the connection is dropped.
    pub child: Child,
    stdout: ChildStdout,
    stdin: ChildStdin,
}

/// Connect to the daemon socket at `path`.
pub async fn connect_unix(path: &Path) -> io::Result<Connection> {
    UnixStream::connect(path)
        .await
        .map(Connection::Socket)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Start `program args…` and speak to it on its stdin/stdout; its stderr is
/// inherited.
pub fn spawn_stdio<I, A>(program: &Path, args: I, env: &[(&str, &OsStr)]) -> io::Result<Connection>
where
    I: IntoIterator<Item = A>,
    A: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("starting {}: {e}", program.display())))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(io::Error::other("child without piped stdin/stdout"));
    };
    Ok(Connection::Process(Box::new(ChildIo {
        child,
        stdout,
        stdin,
    })))
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Socket(s) => Pin::new(s).poll_read(cx, buf),
            Self::Process(p) => Pin::new(&mut p.stdout).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Socket(s) => Pin::new(s).poll_write(cx, buf),
            Self::Process(p) => Pin::new(&mut p.stdin).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Socket(s) => Pin::new(s).poll_flush(cx),
            Self::Process(p) => Pin::new(&mut p.stdin).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Socket(s) => Pin::new(s).poll_shutdown(cx),
            Self::Process(p) => Pin::new(&mut p.stdin).poll_shutdown(cx),
        }
    }
}
