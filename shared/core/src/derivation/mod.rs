//! ATerm derivations (`.drv` files) exactly as Nix 2.8 and Guix write them.
//!
//! # Encoding
//!
//! A `.drv` file is one ATerm term, written without whitespace or a trailing
//! newline. The grammar this module accepts is the *canonical* one — the
//! exact image of Nix 2.8's `Derivation::unparse` (`src/libstore/derivations.cc`,
//! tag 2.8.0) — so that every accepted file re-prints to the same bytes:
//!
//! ```text
//! drv        = "Derive(" "[" outputs "]" "," "[" input-drvs "]" ","
//!              "[" input-srcs "]" "," raw "," esc "," "[" args "]" ","
//!              "[" env "]" ")"
//! outputs    = [ output *( "," output ) ]                ; sorted by name, unique
//! output     = "(" raw "," raw "," raw "," raw ")"       ; name, path, hash algo, hash
//! input-drvs = [ input-drv *( "," input-drv ) ]          ; sorted by path, unique
//! input-drv  = "(" raw "," "[" [ raw *( "," raw ) ] "]" ")" ; path, sorted unique outputs
//! input-srcs = [ raw *( "," raw ) ]                      ; sorted, unique
//! args       = [ esc *( "," esc ) ]                      ; in order
//! env        = [ "(" esc "," esc ")" *( "," "(" esc "," esc ")" ) ] ; sorted by name, unique
//! raw        = DQUOTE *( any byte except DQUOTE and "\" ) DQUOTE
//! esc        = DQUOTE *( escape / any byte except DQUOTE "\" LF CR HTAB ) DQUOTE
//! escape     = "\" ( DQUOTE / "\" / "n" / "r" / "t" )
//! ```
//!
//! The third top-level `raw` is the system (platform), the `esc` after it
//! the builder.
//!
//! # Two kinds of string
//!
//! Nix 2.8 prints only the builder, the arguments and the environment with
//! `printString`, which escapes `"` `\` LF CR and TAB. Output names, output
//! paths, hash algorithms, hashes, input paths, input output names and the
//! system go through `printUnquotedString`, which writes the bytes between
//! quotes **without any escaping** — a system of `"a<TAB>b<LF>c"` is written
//! with a raw tab and newline (`vectors/drv/raw-platform.drv`). [`Derivation::to_aterm`]
//! does the same, so its output is byte-identical to Nix's for every
//! derivation, and the store path computed from it matches.
//!
//! Consequently a `raw` field that contains `"` or `\` cannot be written
//! faithfully: Nix writes a file it cannot read back itself. Such values
//! never come out of [`Derivation::parse`]; [`Derivation::to_aterm`] of a
//! hand-built value containing them gives bytes that `parse` rejects.
//!
//! # Restrictions (enforced by [`Derivation::parse`])
//!
//! * The canonical form only: no whitespace, no empty list elements, maps and
//!   sets in strictly increasing byte order (Nix's parser would silently
//!   accept unsorted or repeated keys and re-print them differently), only
//!   the five escapes above, and no raw LF/CR/TAB inside an escaped string.
//! * Input derivation and input source paths must start with `/`, and output
//!   paths must be empty (deferred or floating outputs) or start with `/`, as
//!   Nix's `validatePath` requires. Store-path syntax is not checked further.
//! * Every string must be UTF-8 (Nix allows any bytes; Guix and nixpkgs
//!   derivations are UTF-8).
//! * The limits [`MAX_DRV_LEN`], [`MAX_STRING_LEN`], [`MAX_OUTPUTS`],
//!   [`MAX_INPUT_DRVS`], [`MAX_OUTPUTS_PER_INPUT`], [`MAX_INPUT_SRCS`],
//!   [`MAX_ARGS`] and [`MAX_ENV_VARS`]. The grammar is not recursive:
//!   nesting is fixed at three levels (`Derive(`, a list, a tuple or inner
//!   list), so no depth limit is needed.
//! * Nothing may follow the closing `)`.
//!
//! Hash algorithms and hashes are kept as written; whether they name a real
//! hash, and whether the output paths match them, is the store's business.
//!
//! Errors carry the byte offset at which parsing stopped.

use std::collections::{BTreeMap, BTreeSet};

/// Largest `.drv` accepted. Nix reads whole derivations into memory too; the
/// largest nixpkgs and Guix derivations (long `__json` or inline scripts)
/// are a few MiB, and a hostile peer must not make us buffer more.
pub const MAX_DRV_LEN: usize = 32 << 20;
/// Longest single string (after unescaping). Large environment values such
/// as structured attributes stay far below this.
pub const MAX_STRING_LEN: usize = 16 << 20;
/// Most outputs per derivation. nixpkgs derivations have a dozen or so.
pub const MAX_OUTPUTS: usize = 1024;
/// Most input derivations. Large real derivations have a few hundred.
pub const MAX_INPUT_DRVS: usize = 1 << 16;
/// Most outputs named for one input derivation.
pub const MAX_OUTPUTS_PER_INPUT: usize = 1024;
/// Most input sources.
pub const MAX_INPUT_SRCS: usize = 1 << 16;
/// Most builder arguments.
pub const MAX_ARGS: usize = 1 << 16;
/// Most environment variables.
pub const MAX_ENV_VARS: usize = 1 << 16;

/// The environment variable listing the machine features a build needs.
pub const REQUIRED_SYSTEM_FEATURES: &str = "requiredSystemFeatures";

/// A derivation: what to build, from what, and how.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Derivation {
    /// Outputs by name (`out`, `dev`, …).
    pub outputs: BTreeMap<String, Output>,
    /// Input derivation paths (`….drv`) and which of their outputs are used.
    pub input_drvs: BTreeMap<String, BTreeSet<String>>,
    /// Input sources: store paths used directly.
    pub input_srcs: BTreeSet<String>,
    /// The system type the builder runs on (`x86_64-linux`).
    pub system: String,
    /// The program to run.
    pub builder: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its environment.
    pub env: BTreeMap<String, String>,
}

/// One output of a derivation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// The output's store path; empty for deferred and floating
    /// content-addressed outputs.
    pub path: String,
    /// For fixed-output and content-addressed outputs, the hash algorithm,
    /// prefixed with `r:` for recursive (NAR) hashing; otherwise empty.
    pub hash_algo: String,
    /// For fixed outputs, the expected hash in lower-case hex; otherwise empty
    /// (or `impure`).
    pub hash: String,
}

/// Why a derivation could not be read. `offset` is a byte offset in the input.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The input is longer than [`MAX_DRV_LEN`].
    #[error("derivation is {len} bytes long, more than the limit of {MAX_DRV_LEN}")]
    TooLong {
        /// The input length.
        len: usize,
    },
    /// The input ends before the derivation does.
    #[error("derivation ends early at offset {offset}: expected {expected}")]
    UnexpectedEnd {
        /// The input length.
        offset: usize,
        /// What should have come next.
        expected: &'static str,
    },
    /// A byte that does not fit the grammar here.
    #[error("unexpected byte 0x{found:02x} at offset {offset} in derivation: expected {expected}")]
    Unexpected {
        /// Where it is.
        offset: usize,
        /// The byte found.
        found: u8,
        /// What should have been there.
        expected: &'static str,
    },
    /// A backslash followed by something other than `"` `\` `n` `r` `t`.
    #[error("bad escape sequence `\\` + 0x{found:02x} at offset {offset} in derivation")]
    BadEscape {
        /// Where the backslash is.
        offset: usize,
        /// The byte after it.
        found: u8,
    },
    /// A raw LF, CR or TAB inside a string that Nix would have escaped.
    #[error(
        "unescaped control byte 0x{found:02x} at offset {offset} in derivation (Nix writes it as an escape)"
    )]
    UnescapedControl {
        /// Where it is.
        offset: usize,
        /// The byte.
        found: u8,
    },
    /// A backslash in a field that Nix writes without escaping.
    #[error(
        "backslash at offset {offset} in the {field} of a derivation, which Nix writes unescaped"
    )]
    EscapeInRawField {
        /// Where it is.
        offset: usize,
        /// Which field.
        field: &'static str,
    },
    /// A string that is not UTF-8.
    #[error("the {field} starting at offset {offset} in derivation is not UTF-8")]
    NotUtf8 {
        /// Where the string starts (its opening quote).
        offset: usize,
        /// Which field.
        field: &'static str,
    },
    /// A string longer than [`MAX_STRING_LEN`].
    #[error(
        "the {field} starting at offset {offset} in derivation is longer than {MAX_STRING_LEN} bytes"
    )]
    StringTooLong {
        /// Where the string starts.
        offset: usize,
        /// Which field.
        field: &'static str,
    },
    /// A list longer than its limit.
    #[error("more than {limit} {what} at offset {offset} in derivation")]
    TooMany {
        /// Where the first element beyond the limit starts.
        offset: usize,
        /// What the list holds.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// A key not strictly greater than the one before it.
    #[error(
        "{what} `{key}` at offset {offset} is out of order or repeated (Nix writes them sorted and unique)"
    )]
    NotSorted {
        /// Where the key starts.
        offset: usize,
        /// Which list.
        what: &'static str,
        /// The key.
        key: String,
    },
    /// A path that does not start with `/`.
    #[error("{what} `{path}` at offset {offset} in derivation is not an absolute path")]
    NotAbsolute {
        /// Where it starts.
        offset: usize,
        /// Which field.
        what: &'static str,
        /// The path.
        path: String,
    },
    /// Bytes after the closing parenthesis.
    #[error("trailing data at offset {offset} after the derivation")]
    TrailingData {
        /// Where the trailing data starts.
        offset: usize,
    },
}

impl Derivation {
    /// Parse a `.drv` file in the canonical form Nix writes (see the module
    /// documentation for the grammar and restrictions).
    pub fn parse(text: &[u8]) -> Result<Self, Error> {
        if text.len() > MAX_DRV_LEN {
            return Err(Error::TooLong { len: text.len() });
        }
        let mut p = Parser {
            input: text,
            pos: 0,
        };
        let drv = p.derivation()?;
        if p.pos != text.len() {
            return Err(Error::TrailingData { offset: p.pos });
        }
        Ok(drv)
    }

    /// The ATerm bytes, byte-identical to what Nix 2.8 writes for the same
    /// derivation (including its unescaped fields; see the module
    /// documentation).
    pub fn to_aterm(&self) -> Vec<u8> {
        let mut s = Vec::with_capacity(self.estimated_len());
        s.extend_from_slice(b"Derive([");
        for (i, (name, out)) in self.outputs.iter().enumerate() {
            comma(&mut s, i);
            s.push(b'(');
            raw(&mut s, name);
            s.push(b',');
            raw(&mut s, &out.path);
            s.push(b',');
            raw(&mut s, &out.hash_algo);
            s.push(b',');
            raw(&mut s, &out.hash);
            s.push(b')');
        }
        s.extend_from_slice(b"],[");
        for (i, (path, outputs)) in self.input_drvs.iter().enumerate() {
            comma(&mut s, i);
            s.push(b'(');
            raw(&mut s, path);
            s.extend_from_slice(b",[");
            for (j, output) in outputs.iter().enumerate() {
                comma(&mut s, j);
                raw(&mut s, output);
            }
            s.extend_from_slice(b"])");
        }
        s.extend_from_slice(b"],[");
        for (i, path) in self.input_srcs.iter().enumerate() {
            comma(&mut s, i);
            raw(&mut s, path);
        }
        s.extend_from_slice(b"],");
        raw(&mut s, &self.system);
        s.push(b',');
        escaped(&mut s, &self.builder);
        s.extend_from_slice(b",[");
        for (i, arg) in self.args.iter().enumerate() {
            comma(&mut s, i);
            escaped(&mut s, arg);
        }
        s.extend_from_slice(b"],[");
        for (i, (name, value)) in self.env.iter().enumerate() {
            comma(&mut s, i);
            s.push(b'(');
            escaped(&mut s, name);
            s.push(b',');
            escaped(&mut s, value);
            s.push(b')');
        }
        s.extend_from_slice(b"])");
        s
    }

    /// The machine features the build needs: the environment variable
    /// `requiredSystemFeatures` split at spaces, tabs, CRs and LFs (Nix's
    /// `tokenizeString` separators), sorted and without repeats, like the
    /// set Nix 2.8 hands to its build hook.
    ///
    /// Not covered: derivations with structured attributes (`__json`), whose
    /// features live inside the JSON, and the `ca-derivations` feature Nix
    /// adds for floating content-addressed outputs.
    pub fn required_system_features(&self) -> Vec<String> {
        let Some(value) = self.env.get(REQUIRED_SYSTEM_FEATURES) else {
            return Vec::new();
        };
        value
            .split([' ', '\t', '\n', '\r'])
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    fn estimated_len(&self) -> usize {
        let strings = self
            .outputs
            .iter()
            .map(|(n, o)| n.len() + o.path.len() + o.hash_algo.len() + o.hash.len() + 12);
        let inputs = self
            .input_drvs
            .iter()
            .map(|(p, o)| p.len() + o.iter().map(|x| x.len() + 3).sum::<usize>() + 8);
        let srcs = self.input_srcs.iter().map(|p| p.len() + 3);
        let args = self.args.iter().map(|a| a.len() + 3);
        let env = self.env.iter().map(|(k, v)| k.len() + v.len() + 6);
        64 + self.system.len()
            + self.builder.len()
            + strings.sum::<usize>()
            + inputs.sum::<usize>()
            + srcs.sum::<usize>()
            + args.sum::<usize>()
            + env.sum::<usize>()
    }
}

fn comma(s: &mut Vec<u8>, index: usize) {
    if index > 0 {
        s.push(b',');
    }
}

/// Nix's `printUnquotedString`: the bytes between quotes, unescaped.
fn raw(s: &mut Vec<u8>, value: &str) {
    s.push(b'"');
    s.extend_from_slice(value.as_bytes());
    s.push(b'"');
}

/// Nix's `printString`: `"` `\` LF CR TAB escaped, everything else as is.
fn escaped(s: &mut Vec<u8>, value: &str) {
    s.push(b'"');
    for &b in value.as_bytes() {
        match b {
            b'"' => s.extend_from_slice(b"\\\""),
            b'\\' => s.extend_from_slice(b"\\\\"),
            b'\n' => s.extend_from_slice(b"\\n"),
            b'\r' => s.extend_from_slice(b"\\r"),
            b'\t' => s.extend_from_slice(b"\\t"),
            _ => s.push(b),
        }
    }
    s.push(b'"');
}

/// Which quoting a field uses.
#[derive(Clone, Copy)]
enum Quoting {
    /// `printUnquotedString`: no escapes at all.
    Raw,
    /// `printString`: the five escapes, no raw LF/CR/TAB.
    Escaped,
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn derivation(&mut self) -> Result<Derivation, Error> {
        let mut drv = Derivation::default();
        self.expect(b"Derive(", "`Derive(`")?;

        self.expect(b"[", "`[` opening the outputs")?;
        let mut first = true;
        while self.next_element(&mut first, "`,` or `]` in the outputs")? {
            self.check_count(drv.outputs.len(), MAX_OUTPUTS, "outputs")?;
            self.expect(b"(", "`(` opening an output")?;
            let start = self.pos;
            let name = self.string(Quoting::Raw, "output name")?;
            check_order(drv.outputs.keys().next_back(), &name, start, "output name")?;
            self.expect(b",", "`,` after the output name")?;
            let start = self.pos;
            let path = self.string(Quoting::Raw, "output path")?;
            if !path.is_empty() {
                check_absolute(&path, start, "output path")?;
            }
            self.expect(b",", "`,` after the output path")?;
            let hash_algo = self.string(Quoting::Raw, "output hash algorithm")?;
            self.expect(b",", "`,` after the output hash algorithm")?;
            let hash = self.string(Quoting::Raw, "output hash")?;
            self.expect(b")", "`)` closing an output")?;
            drv.outputs.insert(
                name,
                Output {
                    path,
                    hash_algo,
                    hash,
                },
            );
        }

        self.expect(b",[", "`,[` opening the input derivations")?;
        let mut first = true;
        while self.next_element(&mut first, "`,` or `]` in the input derivations")? {
            self.check_count(drv.input_drvs.len(), MAX_INPUT_DRVS, "input derivations")?;
            self.expect(b"(", "`(` opening an input derivation")?;
            let start = self.pos;
            let path = self.string(Quoting::Raw, "input derivation path")?;
            check_absolute(&path, start, "input derivation path")?;
            check_order(
                drv.input_drvs.keys().next_back(),
                &path,
                start,
                "input derivation",
            )?;
            self.expect(b",[", "`,[` opening the outputs of an input derivation")?;
            let mut outputs = BTreeSet::new();
            let mut first_output = true;
            while self.next_element(
                &mut first_output,
                "`,` or `]` in the outputs of an input derivation",
            )? {
                self.check_count(
                    outputs.len(),
                    MAX_OUTPUTS_PER_INPUT,
                    "outputs of one input derivation",
                )?;
                let start = self.pos;
                let output = self.string(Quoting::Raw, "input derivation output name")?;
                check_order(outputs.last(), &output, start, "input derivation output")?;
                outputs.insert(output);
            }
            self.expect(b")", "`)` closing an input derivation")?;
            drv.input_drvs.insert(path, outputs);
        }

        self.expect(b",[", "`,[` opening the input sources")?;
        let mut first = true;
        while self.next_element(&mut first, "`,` or `]` in the input sources")? {
            self.check_count(drv.input_srcs.len(), MAX_INPUT_SRCS, "input sources")?;
            let start = self.pos;
            let path = self.string(Quoting::Raw, "input source path")?;
            check_absolute(&path, start, "input source path")?;
            check_order(drv.input_srcs.last(), &path, start, "input source")?;
            drv.input_srcs.insert(path);
        }

        self.expect(b",", "`,` before the system")?;
        drv.system = self.string(Quoting::Raw, "system")?;
        self.expect(b",", "`,` before the builder")?;
        drv.builder = self.string(Quoting::Escaped, "builder")?;

        self.expect(b",[", "`,[` opening the arguments")?;
        let mut first = true;
        while self.next_element(&mut first, "`,` or `]` in the arguments")? {
            self.check_count(drv.args.len(), MAX_ARGS, "arguments")?;
            drv.args.push(self.string(Quoting::Escaped, "argument")?);
        }

        self.expect(b",[", "`,[` opening the environment")?;
        let mut first = true;
        while self.next_element(&mut first, "`,` or `]` in the environment")? {
            self.check_count(drv.env.len(), MAX_ENV_VARS, "environment variables")?;
            self.expect(b"(", "`(` opening an environment variable")?;
            let start = self.pos;
            let name = self.string(Quoting::Escaped, "environment variable name")?;
            check_order(
                drv.env.keys().next_back(),
                &name,
                start,
                "environment variable",
            )?;
            self.expect(b",", "`,` after an environment variable name")?;
            let value = self.string(Quoting::Escaped, "environment variable value")?;
            self.expect(b")", "`)` closing an environment variable")?;
            drv.env.insert(name, value);
        }
        self.expect(b")", "`)` closing the derivation")?;
        Ok(drv)
    }

    /// In a list whose `[` has been read: `true` if an element follows
    /// (after consuming its separating comma), `false` after the closing `]`.
    fn next_element(&mut self, first: &mut bool, expected: &'static str) -> Result<bool, Error> {
        let Some(&b) = self.input.get(self.pos) else {
            return Err(Error::UnexpectedEnd {
                offset: self.pos,
                expected,
            });
        };
        match b {
            b']' => {
                self.pos += 1;
                Ok(false)
            }
            b',' if !*first => {
                self.pos += 1;
                Ok(true)
            }
            _ if *first => {
                *first = false;
                Ok(true)
            }
            found => Err(Error::Unexpected {
                offset: self.pos,
                found,
                expected,
            }),
        }
    }

    fn check_count(&self, count: usize, limit: usize, what: &'static str) -> Result<(), Error> {
        if count >= limit {
            return Err(Error::TooMany {
                offset: self.pos,
                what,
                limit,
            });
        }
        Ok(())
    }

    fn expect(&mut self, literal: &[u8], expected: &'static str) -> Result<(), Error> {
        for &want in literal {
            match self.input.get(self.pos) {
                None => {
                    return Err(Error::UnexpectedEnd {
                        offset: self.pos,
                        expected,
                    });
                }
                Some(&found) if found != want => {
                    return Err(Error::Unexpected {
                        offset: self.pos,
                        found,
                        expected,
                    });
                }
                Some(_) => self.pos += 1,
            }
        }
        Ok(())
    }

    fn string(&mut self, quoting: Quoting, field: &'static str) -> Result<String, Error> {
        let start = self.pos;
        self.expect(b"\"", field)?;
        let mut bytes = Vec::new();
        loop {
            let Some(&b) = self.input.get(self.pos) else {
                return Err(Error::UnexpectedEnd {
                    offset: self.pos,
                    expected: "`\"` closing a string",
                });
            };
            match (b, quoting) {
                (b'"', _) => {
                    self.pos += 1;
                    break;
                }
                (b'\\', Quoting::Raw) => {
                    return Err(Error::EscapeInRawField {
                        offset: self.pos,
                        field,
                    });
                }
                (b'\\', Quoting::Escaped) => {
                    let Some(&e) = self.input.get(self.pos + 1) else {
                        return Err(Error::UnexpectedEnd {
                            offset: self.pos + 1,
                            expected: "an escaped character",
                        });
                    };
                    bytes.push(match e {
                        b'"' | b'\\' => e,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        found => {
                            return Err(Error::BadEscape {
                                offset: self.pos,
                                found,
                            });
                        }
                    });
                    self.pos += 2;
                }
                (b'\n' | b'\r' | b'\t', Quoting::Escaped) => {
                    return Err(Error::UnescapedControl {
                        offset: self.pos,
                        found: b,
                    });
                }
                _ => {
                    // Copy the run of ordinary bytes up to the next quote,
                    // backslash or (for escaped strings) control byte.
                    let rest = &self.input[self.pos..];
                    let run = rest
                        .iter()
                        .position(|&c| {
                            c == b'"'
                                || c == b'\\'
                                || (matches!(quoting, Quoting::Escaped)
                                    && matches!(c, b'\n' | b'\r' | b'\t'))
                        })
                        .unwrap_or(rest.len());
                    bytes.extend_from_slice(&rest[..run]);
                    self.pos += run;
                }
            }
            if bytes.len() > MAX_STRING_LEN {
                return Err(Error::StringTooLong {
                    offset: start,
                    field,
                });
            }
        }
        String::from_utf8(bytes).map_err(|_| Error::NotUtf8 {
            offset: start,
            field,
        })
    }
}

fn check_order(
    previous: Option<&String>,
    key: &str,
    offset: usize,
    what: &'static str,
) -> Result<(), Error> {
    match previous {
        Some(prev) if prev.as_str() >= key => Err(Error::NotSorted {
            offset,
            what,
            key: key.to_owned(),
        }),
        _ => Ok(()),
    }
}

fn check_absolute(path: &str, offset: usize, what: &'static str) -> Result<(), Error> {
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(Error::NotAbsolute {
            offset,
            what,
            path: path.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests;
