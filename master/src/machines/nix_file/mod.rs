//! Nix 2.8 machines files and the `builders` setting.
//!
//! The same text appears in `/etc/nix/machines` and in the `builders`
//! setting (`--builders`, `nix.conf`). This module reads and writes it with
//! exactly the semantics of Nix 2.8.0 (`src/libstore/machines.cc`,
//! `expandBuilderLines` and `parseBuilderLine`), checked against the Debian
//! `nix-bin` 2.8.0 build hook. Nix's errors become [`ParseError`]s that name
//! the file, line and column.
//!
//! # Grammar
//!
//! ```text
//! text     = segment *( ( LF / ";" ) segment )   ; empty segments are skipped
//! segment  = content [ "#" comment ]             ; the comment runs to the next LF or ";"
//! content  = "" / "@" path / machine             ; "@" only as the segment's FIRST byte
//! machine  = *blank uri [ 1*blank field ... ]    ; fields 2..8, "-" = default
//! blank    = SP / HTAB / CR / LF
//! ```
//!
//! A machine's fields, split at blanks (Nix `tokenizeString`):
//!
//! | # | field | default (`-` or missing) | notes |
//! |---|---|---|---|
//! | 1 | store URI | none: required | without `://`, `/` and not `auto`/`daemon`/`local` (or `auto?…`, `daemon?…`, `local?…`, `?…`), `ssh://` is prepended |
//! | 2 | systems, comma-separated | the local system | kept in order, repeats kept |
//! | 3 | SSH identity file | none | |
//! | 4 | max jobs | 1 | `unsigned int`: optional `+`, decimal digits, at most 2³²−1; 0 is allowed |
//! | 5 | speed factor | 1 | an **integer** in 2.8 (like max jobs), then raised to at least 1 |
//! | 6 | supported features, comma-separated | none | a set: sorted, repeats dropped |
//! | 7 | mandatory features, comma-separated | none | a set |
//! | 8 | public host key, base64 | none | only checked for base64 characters up to the first `=` |
//!
//! Fields after the eighth are ignored, as in Nix.
//!
//! # Nix 2.8 quirks this module reproduces
//!
//! * Text is cut at every LF **and every `;`**, before comments are removed,
//!   so `host # a;b` is the machine `host` followed by the machine `b`.
//! * Nix 2.8 calls `trim(line)` and discards the result, so segments are
//!   **not** trimmed: a segment of only blanks (an indented comment, a blank
//!   line holding spaces, the space after a final `;`) is an error ("store
//!   URL was not found"), and ` @file` (with a leading blank) is a machine
//!   whose URI is `@file`, not an include.
//! * `@path` includes another file. The path (trimmed) is used **as written**:
//!   Nix opens it relative to the working directory of whichever process
//!   parses it, which for the build hook is `/`. The `read_include`
//!   callback gets the path unchanged and decides; use absolute paths.
//! * A missing include file is silently skipped (Nix logs it at debug level);
//!   any other read error is an error. `@` with an empty path is skipped too.
//!
//! # Deliberate differences
//!
//! * Include depth is limited to [`MAX_INCLUDE_DEPTH`] and include cycles are
//!   errors; Nix recurses until its stack overflows.
//! * A systems field of only commas (`host ,`) is an error: Nix would accept a
//!   machine with no systems, which it never uses. This keeps an empty
//!   [`NixMachine::systems`] free to mean "the default".
//! * Each file may be at most [`MAX_FILE_LEN`] bytes.
//!
//! [`print()`] writes one line per machine with every field present and `-`
//! for defaults; `parse(print(m)) == m` for every list `parse` can return.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

/// Deepest chain of `@file` includes followed. Real setups use one level
/// (`builders = @/etc/nix/machines`); Nix 2.8 has no limit and crashes on a
/// cycle.
pub const MAX_INCLUDE_DEPTH: usize = 8;

/// Largest machines file (or `builders` text) accepted. A farm's machines
/// file is a few KiB; the limit stops an include of something like a log.
pub const MAX_FILE_LEN: usize = 1 << 20;
/// Most includes followed in all: a file naming the same include a
/// thousand times (no cycle, no depth) would otherwise be read a thousand
/// times.
pub const MAX_INCLUDES: usize = 64;
/// Most bytes read in all, includes included.
pub const MAX_TOTAL_LEN: usize = 8 << 20;

/// The bytes Nix 2.8's `tokenizeString` splits fields at.
const BLANKS: [char; 4] = [' ', '\t', '\n', '\r'];

/// One build machine, as Nix 2.8 understands it.
#[derive(Clone, Debug, PartialEq)]
pub struct NixMachine {
    /// The store URI, normalised as Nix does: `ssh://` is prepended to a bare
    /// host name such as `nix@mac`.
    pub uri: String,
    /// System types (`x86_64-linux`, …) in the order written. Empty means the
    /// default: the local system (Nix's `system` setting).
    pub systems: Vec<String>,
    /// The SSH identity file, if one is given.
    pub ssh_key: Option<String>,
    /// The most builds to run there at once (default 1; may be 0).
    pub max_jobs: u32,
    /// The relative speed, at least 1. Nix 2.8 reads it as an unsigned
    /// integer, so parsed values are always whole numbers.
    pub speed_factor: f64,
    /// Features the machine offers, sorted and without repeats.
    pub supported_features: Vec<String>,
    /// Features a derivation must require to be built there, sorted and
    /// without repeats.
    pub mandatory_features: Vec<String>,
    /// The machine's SSH host public key, base64-encoded, if given.
    pub public_host_key: Option<String>,
}

/// A line Nix 2.8 would reject, or an include that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", file.display())]
pub struct ParseError {
    /// The file the error is in (as given to [`parse`] or written after `@`).
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// Parse machines-file text. `file` names the text in errors (for the
/// `builders` setting, something like `builders setting`); `read_include`
/// reads `@path` includes, with the path exactly as written (see the module
/// documentation). Machines come out in file order, an include's machines
/// in place of its line.
pub fn parse(
    text: &str,
    file: &Path,
    read_include: &mut dyn FnMut(&Path) -> io::Result<String>,
) -> Result<Vec<NixMachine>, ParseError> {
    let mut machines = Vec::new();
    let mut walk = Walk {
        stack: vec![file.to_path_buf()],
        includes: 0,
        bytes: 0,
    };
    parse_into(text, &mut walk, read_include, &mut machines)?;
    Ok(machines)
}

/// Where the parse is: the chain of files being read, and what has been
/// read in all (limited by [`MAX_INCLUDES`] and [`MAX_TOTAL_LEN`]).
struct Walk {
    stack: Vec<PathBuf>,
    includes: usize,
    bytes: usize,
}

/// Write machines as a machines file: one line per machine, all eight
/// fields, `-` for the defaults. Round trip: `parse(print(m)) == m` for every
/// `m` that [`parse`] returns. Values `parse` cannot return (blanks, `#`,
/// `;` or LF in a field, a `,` inside a list element, a non-integral speed
/// factor, …) are written as they are and will not read back the same.
pub fn print(machines: &[NixMachine]) -> String {
    let mut out = String::new();
    for m in machines {
        // Only a segment's first byte can start an include, so a URI that
        // begins with `@` (possible in Nix 2.8) is kept a URI by a blank.
        if m.uri.starts_with('@') {
            out.push(' ');
        }
        out.push_str(&m.uri);
        out.push(' ');
        out.push_str(&list(m.systems.iter()));
        out.push(' ');
        out.push_str(m.ssh_key.as_deref().unwrap_or("-"));
        // Writing to a String cannot fail.
        let _ = write!(out, " {} {} ", m.max_jobs, m.speed_factor);
        out.push_str(&list(m.supported_features.iter()));
        out.push(' ');
        out.push_str(&list(m.mandatory_features.iter()));
        out.push(' ');
        out.push_str(m.public_host_key.as_deref().unwrap_or("-"));
        out.push('\n');
    }
    out
}

/// A comma-separated list field; `-` when empty. A list holding just `-`
/// becomes `-,`, which Nix reads back as that one element.
fn list<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let joined = items.map(String::as_str).collect::<Vec<_>>().join(",");
    match joined.as_str() {
        "" => "-".to_owned(),
        "-" => "-,".to_owned(),
        _ => joined,
    }
}

/// Where a byte offset of a text is, for errors.
struct Located<'a> {
    text: &'a str,
    file: &'a Path,
}

impl Located<'_> {
    fn error(&self, offset: usize, message: impl Into<String>) -> ParseError {
        let before = &self.text[..offset.min(self.text.len())];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        ParseError {
            file: self.file.to_path_buf(),
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            message: message.into(),
        }
    }
}

fn parse_into(
    text: &str,
    walk: &mut Walk,
    read_include: &mut dyn FnMut(&Path) -> io::Result<String>,
    machines: &mut Vec<NixMachine>,
) -> Result<(), ParseError> {
    let file = walk.stack.last().cloned().unwrap_or_default();
    let at = Located { text, file: &file };
    if text.len() > MAX_FILE_LEN {
        return Err(at.error(
            0,
            format!(
                "machines file is {} bytes long, more than the limit of {MAX_FILE_LEN}",
                text.len()
            ),
        ));
    }
    walk.bytes += text.len();
    if walk.bytes > MAX_TOTAL_LEN {
        return Err(at.error(
            0,
            format!(
                "machines files and their includes hold more than {MAX_TOTAL_LEN} bytes in all"
            ),
        ));
    }
    let mut start = 0;
    for piece in text.split(['\n', ';']) {
        let offset = start;
        start += piece.len() + 1;
        // Nix's tokenizeString drops empty segments, then cuts the comment.
        let segment = piece.find('#').map_or(piece, |hash| &piece[..hash]);
        if piece.is_empty() || segment.is_empty() {
            continue;
        }
        if let Some(after) = segment.strip_prefix('@') {
            let lead = after.len() - after.trim_start_matches(BLANKS).len();
            let path = after.trim_matches(BLANKS);
            include(path, &at, offset + 1 + lead, walk, read_include, machines)?;
        } else {
            machines.push(parse_machine(segment, offset, &at)?);
        }
    }
    Ok(())
}

fn include(
    path: &str,
    at: &Located<'_>,
    offset: usize,
    walk: &mut Walk,
    read_include: &mut dyn FnMut(&Path) -> io::Result<String>,
    machines: &mut Vec<NixMachine>,
) -> Result<(), ParseError> {
    if path.is_empty() {
        // Nix 2.8 reads "" and skips it as a missing file.
        return Ok(());
    }
    let path = PathBuf::from(path);
    walk.includes += 1;
    if walk.includes > MAX_INCLUDES {
        return Err(at.error(
            offset,
            format!(
                "more than {MAX_INCLUDES} includes in all, at `{}`",
                path.display()
            ),
        ));
    }
    let stack = &walk.stack;
    if stack.contains(&path) {
        let chain: Vec<String> = stack
            .iter()
            .chain([&path])
            .map(|p| p.display().to_string())
            .collect();
        return Err(at.error(offset, format!("include cycle: {}", chain.join(" -> "))));
    }
    if stack.len() > MAX_INCLUDE_DEPTH {
        return Err(at.error(
            offset,
            format!(
                "includes nested deeper than {MAX_INCLUDE_DEPTH} levels at `{}`",
                path.display()
            ),
        ));
    }
    let text = match read_include(&path) {
        Ok(text) => text,
        // Nix 2.8 skips a missing machines file (it logs it at debug level).
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(at.error(
                offset,
                format!("cannot read machines file `{}`: {e}", path.display()),
            ));
        }
    };
    walk.stack.push(path);
    let result = parse_into(&text, walk, read_include, machines);
    walk.stack.pop();
    result
}

/// One machine from a segment that starts at `offset` in the text; Nix 2.8's
/// `parseBuilderLine`.
fn parse_machine(segment: &str, offset: usize, at: &Located<'_>) -> Result<NixMachine, ParseError> {
    // (field, offset of the field in the text)
    let mut fields = Vec::new();
    let mut rest = segment;
    while let Some(begin) = rest.find(|c: char| !BLANKS.contains(&c)) {
        let end = rest[begin..].find(BLANKS).map_or(rest.len(), |e| begin + e);
        fields.push((
            &rest[begin..end],
            offset + (segment.len() - rest.len()) + begin,
        ));
        rest = &rest[end..];
    }
    // Nix's isSet: present and not "-".
    let field = |i: usize| fields.get(i).copied().filter(|(f, _)| *f != "-");

    let Some((uri, _)) = field(0) else {
        let column_offset = fields.first().map_or(offset, |(_, o)| *o);
        return Err(at.error(
            column_offset,
            "no store URI at the start of this machine (Nix 2.8: \"store URL was not found at the first column of a row\"; \
             a line holding only blanks or an indented comment counts as a machine)",
        ));
    };

    let systems = match field(1) {
        None => Vec::new(),
        Some((value, o)) => {
            let systems: Vec<String> = value
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if systems.is_empty() {
                return Err(at.error(
                    o,
                    format!(
                        "systems field `{value}` names no system (use `-` for the local system)"
                    ),
                ));
            }
            systems
        }
    };

    let number = |i: usize, what: &str| -> Result<Option<u32>, ParseError> {
        match field(i) {
            None => Ok(None),
            Some((value, o)) => value.parse::<u32>().map(Some).map_err(|_| {
                at.error(
                    o,
                    format!("{what} `{value}` is not an unsigned 32-bit integer (Nix 2.8 reads field #{} as `unsigned int`)", i + 1),
                )
            }),
        }
    };
    let max_jobs = number(3, "max jobs")?.unwrap_or(1);
    let speed_factor = number(4, "speed factor")?.unwrap_or(1).max(1);

    let features = |i: usize| -> Vec<String> {
        field(i).map_or_else(Vec::new, |(value, _)| {
            value
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        })
    };

    let public_host_key = match field(7) {
        None => None,
        Some((value, o)) => {
            // Nix 2.8's base64Decode stops at the first '=' and rejects any
            // other byte outside the standard alphabet before it.
            let checked = value.split('=').next().unwrap_or_default();
            if let Some((i, c)) = checked
                .char_indices()
                .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '+' || *c == '/'))
            {
                return Err(at.error(
                    o + i,
                    format!("public host key `{value}` is not base64: invalid character `{c}`"),
                ));
            }
            Some(value.to_owned())
        }
    };

    Ok(NixMachine {
        uri: normalize_uri(uri),
        systems,
        ssh_key: field(2).map(|(k, _)| k.to_owned()),
        max_jobs,
        speed_factor: f64::from(speed_factor),
        supported_features: features(5),
        mandatory_features: features(6),
        public_host_key,
    })
}

/// Nix 2.8's `Machine` constructor: a bare host name gets `ssh://`.
fn normalize_uri(uri: &str) -> String {
    let keep = uri.contains("://")
        || uri.contains('/')
        || ["auto", "daemon", "local"].contains(&uri)
        || ["auto?", "daemon?", "local?", "?"]
            .iter()
            .any(|p| uri.starts_with(p));
    if keep {
        uri.to_owned()
    } else {
        format!("ssh://{uri}")
    }
}

#[cfg(test)]
mod tests;
