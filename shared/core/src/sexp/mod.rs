//! S-expressions as libgcrypt reads and prints them (spec §10).
//!
//! Guix keeps keys, signatures and the ACL as libgcrypt s-expressions and
//! compares them *structurally* (token → symbol, other atoms → bytes), never
//! as text. This module is that data model: an [`Sexp`] is an atom (a byte
//! string) or a list.
//!
//! Input grammar accepted by [`Sexp::parse`] (libgcrypt's `gcry_sexp_sscan`):
//!
//! ```text
//! sexp    := ws* list ws*
//! list    := "(" ws* (element ws*)* ")"
//! element := list | atom
//! atom    := token                    ; [A-Za-z-./_:*+=][A-Za-z0-9-./_:*+=]*
//!          | DIGITS ":" BYTES         ; canonical: exactly DIGITS raw bytes
//!          | '"' string-chars '"'     ; escapes \b \t \v \n \f \r \" \' \\ \xHH \ooo, \<newline>
//!          | "#" hex-digits "#"       ; whitespace allowed inside
//!          | "|" base64 "|"           ; whitespace allowed inside
//! ws      := " " | "\t" | "\n" | "\r" | "\f" | "\v"
//! ```
//!
//! Restrictions (enforced here): the top level is one list, nothing but
//! whitespace follows it, nesting is at most [`MAX_DEPTH`], display hints
//! (`[…]`) are rejected, and the input is at most [`MAX_INPUT`] bytes.
//!
//! Output: [`Sexp::to_advanced`] prints byte-identically to libgcrypt 1.10's
//! `gcry_sexp_sprint(…, GCRYSEXP_FMT_ADVANCED)`; [`Sexp::to_canonical`]
//! prints the canonical `LEN:bytes` form.

mod parse;
mod print;

pub use parse::{Error, MAX_DEPTH, MAX_INPUT};

/// A libgcrypt s-expression: an atom (raw bytes) or a list.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Sexp {
    /// A byte string. Tokens, quoted strings, hex and base64 all decode to this.
    Atom(Vec<u8>),
    /// A list of s-expressions.
    List(Vec<Self>),
}

impl Sexp {
    /// Parse one s-expression from text in any libgcrypt input syntax.
    pub fn parse(input: &[u8]) -> Result<Self, Error> {
        parse::parse(input)
    }

    /// Print in libgcrypt's advanced format, byte-identical to libgcrypt.
    pub fn to_advanced(&self) -> Vec<u8> {
        print::advanced(self)
    }

    /// Print in the canonical `LEN:bytes` format.
    pub fn to_canonical(&self) -> Vec<u8> {
        let mut out = Vec::new();
        print::canonical(self, &mut out);
        out
    }

    /// An atom from a string's bytes.
    pub fn atom(bytes: impl AsRef<[u8]>) -> Self {
        Self::Atom(bytes.as_ref().to_vec())
    }

    /// A list whose first element is the token `name`, followed by `rest`.
    pub fn tagged(name: &str, rest: impl IntoIterator<Item = Self>) -> Self {
        let mut items = vec![Self::atom(name)];
        items.extend(rest);
        Self::List(items)
    }

    /// The bytes of an atom, or `None` for a list.
    pub fn as_atom(&self) -> Option<&[u8]> {
        match self {
            Self::Atom(bytes) => Some(bytes),
            Self::List(_) => None,
        }
    }

    /// The elements of a list, or `None` for an atom.
    pub fn as_list(&self) -> Option<&[Self]> {
        match self {
            Self::List(items) => Some(items),
            Self::Atom(_) => None,
        }
    }

    /// The first element's bytes when this is a list that starts with an atom.
    pub fn tag(&self) -> Option<&[u8]> {
        self.as_list()?.first()?.as_atom()
    }

    /// The first sublist (depth-first, this list included) whose first
    /// element is the atom `token`, as libgcrypt's `gcry_sexp_find_token`.
    pub fn find_token(&self, token: &str) -> Option<&Self> {
        let items = self.as_list()?;
        if self.tag() == Some(token.as_bytes()) {
            return Some(self);
        }
        items.iter().find_map(|item| item.find_token(token))
    }

    /// The elements after the tag of the direct child list tagged `token`
    /// (e.g. `(q #..#)` → `[#..#]`), without descending further.
    pub fn child(&self, token: &str) -> Option<&[Self]> {
        self.as_list()?
            .iter()
            .skip(1)
            .find(|item| item.tag() == Some(token.as_bytes()))
            .and_then(|item| item.as_list())
            .map(|items| &items[1..])
    }

    /// Overwrite every atom with zeros (for s-expressions holding secrets).
    pub fn zeroize(&mut self) {
        match self {
            Self::Atom(bytes) => zeroize::Zeroize::zeroize(bytes),
            Self::List(items) => items.iter_mut().for_each(Self::zeroize),
        }
    }

    /// The single atom value of the direct child `(token VALUE)`.
    pub fn child_atom(&self, token: &str) -> Option<&[u8]> {
        match self.child(token)? {
            [value] => value.as_atom(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
