//! The daemon's stderr messages after a request.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::proto::{self, stderr};
use super::wire::{self, MAX_MESSAGE, Request};
use super::{Dialect, Error};

/// The largest chunk of data the daemon may send in one WRITE message.
const MAX_WRITE: usize = 16 << 20;
/// The largest chunk the daemon may ask for in one READ message.
const MAX_READ: u64 = 16 << 20;
/// The most fields in one activity or result.
const MAX_FIELDS: u64 = 64;
/// The most trace entries in one Nix error.
const MAX_TRACES: u64 = 1024;

/// Something the daemon reported while working on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    /// A message for the user (`STDERR_NEXT`): raw bytes.
    Message(Vec<u8>),
    /// One line of a build's log: raw bytes, without the newline.
    BuildLine(Vec<u8>),
    /// An activity started (Nix).
    StartActivity {
        /// Its id.
        id: u64,
        /// Its type number.
        kind: u64,
        /// Its description.
        text: String,
    },
    /// An activity ended (Nix).
    StopActivity {
        /// Its id.
        id: u64,
    },
}

/// One field of a Nix activity or result.
enum Field {
    Int,
    Str(Vec<u8>),
}

/// Where the data of a request comes from and goes to.
pub(crate) struct Io<'a> {
    pub(crate) source: Option<&'a mut (dyn AsyncRead + Unpin + Send)>,
    pub(crate) sink: Option<&'a mut (dyn AsyncWrite + Unpin + Send)>,
}

impl Io<'_> {
    pub(crate) fn none() -> Self {
        Self {
            source: None,
            sink: None,
        }
    }
}

/// Read stderr messages until `LAST` (`Ok`) or `ERROR` (`Err(Daemon)`).
pub(crate) async fn process<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    dialect: Dialect,
    minor: u32,
    log: &mut (dyn FnMut(LogEvent) + Send),
    mut io: Io<'_>,
) -> Result<(), Error> {
    loop {
        let code = wire::read_u64(s).await?;
        match code {
            stderr::LAST => return Ok(()),
            stderr::NEXT => {
                let mut msg = wire::read_bytes(s, MAX_MESSAGE, "log message").await?;
                if msg.last() == Some(&b'\n') {
                    msg.pop();
                }
                log(LogEvent::Message(msg));
            }
            stderr::WRITE => {
                let data = wire::read_bytes(s, MAX_WRITE, "data from the daemon").await?;
                let Some(sink) = io.sink.as_mut() else {
                    return Err(Error::Protocol(
                        "the daemon sent data for a request that takes none".into(),
                    ));
                };
                sink.write_all(&data).await.map_err(|source| Error::Local {
                    what: "writing what the daemon sent",
                    source,
                })?;
            }
            stderr::READ => {
                let max = wire::read_u64(s).await?;
                if max > MAX_READ {
                    return Err(Error::Protocol(format!(
                        "the daemon asked for {max} bytes at once, more than {MAX_READ}"
                    )));
                }
                let Some(source) = io.source.as_mut() else {
                    return Err(Error::Protocol(
                        "the daemon asked for data for a request that sends none".into(),
                    ));
                };
                let mut buf = vec![0u8; max as usize];
                let n = read_some(source, &mut buf).await?;
                let mut req = Request::default();
                req.bytes(&buf[..n]);
                req.send(s).await?;
            }
            stderr::ERROR => return Err(read_error(s, dialect, minor).await?),
            stderr::START_ACTIVITY if dialect == Dialect::Nix => {
                let id = wire::read_u64(s).await?;
                let _level = wire::read_u64(s).await?;
                let kind = wire::read_u64(s).await?;
                let text = wire::read_bytes(s, MAX_MESSAGE, "activity text").await?;
                let _fields = read_fields(s).await?;
                let _parent = wire::read_u64(s).await?;
                log(LogEvent::StartActivity {
                    id,
                    kind,
                    text: String::from_utf8_lossy(&text).into_owned(),
                });
            }
            stderr::STOP_ACTIVITY if dialect == Dialect::Nix => {
                let id = wire::read_u64(s).await?;
                log(LogEvent::StopActivity { id });
            }
            stderr::RESULT if dialect == Dialect::Nix => {
                let _id = wire::read_u64(s).await?;
                let kind = wire::read_u64(s).await?;
                let fields = read_fields(s).await?;
                if (kind == proto::RES_BUILD_LOG_LINE || kind == proto::RES_POST_BUILD_LOG_LINE)
                    && let Some(Field::Str(line)) = fields.into_iter().next()
                {
                    log(LogEvent::BuildLine(line));
                }
            }
            other => {
                return Err(Error::Protocol(format!(
                    "unknown stderr message code {other:#x} from the {dialect}"
                )));
            }
        }
    }
}

/// Read up to `buf.len()` bytes, fewer only at the end of the source.
async fn read_some(
    source: &mut (dyn AsyncRead + Unpin + Send),
    buf: &mut [u8],
) -> Result<usize, Error> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = source
            .read(&mut buf[filled..])
            .await
            .map_err(|source| Error::Local {
                what: "reading the data for the daemon",
                source,
            })?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

async fn read_fields<S: AsyncRead + Unpin>(s: &mut S) -> Result<Vec<Field>, Error> {
    let count = wire::read_u64(s).await?;
    if count > MAX_FIELDS {
        return Err(Error::Protocol(format!(
            "{count} fields in one activity, more than {MAX_FIELDS}"
        )));
    }
    let mut fields = Vec::with_capacity(count as usize);
    for _ in 0..count {
        match wire::read_u64(s).await? {
            0 => {
                wire::read_u64(s).await?;
                fields.push(Field::Int);
            }
            1 => fields.push(Field::Str(
                wire::read_bytes(s, MAX_MESSAGE, "activity field").await?,
            )),
            t => {
                return Err(Error::Protocol(format!("unknown activity field type {t}")));
            }
        }
    }
    Ok(fields)
}

/// Nix ≥ 1.26 sends a structured error; older Nix and Guix send a message
/// and a status.
async fn read_error<S: AsyncRead + Unpin>(
    s: &mut S,
    dialect: Dialect,
    minor: u32,
) -> Result<Error, Error> {
    if dialect == Dialect::Nix && minor >= 26 {
        let kind = wire::read_string(s, MAX_MESSAGE, "error type").await?;
        if kind != "Error" {
            return Err(Error::Protocol(format!("unknown error type {kind:?}")));
        }
        let _level = wire::read_u64(s).await?;
        let _name = wire::read_bytes(s, MAX_MESSAGE, "error name").await?;
        let msg = wire::read_bytes(s, MAX_MESSAGE, "error message").await?;
        let mut message = plain(&msg);
        skip_position(s).await?;
        let traces = wire::read_u64(s).await?;
        if traces > MAX_TRACES {
            return Err(Error::Protocol(format!("{traces} error traces")));
        }
        for _ in 0..traces {
            skip_position(s).await?;
            let hint = wire::read_bytes(s, MAX_MESSAGE, "error trace").await?;
            if message.len() < MAX_MESSAGE {
                message.push_str("\n… ");
                message.push_str(&plain(&hint));
            }
        }
        Ok(Error::Daemon { message, status: 1 })
    } else {
        let msg = wire::read_bytes(s, MAX_MESSAGE, "error message").await?;
        let status = wire::read_u64(s).await?;
        Ok(Error::Daemon {
            message: plain(&msg),
            status,
        })
    }
}

/// Nix 2.8 always sends "no position"; anything else is not understood.
async fn skip_position<S: AsyncRead + Unpin>(s: &mut S) -> Result<(), Error> {
    match wire::read_u64(s).await? {
        0 => Ok(()),
        v => Err(Error::Protocol(format!(
            "error position flag {v}; this client understands only errors without positions"
        ))),
    }
}

/// A message as text without terminal escape sequences.
pub(crate) fn plain(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out.trim_end_matches('\n').to_owned()
}
