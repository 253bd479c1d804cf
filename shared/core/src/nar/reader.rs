//! The streaming NAR reader: a pull parser over any `Read`.

use std::io::{self, Read};

use super::{Error, Event, Limits, MAGIC, check_name, check_order, check_target};
use crate::wire;

/// Longest fixed token of the grammar ("nix-archive-1", "executable", …).
const MAX_TOKEN: usize = 16;

/// Reads a NAR event by event without buffering file contents.
///
/// Call [`next_event`](Self::next_event) until it returns `Ok(None)`. After a
/// [`Event::Regular`], the file's bytes can be read with
/// [`contents`](Self::contents); whatever is left unread is skipped by the
/// next call to `next_event`. The reader consumes exactly the NAR's bytes from the
/// underlying reader, so another format may follow it (export streams).
pub struct NarReader<R> {
    r: R,
    limits: Limits,
    state: State,
    /// Open directories, each with the name of its last entry.
    dirs: Vec<Option<Vec<u8>>>,
    total: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    InDirectory,
    Contents { remaining: u64, size: u64 },
    Done,
}

impl<R: Read> NarReader<R> {
    /// A reader with the given limits.
    pub fn new(r: R, limits: Limits) -> Self {
        Self {
            r,
            limits,
            state: State::Start,
            dirs: Vec::new(),
            total: 0,
        }
    }

    /// The next event, or `None` once the whole NAR has been read.
    pub fn next_event(&mut self) -> Result<Option<Event>, Error> {
        loop {
            match self.state {
                State::Start => {
                    self.expect(MAGIC, "nix-archive-1")?;
                    return self.node(None).map(Some);
                }
                State::Contents { remaining, size } => {
                    if remaining > 0 {
                        let skipped =
                            io::copy(&mut (&mut self.r).take(remaining), &mut io::sink())?;
                        if skipped < remaining {
                            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
                        }
                    }
                    wire::read_padding(&mut self.r, size, "file contents")?;
                    self.expect(b")", ")")?;
                    self.after_node()?;
                }
                State::InDirectory => return self.directory_step().map(Some),
                State::Done => return Ok(None),
            }
        }
    }

    /// Read the current regular file's contents; `Ok(0)` at its end.
    pub fn contents(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let State::Contents { remaining, size } = self.state else {
            return Ok(0);
        };
        let want = buf
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.state = State::Contents {
            remaining: remaining - n as u64,
            size,
        };
        Ok(n)
    }

    /// Whether the whole NAR has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The underlying reader, positioned after whatever has been consumed.
    pub fn into_inner(self) -> R {
        self.r
    }

    fn token(&mut self) -> Result<Vec<u8>, Error> {
        Ok(wire::read_bytes(&mut self.r, MAX_TOKEN, "NAR token")?)
    }

    fn expect(&mut self, token: &[u8], expected: &'static str) -> Result<(), Error> {
        let found = self.token()?;
        if found == token {
            Ok(())
        } else {
            Err(Error::UnexpectedToken {
                expected,
                found: String::from_utf8_lossy(&found).into_owned(),
            })
        }
    }

    fn node(&mut self, name: Option<Vec<u8>>) -> Result<Event, Error> {
        self.expect(b"(", "(")?;
        self.expect(b"type", "type")?;
        let kind = self.token()?;
        match &kind[..] {
            b"regular" => {
                let mut tok = self.token()?;
                let executable = tok == b"executable";
                if executable {
                    self.expect(b"", "\"\" after executable")?;
                    tok = self.token()?;
                }
                if tok != b"contents" {
                    return Err(Error::UnexpectedToken {
                        expected: "contents",
                        found: String::from_utf8_lossy(&tok).into_owned(),
                    });
                }
                let size = wire::read_u64(&mut self.r)?;
                if size > self.limits.max_file_size {
                    return Err(Error::TooLarge {
                        what: "file",
                        size,
                        max: self.limits.max_file_size,
                    });
                }
                self.total = self.total.saturating_add(size);
                if self.total > self.limits.max_total_size {
                    return Err(Error::TooLarge {
                        what: "total contents",
                        size: self.total,
                        max: self.limits.max_total_size,
                    });
                }
                self.state = State::Contents {
                    remaining: size,
                    size,
                };
                Ok(Event::Regular {
                    name,
                    executable,
                    size,
                })
            }
            b"symlink" => {
                self.expect(b"target", "target")?;
                let target =
                    wire::read_bytes(&mut self.r, self.limits.max_target_len, "symlink target")?;
                check_target(&target, &self.limits)?;
                self.expect(b")", ")")?;
                self.after_node()?;
                Ok(Event::Symlink { name, target })
            }
            b"directory" => {
                if self.dirs.len() >= self.limits.max_depth {
                    return Err(Error::TooDeep(self.limits.max_depth));
                }
                self.dirs.push(None);
                self.state = State::InDirectory;
                Ok(Event::Directory { name })
            }
            other => Err(Error::UnknownType(
                String::from_utf8_lossy(other).into_owned(),
            )),
        }
    }

    /// Inside a directory: the next entry's node, or the directory's end.
    fn directory_step(&mut self) -> Result<Event, Error> {
        let tok = self.token()?;
        match &tok[..] {
            b")" => {
                self.dirs.pop();
                self.after_node()?;
                Ok(Event::EndDirectory)
            }
            b"entry" => {
                self.expect(b"(", "(")?;
                self.expect(b"name", "name")?;
                let name = wire::read_bytes(&mut self.r, self.limits.max_name_len, "entry name")?;
                check_name(&name, &self.limits)?;
                let prev = self
                    .dirs
                    .last_mut()
                    .ok_or_else(|| Error::Usage("entry outside a directory".into()))?;
                check_order(prev.as_deref(), &name)?;
                *prev = Some(name.clone());
                self.expect(b"node", "node")?;
                self.node(Some(name))
            }
            other => Err(Error::UnexpectedToken {
                expected: "entry or )",
                found: String::from_utf8_lossy(other).into_owned(),
            }),
        }
    }

    /// A node has been closed: close its entry, or finish the NAR at the root.
    fn after_node(&mut self) -> Result<(), Error> {
        if self.dirs.is_empty() {
            self.state = State::Done;
        } else {
            self.expect(b")", ") closing an entry")?;
            self.state = State::InDirectory;
        }
        Ok(())
    }
}
