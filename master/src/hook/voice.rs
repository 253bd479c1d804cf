//! How a hook speaks to its daemon: one reply per request on stdout, and
//! messages for the daemon's client that are never mistaken for a reply.

use std::io::Write;

/// How messages reach the daemon's client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Voice {
    /// guix-daemon forwards every line that is not a reply.
    Guix,
    /// nix-daemon shows only `@nix {json}` lines.
    Nix,
}

impl Voice {
    /// Say `line` to the daemon's client (never mistaken for a reply).
    #[allow(clippy::print_stderr)]
    pub fn say(self, line: &str) {
        match self {
            Self::Guix => note(line),
            Self::Nix => {
                for l in line.lines() {
                    let msg = serde_json::json!({"action": "msg", "level": 0, "msg": l});
                    eprintln!("@nix {msg}");
                }
            }
        }
    }
}

/// A line for the daemon's client (never mistaken for a reply).
#[allow(clippy::print_stderr)]
pub(crate) fn note(line: &str) {
    for l in line.lines() {
        if l.starts_with("# ") {
            eprintln!(" {l}");
        } else {
            eprintln!("{l}");
        }
    }
}

/// The reply, flushed.
pub(crate) fn reply(word: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "# {word}")?;
    out.flush()
}
