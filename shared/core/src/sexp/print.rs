//! Printing in libgcrypt's advanced and canonical formats.
//!
//! The advanced layout is libgcrypt's token-stream rule (`sexp_sprint`):
//! an opening paren at depth > 0 starts a new line indented by the depth;
//! an atom is followed by a space unless a closing paren follows; a closing
//! paren that is followed by an atom or another closing paren starts a new
//! line indented by the new depth; the text ends with a newline.

use super::Sexp;
use super::parse::is_token_byte;

enum Tok<'a> {
    Open,
    Close,
    Data(&'a [u8]),
}

fn flatten<'a>(sexp: &'a Sexp, out: &mut Vec<Tok<'a>>) {
    match sexp {
        Sexp::Atom(bytes) => out.push(Tok::Data(bytes)),
        Sexp::List(items) => {
            out.push(Tok::Open);
            for item in items {
                flatten(item, out);
            }
            out.push(Tok::Close);
        }
    }
}

pub(super) fn advanced(sexp: &Sexp) -> Vec<u8> {
    let mut toks = Vec::new();
    flatten(sexp, &mut toks);
    // Reserve enough up front that the output is never reallocated (and so
    // never leaves copies of a secret key behind): an atom takes at most
    // four bytes per byte (`\xHH`) plus quotes; layout adds a newline and
    // indentation per token.
    let capacity = toks
        .iter()
        .map(|t| {
            if let Tok::Data(b) = t {
                4 * b.len() + 3
            } else {
                0
            }
        })
        .sum::<usize>()
        + toks.len() * (toks.len() + 2);
    let mut out = Vec::with_capacity(capacity.min(64 << 20));
    let mut indent = 0usize;
    for (i, tok) in toks.iter().enumerate() {
        let next = toks.get(i + 1);
        match tok {
            Tok::Open => {
                if indent > 0 {
                    out.push(b'\n');
                    out.resize(out.len() + indent, b' ');
                }
                out.push(b'(');
                indent += 1;
            }
            Tok::Close => {
                out.push(b')');
                indent = indent.saturating_sub(1);
                if matches!(next, Some(Tok::Close | Tok::Data(_))) {
                    out.push(b'\n');
                    out.resize(out.len() + indent, b' ');
                }
            }
            Tok::Data(bytes) => {
                atom(bytes, &mut out);
                if !matches!(next, Some(Tok::Close)) {
                    out.push(b' ');
                }
            }
        }
    }
    out.push(b'\n');
    out
}

enum Encoding {
    Hex,
    Token,
    Quoted,
}

/// libgcrypt's `suitable_encoding`. Note `strchr(set, 0)` finds the
/// terminator, so NUL counts as allowed in both tokens and strings.
fn encoding(bytes: &[u8]) -> Encoding {
    let Some(&first) = bytes.first() else {
        return Encoding::Quoted;
    };
    if first & 0x80 != 0 || first == 0 {
        return Encoding::Hex;
    }
    let mut maybe_token = true;
    for &b in bytes {
        let control = b < 0x20 || (0x7f..=0xa0).contains(&b);
        if control && !b"\x08\t\x0b\n\x0c\r\0".contains(&b) {
            return Encoding::Hex;
        }
        if maybe_token && !is_token_byte(b) {
            maybe_token = false;
        }
    }
    if maybe_token && !first.is_ascii_digit() {
        Encoding::Token
    } else {
        Encoding::Quoted
    }
}

fn atom(bytes: &[u8], out: &mut Vec<u8>) {
    match encoding(bytes) {
        Encoding::Token => out.extend_from_slice(bytes),
        Encoding::Hex => {
            const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
            out.push(b'#');
            for b in bytes {
                out.push(DIGITS[usize::from(b >> 4)]);
                out.push(DIGITS[usize::from(b & 0x0f)]);
            }
            out.push(b'#');
        }
        Encoding::Quoted => {
            out.push(b'"');
            for &b in bytes {
                match b {
                    0x08 => out.extend_from_slice(b"\\b"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    0x0b => out.extend_from_slice(b"\\v"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    0x0c => out.extend_from_slice(b"\\f"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    b'"' => out.extend_from_slice(b"\\\""),
                    b'\'' => out.extend_from_slice(b"\\'"),
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b if b < 0x20 || (0x7f..=0xa0).contains(&b) => {
                        out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
                    }
                    b => out.push(b),
                }
            }
            out.push(b'"');
        }
    }
}

pub(super) fn canonical(sexp: &Sexp, out: &mut Vec<u8>) {
    match sexp {
        Sexp::Atom(bytes) => {
            out.extend_from_slice(bytes.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(bytes);
        }
        Sexp::List(items) => {
            out.push(b'(');
            for item in items {
                canonical(item, out);
            }
            out.push(b')');
        }
    }
}
