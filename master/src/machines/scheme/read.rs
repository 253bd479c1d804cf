//! The reader: text → [`Datum`]s with positions.

use std::fmt;

/// Largest machines file read (a generated file for hundreds of machines is ~100 KiB).
pub const MAX_SOURCE: usize = 4 << 20;
/// Deepest nesting of lists and quotes.
pub const MAX_DEPTH: usize = 128;

/// A position in the source: 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A datum read from source, with where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Datum {
    /// What it is.
    pub kind: Kind,
    /// Where it starts.
    pub pos: Pos,
}

/// The kinds of datum.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// A proper list.
    List(Vec<Datum>),
    /// `(a b . c)`: the elements before the dot, and the tail.
    Dotted(Vec<Datum>, Box<Datum>),
    /// A symbol.
    Symbol(String),
    /// A string.
    Str(String),
    /// An exact integer.
    Int(i64),
    /// An inexact real, or an exact non-integer (rationals are read as reals).
    Real(f64),
    /// `#t` / `#f`.
    Bool(bool),
    /// A character.
    Char(char),
    /// `#:name`.
    Keyword(String),
}

/// A syntax error at a position.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct ReadError {
    /// Where.
    pub pos: Pos,
    /// What.
    pub message: String,
}

/// Read every datum of `source`.
pub fn read_all(source: &str) -> Result<Vec<Datum>, ReadError> {
    if source.len() > MAX_SOURCE {
        return Err(ReadError {
            pos: Pos { line: 1, col: 1 },
            message: format!("file larger than {MAX_SOURCE} bytes"),
        });
    }
    let mut r = Reader {
        chars: source.chars().collect(),
        i: 0,
        line: 1,
        col: 1,
    };
    let mut out = Vec::new();
    loop {
        r.skip_atmosphere()?;
        if r.peek().is_none() {
            return Ok(out);
        }
        if r.peek() == Some(')') || r.peek() == Some(']') {
            return Err(r.error_here("unbalanced parentheses: unexpected \")\""));
        }
        out.push(r.datum(0)?);
    }
}

struct Reader {
    chars: Vec<char>,
    i: usize,
    line: u32,
    col: u32,
}

fn is_delimiter(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | '[' | ']' | '"' | ';')
}

impl Reader {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.i + n).copied()
    }

    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            col: self.col,
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn error_at(pos: Pos, message: impl Into<String>) -> ReadError {
        ReadError {
            pos,
            message: message.into(),
        }
    }

    fn error_here(&self, message: impl Into<String>) -> ReadError {
        Self::error_at(self.pos(), message)
    }

    /// Skip whitespace and comments (but not `#;`, which needs the reader).
    /// Skip whitespace and comments; `#;` datum comments are counted and
    /// their datums read at `depth + 1`, so they neither recurse without
    /// bound nor escape the depth limit.
    fn skip_atmosphere_at(&mut self, depth: usize) -> Result<(), ReadError> {
        let mut pending = 0usize;
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some(';') => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                }
                Some('#') if self.peek_at(1) == Some('|') => {
                    let start = self.pos();
                    self.bump();
                    self.bump();
                    let mut depth = 1;
                    while depth > 0 {
                        match (self.bump(), self.peek()) {
                            (None, _) => {
                                return Err(Self::error_at(start, "unterminated block comment"));
                            }
                            (Some('|'), Some('#')) => {
                                self.bump();
                                depth -= 1;
                            }
                            (Some('#'), Some('|')) => {
                                self.bump();
                                depth += 1;
                            }
                            _ => {}
                        }
                    }
                }
                Some('#') if self.peek_at(1) == Some('!') => {
                    let start = self.pos();
                    self.bump();
                    self.bump();
                    loop {
                        match (self.bump(), self.peek()) {
                            (None, _) => {
                                return Err(Self::error_at(start, "unterminated #! comment"));
                            }
                            (Some('!'), Some('#')) => {
                                self.bump();
                                break;
                            }
                            _ => {}
                        }
                    }
                }
                Some('#') if self.peek_at(1) == Some(';') => {
                    self.bump();
                    self.bump();
                    pending += 1;
                }
                None if pending > 0 => return Err(self.error_here("end of file after #;")),
                Some(')' | ']') if pending > 0 => {
                    return Err(self.error_here("#; without a datum to comment out"));
                }
                Some(_) if pending > 0 => {
                    self.datum(depth + 1)?;
                    pending -= 1;
                }
                _ => return Ok(()),
            }
        }
    }

    fn skip_atmosphere(&mut self) -> Result<(), ReadError> {
        self.skip_atmosphere_at(0)
    }

    fn datum(&mut self, depth: usize) -> Result<Datum, ReadError> {
        if depth > MAX_DEPTH {
            return Err(self.error_here(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        let pos = self.pos();
        let c = self
            .peek()
            .ok_or_else(|| self.error_here("unexpected end of file"))?;
        let kind = match c {
            '(' | '[' => return self.list(depth),
            ')' | ']' => return Err(self.error_here("unexpected \")\"")),
            '"' => Kind::Str(self.string()?),
            '\'' | '`' | ',' => {
                self.bump();
                let name = match (c, self.peek()) {
                    ('\'', _) => "quote",
                    ('`', _) => "quasiquote",
                    (_, Some('@')) => {
                        self.bump();
                        "unquote-splicing"
                    }
                    _ => "unquote",
                };
                self.skip_atmosphere_at(depth)?;
                if self.peek().is_none() {
                    return Err(self.error_here(format!("end of file after {c}")));
                }
                let inner = self.datum(depth + 1)?;
                Kind::List(vec![
                    Datum {
                        kind: Kind::Symbol(name.into()),
                        pos,
                    },
                    inner,
                ])
            }
            '#' => self.hash(pos)?,
            _ => {
                let token = self.token();
                parse_number(&token).unwrap_or(Kind::Symbol(token))
            }
        };
        Ok(Datum { kind, pos })
    }

    fn list(&mut self, depth: usize) -> Result<Datum, ReadError> {
        let pos = self.pos();
        let open = self.bump().unwrap_or('(');
        let close = if open == '[' { ']' } else { ')' };
        let mut items = Vec::new();
        loop {
            self.skip_atmosphere_at(depth)?;
            match self.peek() {
                None => return Err(Self::error_at(pos, "unbalanced parentheses: missing \")\"")),
                Some(c) if c == close => {
                    self.bump();
                    return Ok(Datum {
                        kind: Kind::List(items),
                        pos,
                    });
                }
                Some(')' | ']') => return Err(self.error_here("mismatched closing bracket")),
                Some('.') if self.peek_at(1).is_none_or(is_delimiter) => {
                    if items.is_empty() {
                        return Err(self.error_here("unexpected \".\""));
                    }
                    self.bump();
                    self.skip_atmosphere_at(depth)?;
                    let tail = self.datum(depth + 1)?;
                    self.skip_atmosphere_at(depth)?;
                    if self.peek() != Some(close) {
                        return Err(
                            self.error_here("expected \")\" after the tail of a dotted list")
                        );
                    }
                    self.bump();
                    return Ok(Datum {
                        kind: Kind::Dotted(items, Box::new(tail)),
                        pos,
                    });
                }
                Some(_) => items.push(self.datum(depth + 1)?),
            }
        }
    }

    fn token(&mut self) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek().filter(|c| !is_delimiter(*c)) {
            s.push(c);
            self.bump();
        }
        s
    }

    fn string(&mut self) -> Result<String, ReadError> {
        let start = self.pos();
        self.bump();
        let unterminated = || Self::error_at(start, "unterminated string: end of file inside it");
        let mut s = String::new();
        loop {
            let at = self.pos();
            match self.bump().ok_or_else(unterminated)? {
                '"' => return Ok(s),
                '\\' => {
                    let e = self.bump().ok_or_else(unterminated)?;
                    match e {
                        '\\' | '"' => s.push(e),
                        'a' => s.push('\u{7}'),
                        'b' => s.push('\u{8}'),
                        'f' => s.push('\u{c}'),
                        'n' => s.push('\n'),
                        'r' => s.push('\r'),
                        't' => s.push('\t'),
                        'v' => s.push('\u{b}'),
                        '0' => s.push('\0'),
                        '\n' => {}
                        'x' | 'u' | 'U' => {
                            let digits = match e {
                                'x' => 2,
                                'u' => 4,
                                _ => 6,
                            };
                            let mut value = 0u32;
                            for _ in 0..digits {
                                let d = self.bump().and_then(|c| c.to_digit(16));
                                value = value * 16
                                    + d.ok_or_else(|| {
                                        Self::error_at(
                                            at,
                                            format!("invalid \\{e} escape in string"),
                                        )
                                    })?;
                            }
                            s.push(char::from_u32(value).ok_or_else(|| {
                                Self::error_at(at, "invalid character in escape")
                            })?);
                        }
                        other => {
                            return Err(Self::error_at(
                                at,
                                format!("invalid escape \\{other} in string"),
                            ));
                        }
                    }
                }
                c => s.push(c),
            }
        }
    }

    /// `#…` syntax other than comments.
    fn hash(&mut self, pos: Pos) -> Result<Kind, ReadError> {
        self.bump();
        match self.peek() {
            Some('\\') => {
                self.bump();
                let first = self
                    .bump()
                    .ok_or_else(|| self.error_here("end of file in character"))?;
                let mut name = first.to_string();
                while let Some(c) = self.peek().filter(|c| !is_delimiter(*c)) {
                    name.push(c);
                    self.bump();
                }
                char_named(&name)
                    .map(Kind::Char)
                    .ok_or_else(|| Self::error_at(pos, format!("unknown character name #\\{name}")))
            }
            Some(':') => {
                self.bump();
                Ok(Kind::Keyword(self.token()))
            }
            _ => {
                let token = self.token();
                match token.as_str() {
                    "t" | "true" => Ok(Kind::Bool(true)),
                    "f" | "false" => Ok(Kind::Bool(false)),
                    _ => parse_number(&format!("#{token}"))
                        .ok_or_else(|| Self::error_at(pos, format!("unknown # syntax: #{token}"))),
                }
            }
        }
    }
}

fn char_named(name: &str) -> Option<char> {
    let mut chars = name.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        return Some(c);
    }
    Some(match name {
        "space" => ' ',
        "newline" | "linefeed" | "nl" => '\n',
        "tab" => '\t',
        "nul" | "null" => '\0',
        "return" | "cr" => '\r',
        "alarm" => '\u{7}',
        "backspace" => '\u{8}',
        "delete" | "del" | "rubout" => '\u{7f}',
        "escape" | "esc" => '\u{1b}',
        "page" => '\u{c}',
        _ => {
            let hex = name.strip_prefix('x')?;
            return char::from_u32(u32::from_str_radix(hex, 16).ok()?);
        }
    })
}

/// Parse a number token, with optional `#e`/`#i`/`#x`/`#b`/`#o`/`#d` prefixes.
pub(crate) fn parse_number(token: &str) -> Option<Kind> {
    let mut rest = token;
    let mut radix = 10;
    let mut exactness = None;
    while let Some(p) = rest.strip_prefix('#') {
        let mut cs = p.chars();
        match cs.next()?.to_ascii_lowercase() {
            'x' => radix = 16,
            'b' => radix = 2,
            'o' => radix = 8,
            'd' => radix = 10,
            'e' => exactness = Some(true),
            'i' => exactness = Some(false),
            _ => return None,
        }
        rest = cs.as_str();
    }
    let value = parse_real(rest, radix)?;
    Some(match (exactness, value) {
        (Some(false), Kind::Int(i)) => Kind::Real(i as f64),
        (Some(true), Kind::Real(r)) if r.fract() == 0.0 && r.abs() < 9.0e15 => Kind::Int(r as i64),
        (_, v) => v,
    })
}

fn parse_real(s: &str, radix: u32) -> Option<Kind> {
    if s.is_empty() {
        return None;
    }
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() {
        return None;
    }
    if let Some((num, den)) = s.split_once('/') {
        let num = i64::from_str_radix(num, radix).ok()?;
        let den = i64::from_str_radix(den, radix).ok().filter(|d| *d > 0)?;
        return Some(if num % den == 0 {
            Kind::Int(num / den)
        } else {
            Kind::Real(num as f64 / den as f64)
        });
    }
    if let Ok(i) = i64::from_str_radix(s, radix) {
        return Some(Kind::Int(i));
    }
    if radix != 10 {
        return None;
    }
    // Decimals: digits with at most one dot and an optional exponent; at least one digit.
    let valid = digits
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || c == '.')
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        && digits.chars().any(|c| c.is_ascii_digit());
    if !valid {
        return None;
    }
    s.parse::<f64>().ok().map(Kind::Real)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(src: &str) -> Kind {
        let mut all = read_all(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert_eq!(all.len(), 1, "{src}");
        all.remove(0).kind
    }

    #[test]
    fn atoms() {
        assert_eq!(one("42"), Kind::Int(42));
        assert_eq!(one("-7"), Kind::Int(-7));
        assert_eq!(one("+5"), Kind::Int(5));
        assert_eq!(one("2."), Kind::Real(2.0));
        assert_eq!(one(".5"), Kind::Real(0.5));
        assert_eq!(one("1e3"), Kind::Real(1000.0));
        assert_eq!(one("-0.25"), Kind::Real(-0.25));
        assert_eq!(one("1/2"), Kind::Real(0.5));
        assert_eq!(one("4/2"), Kind::Int(2));
        assert_eq!(one("#x1F"), Kind::Int(31));
        assert_eq!(one("#e1.5"), Kind::Real(1.5));
        assert_eq!(one("#i3"), Kind::Real(3.0));
        assert_eq!(one("#t"), Kind::Bool(true));
        assert_eq!(one("#false"), Kind::Bool(false));
        assert_eq!(one("#\\a"), Kind::Char('a'));
        assert_eq!(one("#\\space"), Kind::Char(' '));
        assert_eq!(one("#\\x41"), Kind::Char('A'));
        assert_eq!(one("#:speed"), Kind::Keyword("speed".into()));
        assert_eq!(one("-"), Kind::Symbol("-".into()));
        assert_eq!(one("..."), Kind::Symbol("...".into()));
        assert_eq!(one("1+"), Kind::Symbol("1+".into()));
        assert_eq!(one("string-append"), Kind::Symbol("string-append".into()));
        assert_eq!(
            one(r#""a\x41;b\"\\\n\t""#),
            Kind::Str("aA;b\"\\\n\t".into())
        );
        assert_eq!(one("\"c\\\n     d\""), Kind::Str("c     d".into()));
    }

    #[test]
    fn structure_comments_and_positions() {
        let src = "; comment\n#| block #| nested |# |#\n(a #;(skipped) 'b\n  `(c ,d ,@e) . f)";
        let all = read_all(src).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].pos, Pos { line: 3, col: 1 });
        let Kind::Dotted(items, tail) = &all[0].kind else {
            panic!("{:?}", all[0].kind)
        };
        assert_eq!(items.len(), 3);
        assert_eq!(items[1].pos, Pos { line: 3, col: 16 });
        assert_eq!(tail.kind, Kind::Symbol("f".into()));
        assert_eq!(items[2].pos, Pos { line: 4, col: 3 });
        let Kind::List(q) = &items[2].kind else {
            panic!()
        };
        assert_eq!(q[0].kind, Kind::Symbol("quasiquote".into()));
    }

    #[test]
    fn errors_have_positions() {
        let check = |src: &str, line: u32, col: u32, msg: &str| {
            let e = read_all(src).unwrap_err();
            assert_eq!((e.pos.line, e.pos.col), (line, col), "{src}: {e}");
            assert!(e.message.contains(msg), "{src}: {e}");
        };
        check("(list\n  (a b)", 1, 1, "unbalanced");
        check("(a))", 1, 4, "unbalanced");
        check("(a \"abc", 1, 4, "unterminated string");
        check("(a \"\\q\")", 1, 5, "invalid escape");
        check("#\\bogus", 1, 1, "unknown character");
        check("#|", 1, 1, "unterminated block comment");
        check("(a . )", 1, 6, "unexpected");
        check(&"(".repeat(200), 1, 130, "nested deeper");
    }
}

#[cfg(test)]
mod hostile {
    use super::*;

    #[test]
    fn datum_comments_cannot_escape_the_depth_limit() {
        for src in [
            "(#;".repeat(20_000),
            format!("{}a", "#;".repeat(20_000)),
            format!("{}a", "#;(".repeat(20_000)),
        ] {
            assert!(read_all(&src).is_err(), "{}…", &src[..10]);
        }
        assert_eq!(
            read_all("#;#;a b c").unwrap().len(),
            1,
            "two datums commented out"
        );
        assert!(read_all("(a #;)").is_err());
    }
}
