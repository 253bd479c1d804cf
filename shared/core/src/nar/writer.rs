//! The streaming NAR writer.

use std::io::{Read, Write};

use super::{Error, Limits, MAGIC, check_name, check_order, check_target};
use crate::wire::{padding, write_bytes, write_u64};

/// Size of the buffer used to copy file contents.
const COPY_BUF: usize = 256 << 10;

/// Writes a NAR node by node. Entries must be given in the order of the
/// grammar, with names strictly increasing in each directory; the writer
/// checks this and the name rules, so what it emits is always canonical.
pub struct NarWriter<W> {
    w: W,
    limits: Limits,
    /// Open directories, each with its last entry name.
    dirs: Vec<Option<Vec<u8>>>,
    root_written: bool,
    buf: Vec<u8>,
}

impl<W: Write> NarWriter<W> {
    /// Start a NAR (writes the magic).
    pub fn new(mut w: W) -> Result<Self, Error> {
        write_bytes(&mut w, MAGIC)?;
        Ok(Self {
            w,
            limits: Limits::default(),
            dirs: Vec::new(),
            root_written: false,
            buf: Vec::new(),
        })
    }

    /// A regular file of exactly `size` bytes read from `contents`.
    /// Fails if `contents` yields fewer or more bytes (the file changed).
    pub fn regular(
        &mut self,
        name: Option<&[u8]>,
        executable: bool,
        size: u64,
        contents: &mut impl Read,
    ) -> Result<(), Error> {
        self.open_node(name)?;
        write_bytes(&mut self.w, b"regular")?;
        if executable {
            write_bytes(&mut self.w, b"executable")?;
            write_bytes(&mut self.w, b"")?;
        }
        write_bytes(&mut self.w, b"contents")?;
        write_u64(&mut self.w, size)?;
        if self.buf.is_empty() {
            self.buf = vec![0u8; COPY_BUF];
        }
        let mut remaining = size;
        while remaining > 0 {
            let want = self
                .buf
                .len()
                .min(usize::try_from(remaining).unwrap_or(usize::MAX));
            let n = contents.read(&mut self.buf[..want])?;
            if n == 0 {
                return Err(Error::Usage(format!(
                    "file shrank while being archived ({remaining} of {size} bytes missing)"
                )));
            }
            self.w.write_all(&self.buf[..n])?;
            remaining -= n as u64;
        }
        if contents.read(&mut self.buf[..1])? != 0 {
            return Err(Error::Usage(format!(
                "file grew while being archived (beyond {size} bytes)"
            )));
        }
        self.w.write_all(&[0u8; 8][..padding(size)])?;
        write_bytes(&mut self.w, b")")?;
        self.close_entry()
    }

    /// A symbolic link.
    pub fn symlink(&mut self, name: Option<&[u8]>, target: &[u8]) -> Result<(), Error> {
        check_target(target, &self.limits)?;
        self.open_node(name)?;
        write_bytes(&mut self.w, b"symlink")?;
        write_bytes(&mut self.w, b"target")?;
        write_bytes(&mut self.w, target)?;
        write_bytes(&mut self.w, b")")?;
        self.close_entry()
    }

    /// Open a directory; its entries follow, then [`end_directory`](Self::end_directory).
    pub fn start_directory(&mut self, name: Option<&[u8]>) -> Result<(), Error> {
        if self.dirs.len() >= self.limits.max_depth {
            return Err(Error::TooDeep(self.limits.max_depth));
        }
        self.open_node(name)?;
        write_bytes(&mut self.w, b"directory")?;
        self.dirs.push(None);
        Ok(())
    }

    /// Close the innermost directory.
    pub fn end_directory(&mut self) -> Result<(), Error> {
        if self.dirs.pop().is_none() {
            return Err(Error::Usage(
                "end_directory without an open directory".into(),
            ));
        }
        write_bytes(&mut self.w, b")")?;
        self.close_entry()
    }

    /// Finish the NAR and return the writer (not flushed).
    pub fn finish(self) -> Result<W, Error> {
        if !self.root_written || !self.dirs.is_empty() {
            return Err(Error::Usage(
                "NAR finished before its root node was complete".into(),
            ));
        }
        Ok(self.w)
    }

    fn open_node(&mut self, name: Option<&[u8]>) -> Result<(), Error> {
        match (self.dirs.last_mut(), name) {
            (None, None) if !self.root_written => self.root_written = true,
            (Some(prev), Some(name)) => {
                check_name(name, &self.limits)?;
                check_order(prev.as_deref(), name)?;
                *prev = Some(name.to_vec());
                write_bytes(&mut self.w, b"entry")?;
                write_bytes(&mut self.w, b"(")?;
                write_bytes(&mut self.w, b"name")?;
                write_bytes(&mut self.w, name)?;
                write_bytes(&mut self.w, b"node")?;
            }
            _ => {
                return Err(Error::Usage(
                    "a node needs a name exactly when it is inside a directory".into(),
                ));
            }
        }
        write_bytes(&mut self.w, b"(")?;
        write_bytes(&mut self.w, b"type")?;
        Ok(())
    }

    fn close_entry(&mut self) -> Result<(), Error> {
        if !self.dirs.is_empty() {
            write_bytes(&mut self.w, b")")?;
        }
        Ok(())
    }
}
