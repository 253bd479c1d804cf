//! The s-expression reader (see the module documentation for the grammar).

use data_encoding::BASE64;

use super::Sexp;

/// Deepest list nesting accepted. Keys, signatures and ACLs nest at most 5 deep.
pub const MAX_DEPTH: usize = 64;
/// Largest input accepted: an ACL with thousands of RSA-4096 keys fits.
pub const MAX_INPUT: usize = 16 << 20;

/// Why an s-expression could not be read. Offsets are byte offsets in the input.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The input ends inside an expression.
    #[error("s-expression ends early (unbalanced parentheses or unterminated atom)")]
    Incomplete,
    /// A byte that cannot start or continue anything here.
    #[error("unexpected byte 0x{byte:02x} at offset {offset} in s-expression")]
    Unexpected {
        /// The offending byte.
        byte: u8,
        /// Where it is.
        offset: usize,
    },
    /// Something other than whitespace after the top-level list.
    #[error("trailing data at offset {0} after the s-expression")]
    Trailing(usize),
    /// The top level is an atom, or the input is empty.
    #[error("an s-expression must be a list")]
    NotAList,
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("s-expression nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// Input longer than [`MAX_INPUT`].
    #[error("s-expression longer than {MAX_INPUT} bytes")]
    TooLong,
    /// A malformed quoted string, hex or base64 atom, or length prefix.
    #[error("bad {what} at offset {offset} in s-expression")]
    BadAtom {
        /// Which kind of atom.
        what: &'static str,
        /// Where it starts.
        offset: usize,
    },
    /// libgcrypt display hints (`[type]value`) are not used by Guix.
    #[error("display hints ([…]) at offset {0} are not supported")]
    DisplayHint(usize),
}

const TOKEN_SPECIALS: &[u8] = b"-./_:*+=";

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c | 0x0b)
}

/// Bytes of a bare token. NUL counts, as in libgcrypt, whose reader and
/// printer both test `strchr(specials, byte)`, which finds the terminator.
pub(super) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || TOKEN_SPECIALS.contains(&b) || b == 0
}

pub(super) fn parse(input: &[u8]) -> Result<Sexp, Error> {
    if input.len() > MAX_INPUT {
        return Err(Error::TooLong);
    }
    let mut p = Parser { input, pos: 0 };
    p.skip_ws();
    if p.peek() != Some(b'(') {
        return match p.peek() {
            None => Err(Error::NotAList),
            Some(_) => Err(Error::NotAList),
        };
    }
    let sexp = p.list(0)?;
    p.skip_ws();
    if p.pos != input.len() {
        return Err(Error::Trailing(p.pos));
    }
    Ok(sexp)
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_ws) {
            self.pos += 1;
        }
    }

    fn unexpected(&self) -> Error {
        match self.peek() {
            Some(byte) => Error::Unexpected {
                byte,
                offset: self.pos,
            },
            None => Error::Incomplete,
        }
    }

    /// A list; `self.pos` is at its `(`.
    fn list(&mut self, depth: usize) -> Result<Sexp, Error> {
        if depth >= MAX_DEPTH {
            return Err(Error::TooDeep);
        }
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                None => return Err(Error::Incomplete),
                Some(b')') => {
                    self.pos += 1;
                    return Ok(Sexp::List(items));
                }
                Some(b'(') => items.push(self.list(depth + 1)?),
                Some(_) => items.push(Sexp::Atom(self.atom()?)),
            }
        }
    }

    fn atom(&mut self) -> Result<Vec<u8>, Error> {
        let start = self.pos;
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'#') => self.hex(),
            Some(b'|') => self.base64(),
            Some(b'[') => Err(Error::DisplayHint(start)),
            Some(b) if b.is_ascii_digit() => self.length_prefixed(),
            Some(b) if is_token_byte(b) => {
                while self.peek().is_some_and(is_token_byte) {
                    self.pos += 1;
                }
                Ok(self.input[start..self.pos].to_vec())
            }
            _ => Err(self.unexpected()),
        }
    }

    /// `DIGITS:raw`, or a length before a quoted, hex or base64 atom.
    fn length_prefixed(&mut self) -> Result<Vec<u8>, Error> {
        let start = self.pos;
        let mut len: usize = 0;
        while let Some(b) = self.peek().filter(u8::is_ascii_digit) {
            len = len
                .checked_mul(10)
                .and_then(|l| l.checked_add(usize::from(b - b'0')))
                .filter(|l| *l <= MAX_INPUT)
                .ok_or(Error::BadAtom {
                    what: "length prefix",
                    offset: start,
                })?;
            self.pos += 1;
        }
        let bad = Error::BadAtom {
            what: "length prefix",
            offset: start,
        };
        let bytes = match self.peek() {
            Some(b':') => {
                self.pos += 1;
                let end = self.pos.checked_add(len).ok_or(Error::Incomplete)?;
                let bytes = self.input.get(self.pos..end).ok_or(Error::Incomplete)?;
                self.pos = end;
                return Ok(bytes.to_vec());
            }
            Some(b'"') => self.quoted()?,
            Some(b'#') => self.hex()?,
            Some(b'|') => self.base64()?,
            None => return Err(Error::Incomplete),
            Some(_) => return Err(bad),
        };
        if bytes.len() == len {
            Ok(bytes)
        } else {
            Err(bad)
        }
    }

    fn quoted(&mut self) -> Result<Vec<u8>, Error> {
        let start = self.pos;
        let bad = Error::BadAtom {
            what: "quoted string",
            offset: start,
        };
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let b = self.peek().ok_or(Error::Incomplete)?;
            self.pos += 1;
            match b {
                b'"' => return Ok(out),
                b'\\' => {
                    let e = self.peek().ok_or(Error::Incomplete)?;
                    self.pos += 1;
                    match e {
                        b'b' => out.push(0x08),
                        b't' => out.push(b'\t'),
                        b'v' => out.push(0x0b),
                        b'n' => out.push(b'\n'),
                        b'f' => out.push(0x0c),
                        b'r' => out.push(b'\r'),
                        b'"' | b'\'' | b'\\' => out.push(e),
                        b'x' => {
                            let digits = self
                                .input
                                .get(self.pos..self.pos + 2)
                                .ok_or(Error::Incomplete)?;
                            if !digits.iter().all(u8::is_ascii_hexdigit) {
                                return Err(bad);
                            }
                            out.extend(crate::hex::decode(digits).ok_or_else(|| bad.clone())?);
                            self.pos += 2;
                        }
                        b'0'..=b'7' => {
                            let digits = self
                                .input
                                .get(self.pos - 1..self.pos + 2)
                                .ok_or(Error::Incomplete)?;
                            if !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                                return Err(bad);
                            }
                            let value =
                                digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                            out.push(u8::try_from(value).map_err(|_| bad.clone())?);
                            self.pos += 2;
                        }
                        // Line continuation: backslash, then \n, \r, \n\r or \r\n.
                        b'\n' | b'\r' => {
                            let other = if e == b'\n' { b'\r' } else { b'\n' };
                            if self.peek() == Some(other) {
                                self.pos += 1;
                            }
                        }
                        _ => return Err(bad),
                    }
                }
                _ => out.push(b),
            }
        }
    }

    fn delimited(&mut self, delim: u8) -> Result<Vec<u8>, Error> {
        self.pos += 1;
        let mut body = Vec::new();
        loop {
            let b = self.peek().ok_or(Error::Incomplete)?;
            self.pos += 1;
            if b == delim {
                return Ok(body);
            }
            if !is_ws(b) {
                body.push(b);
            }
        }
    }

    fn hex(&mut self) -> Result<Vec<u8>, Error> {
        let offset = self.pos;
        let body = self.delimited(b'#')?;
        crate::hex::decode(&body).ok_or(Error::BadAtom {
            what: "hex atom",
            offset,
        })
    }

    fn base64(&mut self) -> Result<Vec<u8>, Error> {
        let offset = self.pos;
        let body = self.delimited(b'|')?;
        BASE64.decode(&body).map_err(|_| Error::BadAtom {
            what: "base64 atom",
            offset,
        })
    }
}
