//! Loading `/etc/guix/machines.scm`: natively, with Guile, or natively with
//! a fall back to Guile for forms the native evaluator does not support.
//!
//! Outcomes follow Guix (spec guix-offload.md §4): a missing file means no
//! machines; a value that is not a list of build machines is a warning and
//! no machines; syntax and evaluation errors are `FILE:LINE:COL: message`.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use offload_files::file_key::{FileKey, file_key};

use super::record::{BuildMachine, FieldValue, Fields, Location};
use super::scheme::eval::{EvalError, Evaluator, Record, Value};
use super::scheme::read::{self, Datum, Kind};

/// The Guile side: a `build-machine` record with Guix's fields and defaults,
/// and a driver that loads a file as Guix does and prints the records.
const GUILE_MODULE: &str = include_str!("offload-machines.scm");

/// Which evaluator reads machines.scm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum EvaluatorChoice {
    /// The built-in evaluator only.
    Native,
    /// Guile only (needs `guile` on the PATH).
    Guile,
    /// Built-in, and Guile for forms it does not support.
    #[default]
    Auto,
}

/// The machines a file defines, and the warnings it raised.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Loaded {
    /// The machines, in file order.
    pub machines: Vec<BuildMachine>,
    /// Warnings, ready to print (`FILE:LINE:COL: warning: …`).
    pub warnings: Vec<String>,
}

/// Why a machines file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file exists but cannot be read.
    #[error("failed to open machine file '{file}': {source}")]
    Open {
        /// The file.
        file: String,
        /// The cause.
        source: io::Error,
    },
    /// A syntax or evaluation error at a position.
    #[error("{file}:{line}:{col}: {message}")]
    At {
        /// The file.
        file: String,
        /// Line, from 1.
        line: u32,
        /// Column, from 1.
        col: u32,
        /// What is wrong.
        message: String,
    },
    /// A syntax error found by the built-in reader.
    #[error("{file}:{line}:{col}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// Line, from 1.
        line: u32,
        /// Column, from 1.
        col: u32,
        /// What is wrong.
        message: String,
    },
    /// An error without a position (from Guile).
    #[error("{file}: {message}")]
    File {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The native evaluator cannot read the file and Guile is not used.
    #[error(
        "{file}:{line}:{col}: {what} (unsupported by the built-in evaluator; run with `--evaluator guile` to evaluate the file with Guile, or install guile-3.0 for the automatic fall-back)"
    )]
    Unsupported {
        /// The file.
        file: String,
        /// Line.
        line: u32,
        /// Column.
        col: u32,
        /// The form.
        what: String,
    },
    /// Guile could not be run.
    #[error("cannot run guile for '{file}': {message}")]
    Guile {
        /// The file.
        file: String,
        /// The cause.
        message: String,
    },
}

/// Load `file` with the chosen evaluator.
pub fn load(file: &Path, choice: EvaluatorChoice) -> Result<Loaded, LoadError> {
    let name = file.display().to_string();
    let source = match read_source(file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::default()),
        Err(e) if e.kind() == io::ErrorKind::FileTooLarge => {
            return Err(LoadError::File {
                file: name,
                message: format!(
                    "larger than {} bytes; is it a machines file?",
                    read::MAX_SOURCE
                ),
            });
        }
        Err(source) => return Err(LoadError::Open { file: name, source }),
    };
    match choice {
        EvaluatorChoice::Guile => load_guile(file),
        EvaluatorChoice::Auto => match load_native(&name, &source) {
            // Forms the built-in evaluator lacks, and syntax its reader does
            // not know (Guile may), go to Guile, which has the last word.
            Err(LoadError::Unsupported {
                line, col, what, ..
            }) if find_guile().is_some() => {
                tracing::debug!(file = %name, %line, %col, %what, "handing machines file to Guile");
                load_guile(file)
            }
            Err(LoadError::Syntax { .. }) if find_guile().is_some() => load_guile(file),
            Err(LoadError::Syntax {
                file,
                line,
                col,
                message,
            }) => Err(LoadError::At {
                file,
                line,
                col,
                message,
            }),
            other => other,
        },
        EvaluatorChoice::Native => load_native(&name, &source).map_err(|e| match e {
            LoadError::Syntax {
                file,
                line,
                col,
                message,
            } => LoadError::At {
                file,
                line,
                col,
                message,
            },
            other => other,
        }),
    }
}

/// The daemon user's default SSH key: `~/.ssh/id_rsa` of the current user
/// from the password database, as Guix computes it.
pub fn default_private_key() -> String {
    use uzers::os::unix::UserExt;
    // getpwuid_r: NSS (LDAP, systemd's dynamic users) as well as /etc/passwd.
    let home = uzers::get_user_by_uid(rustix::process::getuid().as_raw())
        .map(|u| u.home_dir().display().to_string());
    let home = home
        .or_else(|| std::env::var("HOME").ok())
        .unwrap_or_else(|| "/".into());
    format!("{home}/.ssh/id_rsa")
}

fn load_native(name: &str, source: &[u8]) -> Result<Loaded, LoadError> {
    let text = String::from_utf8_lossy(source);
    let forms = read::read_all(&text).map_err(|e| LoadError::Syntax {
        file: name.into(),
        line: e.pos.line,
        col: e.pos.col,
        message: e.message,
    })?;
    let evaluator = Evaluator::new(
        name,
        &default_private_key(),
        Box::new(|var| std::env::var(var).ok()),
    );
    let value = evaluator.run(&forms).map_err(|e| match e {
        EvalError::Unsupported { pos, what } => LoadError::Unsupported {
            file: name.into(),
            line: pos.line,
            col: pos.col,
            what,
        },
        EvalError::Invalid { pos, message } => LoadError::At {
            file: name.into(),
            line: pos.line,
            col: pos.col,
            message,
        },
    })?;
    let records: Option<Vec<&Record>> = match &value {
        Value::List(items) => items
            .iter()
            .map(|v| {
                if let Value::Machine(m) = v {
                    Some(m.as_ref())
                } else {
                    None
                }
            })
            .collect(),
        _ => None,
    };
    let Some(records) = records else {
        return Ok(Loaded {
            machines: Vec::new(),
            warnings: vec![not_a_list_warning(name)],
        });
    };
    // Guix warns when it reads a returned machine's systems.
    let mut warnings = Vec::new();
    for r in &records {
        let at = &r.machine.location;
        if r.fields.uses_deprecated_system() {
            warnings.push(format!(
                "{at}: warning: The 'system' field is deprecated, please use 'systems' instead."
            ));
        }
        if r.fields.lacks_systems() {
            warnings.push(format!("{at}: warning: machine '{}' has neither 'systems' nor 'system'; it matches no build", r.machine.name));
        }
    }
    Ok(Loaded {
        machines: records.iter().map(|r| r.machine.clone()).collect(),
        warnings,
    })
}

/// Read a machines file: a regular file of at most `MAX_SOURCE` bytes
/// (never a FIFO or a device that would block or never end).
fn read_source(file: &Path) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking, so opening a FIFO does not wait for a writer.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(file)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    offload_files::bounded::read_at_most(f, read::MAX_SOURCE as u64)
}

/// How long Guile may take to evaluate a machines file.
pub const GUILE_TIMEOUT: Duration = Duration::from_secs(30);

fn not_a_list_warning(name: &str) -> String {
    format!("warning: '{name}' did not return a list of build machines; ignoring it")
}

fn find_guile() -> Option<PathBuf> {
    offload_files::paths::find_program("guile")
}

fn load_guile(file: &Path) -> Result<Loaded, LoadError> {
    let name = file.display().to_string();
    let guile_err = |message: String| LoadError::Guile {
        file: name.clone(),
        message,
    };
    let guile = find_guile()
        .ok_or_else(|| guile_err("guile is not on the PATH (install guile-3.0)".into()))?;
    let dir = tempfile::tempdir().map_err(|e| guile_err(e.to_string()))?;
    let script = dir.path().join("offload-machines.scm");
    std::fs::write(&script, GUILE_MODULE).map_err(|e| guile_err(e.to_string()))?;
    let mut child = Command::new(guile)
        .arg("--no-auto-compile")
        .arg("-s")
        .arg(&script)
        .arg("eval")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| guile_err(e.to_string()))?;
    // Read both pipes in threads so a chatty Guile cannot block on them.
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(guile_err("no pipes to guile".into()));
    };
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ =
            std::io::Read::read_to_end(&mut std::io::Read::take(&mut stdout, 16 << 20), &mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ =
            std::io::Read::read_to_end(&mut std::io::Read::take(&mut stderr, 1 << 20), &mut buf);
        buf
    });
    let Some(status) = wait_timeout::ChildExt::wait_timeout(&mut child, GUILE_TIMEOUT)
        .map_err(|e| guile_err(e.to_string()))?
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(guile_err(format!(
            "guile did not finish within {} s (does the file loop or wait?)",
            GUILE_TIMEOUT.as_secs()
        )));
    };
    let out = std::process::Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(parse_guile_error(&name, &stderr));
    }
    let warnings = stderr
        .lines()
        .filter(|l| l.contains("warning:"))
        .map(str::to_owned)
        .collect();
    let text = String::from_utf8_lossy(&out.stdout);
    let machines = parse_guile_output(&text).map_err(|message| {
        guile_err(format!(
            "unexpected output from the Guile driver: {message}"
        ))
    })?;
    Ok(Loaded { machines, warnings })
}

/// `error: FILE:LINE:COL: MESSAGE` or `error: FILE: MESSAGE` (the driver's format).
fn parse_guile_error(name: &str, stderr: &str) -> LoadError {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or(stderr.trim());
    if let Some(rest) = line.strip_prefix(name).and_then(|r| r.strip_prefix(':')) {
        let mut parts = rest.splitn(3, ':');
        if let (Some(l), Some(c), Some(msg)) = (parts.next(), parts.next(), parts.next())
            && let (Ok(l), Ok(c)) = (l.trim().parse(), c.trim().parse())
        {
            return LoadError::At {
                file: name.into(),
                line: l,
                col: c,
                message: msg.trim().to_owned(),
            };
        }
        return LoadError::File {
            file: name.into(),
            message: rest.trim().to_owned(),
        };
    }
    LoadError::File {
        file: name.into(),
        message: line.trim().to_owned(),
    }
}

/// `(machines (machine (FIELD VALUE) … (location "FILE" LINE COL)) …)`
fn parse_guile_output(text: &str) -> Result<Vec<BuildMachine>, String> {
    let forms = read::read_all(text).map_err(|e| e.to_string())?;
    let [
        Datum {
            kind: Kind::List(items),
            ..
        },
    ] = forms.as_slice()
    else {
        return Err("not one list".into());
    };
    let mut machines = Vec::new();
    for item in items.iter().skip(1) {
        let Kind::List(parts) = &item.kind else {
            return Err("machine is not a list".into());
        };
        let mut fields = Fields::default();
        let mut location = None;
        for part in parts.iter().skip(1) {
            let Kind::List(kv) = &part.kind else {
                return Err("field is not a list".into());
            };
            match kv.as_slice() {
                [
                    Datum {
                        kind: Kind::Symbol(k),
                        ..
                    },
                    Datum {
                        kind: Kind::Str(f), ..
                    },
                    Datum {
                        kind: Kind::Int(l), ..
                    },
                    Datum {
                        kind: Kind::Int(c), ..
                    },
                ] if k == "location" => {
                    location = Some(Location {
                        file: f.clone(),
                        line: u32::try_from(*l).unwrap_or(0),
                        col: u32::try_from(*c).unwrap_or(0) + 1,
                    });
                }
                [
                    Datum {
                        kind: Kind::Symbol(k),
                        ..
                    },
                    v,
                ] => {
                    let field = Fields::canonical(k).ok_or_else(|| format!("unknown field {k}"))?;
                    fields.set(field, datum_field(v)?);
                }
                _ => return Err("bad field".into()),
            }
        }
        let location = location.ok_or("machine without location")?;
        let m = fields.build(location, "").map_err(|e| e.to_string())?;
        machines.push(m);
    }
    Ok(machines)
}

fn datum_field(d: &Datum) -> Result<FieldValue, String> {
    Ok(match &d.kind {
        Kind::Bool(false) => FieldValue::False,
        Kind::Bool(true) => FieldValue::True,
        Kind::Int(i) => FieldValue::Int(*i),
        Kind::Real(r) => FieldValue::Real(*r),
        Kind::Str(s) => FieldValue::Str(s.clone()),
        Kind::List(items) => FieldValue::Strings(
            items
                .iter()
                .map(|i| {
                    if let Kind::Str(s) = &i.kind {
                        Ok(s.clone())
                    } else {
                        Err("list of non-strings".to_owned())
                    }
                })
                .collect::<Result<_, _>>()?,
        ),
        other => return Err(format!("unexpected value {other:?}")),
    })
}

impl Cache {
    /// How many times a file was actually evaluated (not served from the cache).
    pub fn evaluations(&self) -> u64 {
        self.evaluations
    }
}

/// Loaded files, keyed by (device, inode, size, mtime): unchanged files are
/// not evaluated again (Guile costs ~100 ms per start).
#[derive(Debug, Default)]
pub struct Cache {
    entries: HashMap<PathBuf, (FileKey, Loaded)>,
    evaluations: u64,
}

impl Cache {
    /// The machines of `file`, from the cache when the file is unchanged.
    pub fn load(&mut self, file: &Path, choice: EvaluatorChoice) -> Result<Loaded, LoadError> {
        let key = file_key(file);
        if let (Some(key), Some((cached, loaded))) = (key, self.entries.get(file))
            && *cached == key
        {
            return Ok(loaded.clone());
        }
        self.evaluations += 1;
        let loaded = load(file, choice)?;
        match key {
            Some(key) => {
                self.entries.insert(file.to_owned(), (key, loaded.clone()));
            }
            None => {
                self.entries.remove(file);
            }
        }
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"(list (build-machine (name "a") (systems (list "x86_64-linux")) (user "u") (host-key "k")))"#;
    const TWO: &str = r#"(list (build-machine (name "a") (systems (list "x86_64-linux")) (user "u") (host-key "k"))
      (build-machine (name "b") (systems (list "x86_64-linux")) (user "u") (host-key "k")))"#;

    #[test]
    fn cache_reevaluates_only_changed_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("machines.scm");
        std::fs::write(&file, ONE).unwrap();
        let mut cache = Cache::default();
        assert_eq!(
            cache
                .load(&file, EvaluatorChoice::Native)
                .unwrap()
                .machines
                .len(),
            1
        );
        assert_eq!(
            cache
                .load(&file, EvaluatorChoice::Native)
                .unwrap()
                .machines
                .len(),
            1
        );
        assert_eq!(
            cache.evaluations(),
            1,
            "unchanged file served from the cache"
        );
        // A new file (new inode, size and mtime) is evaluated again.
        let replacement = dir.path().join("new.scm");
        std::fs::write(&replacement, TWO).unwrap();
        std::fs::rename(&replacement, &file).unwrap();
        assert_eq!(
            cache
                .load(&file, EvaluatorChoice::Native)
                .unwrap()
                .machines
                .len(),
            2
        );
        assert_eq!(cache.evaluations(), 2);
        // A file that disappears means no machines, as in Guix.
        std::fs::remove_file(&file).unwrap();
        assert!(
            cache
                .load(&file, EvaluatorChoice::Native)
                .unwrap()
                .machines
                .is_empty()
        );
    }

    #[test]
    fn missing_file_is_no_machines_and_unreadable_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            load(&dir.path().join("absent.scm"), EvaluatorChoice::Auto).unwrap(),
            Loaded::default()
        );
        let err = load(dir.path(), EvaluatorChoice::Native)
            .unwrap_err()
            .to_string();
        assert!(err.contains("failed to open machine file"), "{err}");
    }
}

#[cfg(test)]
mod special_files {
    use super::*;

    #[test]
    fn a_fifo_is_refused_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("machines.scm");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let err = load(&fifo, EvaluatorChoice::Native)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
