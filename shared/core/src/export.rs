//! Export streams: what `export-paths` and `import-paths` carry (spec §3–§4).
//!
//! ```text
//! STREAM := ( u64le(1) ITEM )* u64le(0)
//! ITEM   := NAR u64le(0x4558494e) str(path) strs(references) str(deriver)
//!           u64le(has_sig) [ str(signature) ]          ; signature iff has_sig = 1
//! H      := SHA-256( NAR ‖ u64le(0x4558494e) ‖ str(path) ‖ strs(refs) ‖ str(deriver) )
//! ```
//!
//! Both directions stream: [`ExportReader`] hashes the item while its NAR
//! is read (so contents can go straight to disk) and [`ItemWriter`] hashes
//! while writing, then appends the signature over H. Limits: paths at most
//! [`Limits::max_path_len`] bytes, at most [`Limits::max_references`]
//! references, signatures at most [`MAX_SIGNATURE_LEN`] bytes, plus the NAR
//! limits. Markers other than 0 and 1, a wrong magic, and `has_sig` other
//! than 0 or 1 are errors.

use std::io::{self, Read, Write};

use crate::acl::Acl;
use crate::hashing::{HashingReader, HashingWriter};
use crate::keys::PublicKey;
use crate::nar::{self, NarReader};
use crate::signature::{MAX_SIGNATURE_LEN, Signature, Verdict};
use crate::store_path::{self, StorePath};
use crate::wire;

/// `EXPORT_MAGIC`, the bytes "NIXE" as a u64.
pub const EXPORT_MAGIC: u64 = 0x4558_494e;

/// Limits on an export stream's items.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Limits on each item's NAR.
    pub nar: nar::Limits,
    /// Longest store path, reference or deriver.
    pub max_path_len: usize,
    /// Most references per item.
    pub max_references: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            nar: nar::Limits::default(),
            max_path_len: 4096,
            // Held in memory before the signature is checked; real items
            // have at most a few thousand direct references.
            max_references: 8192,
        }
    }
}

/// Why an export stream is invalid.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Framing or I/O error.
    #[error("export stream: {0}")]
    Wire(#[from] wire::Error),
    /// Error inside an item's NAR.
    #[error("export stream: {0}")]
    Nar(#[from] nar::Error),
    /// An item marker other than 0 or 1.
    #[error("input doesn't look like something created by `nix-store --export' (item marker {0})")]
    BadMarker(u64),
    /// The magic after the NAR is wrong.
    #[error("normalized archive cannot be imported; wrong format (magic {0:#x})")]
    BadMagic(u64),
    /// A path, reference or deriver is not a valid store path.
    #[error("export stream: {0}")]
    BadPath(#[from] store_path::Error),
    /// A path that is not UTF-8.
    #[error("export stream: {0} is not valid UTF-8")]
    NotUtf8(&'static str),
    /// Too many references.
    #[error("export stream: {count} references, more than the limit of {max}")]
    TooManyReferences {
        /// Claimed count.
        count: u64,
        /// The limit.
        max: usize,
    },
    /// `has_sig` other than 0 or 1.
    #[error("export stream: signature flag {0} is neither 0 nor 1")]
    BadSignatureFlag(u64),
    /// [`ItemReader::finish`] before the NAR was read to its end.
    #[error("export stream: item trailer requested before its NAR was fully read")]
    NarNotFinished,
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Self::Wire(wire::Error::Io(e))
    }
}

/// What follows an item's NAR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// The item's store path.
    pub path: StorePath,
    /// Its references, in stream order.
    pub references: Vec<StorePath>,
    /// The derivation that built it, if recorded.
    pub deriver: Option<StorePath>,
    /// The signature text, if the item is signed.
    pub signature: Option<Vec<u8>>,
    /// H, the SHA-256 of the hashed region.
    pub hash: [u8; 32],
    /// SHA-256 of the NAR alone (what a store records as the NAR hash).
    pub nar_hash: [u8; 32],
    /// Length of the NAR.
    pub nar_size: u64,
}

/// Reads an export stream item by item.
pub struct ExportReader<R> {
    r: HashingReader<R>,
    limits: Limits,
    done: bool,
}

impl<R: Read> ExportReader<R> {
    /// A reader over `r` (give it a buffered reader).
    pub fn new(r: R, limits: Limits) -> Self {
        Self {
            r: HashingReader::new(r),
            limits,
            done: false,
        }
    }

    /// The next item, or `None` at the end marker.
    pub fn next_item(&mut self) -> Result<Option<ItemReader<'_, R>>, Error> {
        if self.done {
            return Ok(None);
        }
        match wire::read_u64(&mut self.r)? {
            0 => {
                self.done = true;
                Ok(None)
            }
            1 => {
                self.r.start();
                let limits = self.limits.clone();
                Ok(Some(ItemReader {
                    nar: NarReader::new(&mut self.r, limits.nar.clone()),
                    limits,
                }))
            }
            other => Err(Error::BadMarker(other)),
        }
    }

    /// Whether the end marker has been read.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The underlying reader, positioned after what has been consumed.
    pub fn into_inner(self) -> R {
        self.r.into_inner()
    }
}

/// One item of an export stream: its NAR, then its trailer.
pub struct ItemReader<'a, R> {
    nar: NarReader<&'a mut HashingReader<R>>,
    limits: Limits,
}

impl<R: Read> ItemReader<'_, R> {
    /// The item's NAR, to be read to its end before [`finish`](Self::finish).
    pub fn nar(&mut self) -> &mut NarReader<impl Read> {
        &mut self.nar
    }

    /// Read the trailer after the NAR; returns it with H.
    pub fn finish(self) -> Result<Trailer, Error> {
        if !self.nar.is_done() {
            return Err(Error::NarNotFinished);
        }
        let limits = self.limits;
        let r = self.nar.into_inner();
        let (nar_hash, nar_size) = r.snapshot();
        let magic = wire::read_u64(r)?;
        if magic != EXPORT_MAGIC {
            return Err(Error::BadMagic(magic));
        }
        let path = read_path(r, &limits, "store path")?;
        let count = wire::read_u64(r)?;
        if count > limits.max_references as u64 {
            return Err(Error::TooManyReferences {
                count,
                max: limits.max_references,
            });
        }
        let references = (0..count)
            .map(|_| read_path(r, &limits, "reference"))
            .collect::<Result<Vec<_>, _>>()?;
        let deriver = wire::read_bytes(r, limits.max_path_len, "deriver")?;
        let deriver = if deriver.is_empty() {
            None
        } else {
            Some(StorePath::parse(
                std::str::from_utf8(&deriver).map_err(|_| Error::NotUtf8("deriver"))?,
            )?)
        };
        let hash = r.finish();
        let signature = match wire::read_u64(r)? {
            0 => None,
            1 => Some(wire::read_bytes(r, MAX_SIGNATURE_LEN, "signature")?),
            other => return Err(Error::BadSignatureFlag(other)),
        };
        Ok(Trailer {
            path,
            references,
            deriver,
            signature,
            hash,
            nar_hash,
            nar_size,
        })
    }
}

fn read_path(r: &mut impl Read, limits: &Limits, field: &'static str) -> Result<StorePath, Error> {
    let bytes = wire::read_bytes(r, limits.max_path_len, field)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| Error::NotUtf8(field))?;
    Ok(StorePath::parse(text)?)
}

/// Writes one item: marker, then the NAR through [`nar_sink`](Self::nar_sink),
/// then the trailer and signature with [`finish`](Self::finish).
pub struct ItemWriter<'a, W: Write> {
    w: HashingWriter<&'a mut W>,
}

impl<'a, W: Write> ItemWriter<'a, W> {
    /// Write the item marker; hashing starts after it.
    pub fn begin(w: &'a mut W) -> io::Result<Self> {
        wire::write_u64(w, 1)?;
        Ok(Self {
            w: HashingWriter::new(w),
        })
    }

    /// Where the item's NAR goes (wrap it in a [`nar::NarWriter`]).
    pub fn nar_sink(&mut self) -> &mut HashingWriter<&'a mut W> {
        &mut self.w
    }

    /// Write the trailer; `sign` receives H and returns the signature text
    /// (or `None` for an unsigned item). Returns H.
    pub fn finish(
        mut self,
        path: &StorePath,
        references: &[StorePath],
        deriver: Option<&StorePath>,
        sign: impl FnOnce(&[u8; 32]) -> Option<Vec<u8>>,
    ) -> io::Result<[u8; 32]> {
        let w = &mut self.w;
        wire::write_u64(w, EXPORT_MAGIC)?;
        wire::write_bytes(w, path.to_string().as_bytes())?;
        let mut refs: Vec<String> = references.iter().map(ToString::to_string).collect();
        refs.sort();
        wire::write_u64(w, refs.len() as u64)?;
        for r in &refs {
            wire::write_bytes(w, r.as_bytes())?;
        }
        wire::write_bytes(
            w,
            deriver
                .map(ToString::to_string)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        let (hash, _) = w.take_hash();
        let out = w.get_mut();
        match sign(&hash) {
            Some(sig) => {
                wire::write_u64(out, 1)?;
                wire::write_bytes(out, &sig)?;
            }
            None => wire::write_u64(out, 0)?,
        }
        Ok(hash)
    }
}

/// Write the end-of-stream marker.
pub fn write_end(w: &mut impl Write) -> io::Result<()> {
    wire::write_u64(w, 0)
}

/// The result of checking one item's signature.
#[derive(Clone, Debug)]
pub struct ItemCheck {
    /// `None` when the item carries no signature.
    pub verdict: Option<Verdict>,
    /// The signing key, when the signature names a readable one.
    pub signer: Option<PublicKey>,
    /// Why the signature text is corrupt, when it does not even parse.
    pub cause: Option<String>,
}

impl ItemCheck {
    /// What the verdict means and what to do, with the cause of a corrupt
    /// signature; `None` when the item carries no signature.
    pub fn explain(&self) -> Option<String> {
        let verdict = self.verdict?;
        Some(match &self.cause {
            Some(cause) => format!("{cause}: transfer the archive again"),
            None => verdict.explain().to_owned(),
        })
    }

    /// Whether the item may be imported.
    pub fn is_valid(&self) -> bool {
        self.verdict == Some(Verdict::Valid)
    }

    /// The verdict word for listings (`unsigned` when there is no signature).
    pub fn word(&self) -> &'static str {
        self.verdict.map_or("unsigned", Verdict::as_str)
    }
}

/// Check an item's signature against `acl` and the H computed from its bytes.
pub fn check_item(trailer: &Trailer, acl: &Acl) -> ItemCheck {
    let Some(text) = &trailer.signature else {
        return ItemCheck {
            verdict: None,
            signer: None,
            cause: None,
        };
    };
    match Signature::parse(text) {
        Ok(sig) => {
            let checked = sig.check(acl, &trailer.hash);
            ItemCheck {
                verdict: Some(checked.verdict),
                signer: checked.signer,
                cause: None,
            }
        }
        Err(e) => ItemCheck {
            verdict: Some(Verdict::Corrupt),
            signer: None,
            cause: Some(e.to_string()),
        },
    }
}
