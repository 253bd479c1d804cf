//! A store's SQLite database, in the Guix schema (version 7) or the Nix 2.8
//! schema (version 10), detected from its columns.
//!
//! Registration follows the daemons (`guix-offload.md` §6.5, Nix's
//! `registerValidPaths`): in one immediate transaction, update-or-insert
//! the `ValidPaths` row (hash `sha256:<hex>`, NULL for no deriver and for a
//! zero size), `INSERT OR REPLACE` the `Refs` rows by path id — references
//! must already be valid — and, for a `.drv`, its `DerivationOutputs`.
//! WAL mode; a busy database is retried with a random back-off.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use offload_core::hex;
use offload_core::store_path::StorePath;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::info::PathInfo;

/// The Guix schema, also used for embedded stores.
const GUIX_SCHEMA: &str = include_str!("schema.sql");
/// What Guix writes to `db/schema`.
pub const GUIX_SCHEMA_VERSION: &str = "7";
/// How long to keep retrying a busy database.
const BUSY_LIMIT: Duration = Duration::from_secs(600);

/// Which daemon's schema a database has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// Guix (and embedded stores): no `ultimate`, `sigs`, `ca` columns.
    Guix,
    /// Nix 2.x.
    Nix,
}

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite failed.
    #[error("{db}: {source}")]
    Sqlite {
        /// The database file.
        db: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
    /// There is no database at this path.
    #[error(
        "no store database at {}: name the store's state directory, e.g. --store local:/var/guix (Guix) or --store local:/nix/var/nix (Nix)",
        .0.display()
    )]
    Missing(PathBuf),
    /// The file is not a store database.
    #[error("{0}: not a Guix or Nix store database (no ValidPaths table)")]
    NotAStore(PathBuf),
    /// A reference is not registered.
    #[error(
        "cannot register {path}: its reference {reference} is not valid (register the closure first)"
    )]
    MissingReference {
        /// The item.
        path: String,
        /// The missing reference.
        reference: String,
    },
    /// Writing the schema file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A row that does not parse.
    #[error("{db}: corrupt row for {path}: {why}")]
    Corrupt {
        /// The database file.
        db: PathBuf,
        /// The item.
        path: String,
        /// What is wrong.
        why: String,
    },
}

/// What to record for one item.
#[derive(Clone, Debug)]
pub struct Registration {
    /// Path, deriver, NAR hash and size, references, registration time.
    pub info: PathInfo,
    /// For a `.drv`: its outputs by name.
    pub drv_outputs: Vec<(String, String)>,
}

/// An open store database.
///
/// Shared by the threads and tasks of one process (an agent imports and
/// builds for several masters at once): the connection is behind a mutex,
/// held for one query or one write transaction.
pub struct Db {
    conn: Mutex<Connection>,
    flavour: Flavour,
    file: PathBuf,
}

impl Db {
    /// Open an existing database (a daemon's).
    pub fn open(file: &Path) -> Result<Self, Error> {
        if !file.is_file() {
            return Err(Error::Missing(file.to_owned()));
        }
        let conn = Connection::open_with_flags(
            file,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql(file))?;
        Self::setup(conn, file)
    }

    /// Open the database of an embedded store under `db_dir`, creating it
    /// (Guix schema, version file `7`) if needed.
    pub fn open_or_create(db_dir: &Path) -> Result<Self, Error> {
        let file = db_dir.join("db.sqlite");
        std::fs::create_dir_all(db_dir).map_err(|source| Error::Io {
            path: db_dir.to_owned(),
            source,
        })?;
        let conn = Connection::open(&file).map_err(sql(&file))?;
        conn.busy_timeout(Duration::from_secs(60))
            .map_err(sql(&file))?;
        conn.execute_batch(GUIX_SCHEMA).map_err(sql(&file))?;
        let schema = db_dir.join("schema");
        if !schema.exists() {
            offload_files::atomic::write_file(&schema, GUIX_SCHEMA_VERSION.as_bytes(), 0o644)
                .map_err(|source| Error::Io {
                    path: schema,
                    source,
                })?;
        }
        Self::setup(conn, &file)
    }

    fn setup(conn: Connection, file: &Path) -> Result<Self, Error> {
        // The daemons wait up to an hour; registration retries on its own
        // too, so a short wait per attempt keeps the back-off in charge.
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(sql(file))?;
        conn.pragma_update(None, "foreign_keys", 1)
            .map_err(sql(file))?;
        conn.pragma_update(None, "synchronous", "normal")
            .map_err(sql(file))?;
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .map_err(sql(file))?;
        if !mode.eq_ignore_ascii_case("wal") {
            conn.pragma_update(None, "journal_mode", "wal")
                .map_err(sql(file))?;
        }
        let mut columns = Vec::new();
        {
            let mut stmt = conn
                .prepare("select name from pragma_table_info('ValidPaths')")
                .map_err(sql(file))?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(sql(file))?;
            for row in rows {
                columns.push(row.map_err(sql(file))?);
            }
        }
        if columns.is_empty() {
            return Err(Error::NotAStore(file.to_owned()));
        }
        let flavour = if columns.iter().any(|c| c == "ultimate") {
            Flavour::Nix
        } else {
            Flavour::Guix
        };
        Ok(Self {
            conn: Mutex::new(conn),
            flavour,
            file: file.to_owned(),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic in another thread leaves the connection usable: SQLite
        // rolls back an unfinished transaction when it is dropped.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The schema found.
    pub fn flavour(&self) -> Flavour {
        self.flavour
    }

    /// The database file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Some registered item, if any: to check that the database belongs
    /// to the store directory it is used with.
    pub fn any_path(&self) -> Result<Option<String>, Error> {
        self.conn()
            .query_row("select path from ValidPaths limit 1", [], |r| r.get(0))
            .optional()
            .map_err(sql(&self.file))
    }

    /// Is `path` registered?
    pub fn is_valid(&self, path: &StorePath) -> Result<bool, Error> {
        path_id(&self.conn(), &path.to_string())
            .map(|id| id.is_some())
            .map_err(sql(&self.file))
    }

    /// What is registered for `path`.
    pub fn path_info(&self, path: &StorePath) -> Result<Option<PathInfo>, Error> {
        let printed = path.to_string();
        let conn = self.conn();
        let row = conn
            .prepare_cached(
                "select id, hash, registrationTime, deriver, narSize from ValidPaths where path = ?1",
            )
            .and_then(|mut s| {
                s.query_row([&printed], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                    ))
                })
                .optional()
            })
            .map_err(sql(&self.file))?;
        let Some((id, hash, time, deriver, size)) = row else {
            return Ok(None);
        };
        let corrupt = |why: String| Error::Corrupt {
            db: self.file.clone(),
            path: printed.clone(),
            why,
        };
        let nar_hash = hash
            .strip_prefix("sha256:")
            .and_then(hex::decode_hash)
            .ok_or_else(|| corrupt(format!("hash {hash:?} is not sha256:<hex>")))?;
        let deriver = match deriver.filter(|d| !d.is_empty()) {
            None => None,
            Some(d) => Some(StorePath::parse(&d).map_err(|e| corrupt(e.to_string()))?),
        };
        let mut references = Vec::new();
        {
            let mut stmt = conn
                .prepare_cached(
                    "select path from Refs join ValidPaths on reference = id where referrer = ?1",
                )
                .map_err(sql(&self.file))?;
            let rows = stmt
                .query_map([id], |r| r.get::<_, String>(0))
                .map_err(sql(&self.file))?;
            for row in rows {
                let r = row.map_err(sql(&self.file))?;
                references.push(StorePath::parse(&r).map_err(|e| corrupt(e.to_string()))?);
            }
        }
        references.sort();
        Ok(Some(PathInfo {
            path: path.clone(),
            deriver,
            nar_hash,
            references,
            registration_time: u64::try_from(time).unwrap_or(0),
            nar_size: size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
        }))
    }

    /// Run `f` once in an immediate transaction: the database's write lock
    /// is taken first (waiting, with a random back-off, while another
    /// writer has it), so that nothing inside can find it busy and `f` —
    /// which may change files — never runs twice. Rolled back if `f` fails.
    ///
    /// `f` must not call the other methods of this `Db` (they would wait
    /// for the transaction's own lock): it has `Tx`.
    pub fn write<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T, Error>) -> Result<T, Error> {
        let started = Instant::now();
        let mut attempt = 0u32;
        let mut conn = self.conn();
        let tx = loop {
            match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
                Ok(tx) => break tx,
                Err(e) if is_busy(&e) && started.elapsed() < BUSY_LIMIT => {
                    attempt += 1;
                    if attempt % 50 == 1 {
                        tracing::warn!("{} is busy; waiting for it", self.file.display());
                    }
                    std::thread::sleep(Duration::from_millis(random_below(100)));
                }
                Err(e) => return Err(sql(&self.file)(e)),
            }
        };
        let out = f(&Tx {
            tx: &tx,
            db: &self.file,
        })?;
        tx.commit().map_err(sql(&self.file))?;
        Ok(out)
    }
}

/// An open write transaction.
pub struct Tx<'a> {
    tx: &'a rusqlite::Transaction<'a>,
    db: &'a Path,
}

impl Tx<'_> {
    /// The row id of `path`, if registered.
    pub fn path_id(&self, path: &str) -> Result<Option<i64>, Error> {
        path_id(self.tx, path).map_err(sql(self.db))
    }

    /// Record `reg`: update-or-insert its row, then its references and
    /// derivation outputs. References other than itself must be valid.
    pub fn register(&self, reg: &Registration) -> Result<(), Error> {
        let info = &reg.info;
        let path = info.path.to_string();
        let hash = format!("sha256:{}", hex::encode_lower(&info.nar_hash));
        let deriver = info.deriver.as_ref().map(ToString::to_string);
        let size = (info.nar_size != 0).then_some(info.nar_size as i64);
        let time = info.registration_time as i64;
        let id = match self.path_id(&path)? {
            Some(id) => {
                self.tx
                    .prepare_cached(
                        "update ValidPaths set hash = ?1, registrationTime = ?2, deriver = ?3, narSize = ?4 where id = ?5",
                    )
                    .and_then(|mut s| s.execute(params![hash, time, deriver, size, id]))
                    .map_err(sql(self.db))?;
                id
            }
            None => {
                // The Nix schema's extra columns (ultimate, sigs, ca) stay
                // NULL, as for items Nix imports.
                let sql_text = "insert into ValidPaths (path, hash, registrationTime, deriver, narSize) values (?1, ?2, ?3, ?4, ?5)";
                self.tx
                    .prepare_cached(sql_text)
                    .and_then(|mut s| s.execute(params![path, hash, time, deriver, size]))
                    .map_err(sql(self.db))?;
                self.tx.last_insert_rowid()
            }
        };
        for reference in &info.references {
            let printed = reference.to_string();
            let ref_id = if printed == path {
                id
            } else {
                self.path_id(&printed)?
                    .ok_or_else(|| Error::MissingReference {
                        path: path.clone(),
                        reference: printed.clone(),
                    })?
            };
            self.tx
                .prepare_cached("insert or replace into Refs (referrer, reference) values (?1, ?2)")
                .and_then(|mut s| s.execute(params![id, ref_id]))
                .map_err(sql(self.db))?;
        }
        for (name, out) in &reg.drv_outputs {
            self.tx
                .prepare_cached(
                    "insert or replace into DerivationOutputs (drv, id, path) values (?1, ?2, ?3)",
                )
                .and_then(|mut s| s.execute(params![id, name, out]))
                .map_err(sql(self.db))?;
        }
        Ok(())
    }
}

/// The row id of `path` in `ValidPaths`.
fn path_id(conn: &Connection, path: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("select id from ValidPaths where path = ?1")
        .and_then(|mut s| s.query_row([path], |r| r.get(0)).optional())
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b) % n
}

fn sql(file: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |source| Error::Sqlite {
        db: file.to_owned(),
        source,
    }
}
