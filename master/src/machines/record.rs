//! The `build-machine` record: Guix 2025's fields and defaults
//! (spec guix-offload.md §3), checked types, and `(inherit …)`.

use std::fmt;

/// Where a record was written: file, 1-based line and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file as given.
    pub file: String,
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub col: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// Default `overload-threshold` (Guix 2025; it was 0.6 in 2022).
pub const DEFAULT_OVERLOAD_THRESHOLD: f64 = 0.8;
/// Default `compression`.
pub const DEFAULT_COMPRESSION: &str = "zlib@openssh.com,zlib";
/// Default `daemon-socket`.
pub const DEFAULT_DAEMON_SOCKET: &str = "/var/guix/daemon-socket/socket";

/// One static build machine, every field resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildMachine {
    /// Host name or address.
    pub name: String,
    /// SSH port.
    pub port: u16,
    /// Systems served: `(or systems (list system))`.
    pub systems: Vec<String>,
    /// SSH user.
    pub user: String,
    /// SSH private key file.
    pub private_key: String,
    /// The server's SSH host key, `TYPE BASE64 [COMMENT]`.
    pub host_key: String,
    /// libssh compression algorithms.
    pub compression: String,
    /// libssh compression level.
    pub compression_level: i64,
    /// Remote daemon socket.
    pub daemon_socket: String,
    /// Normalized load at which the machine counts as overloaded; `None` disables.
    pub overload_threshold: Option<f64>,
    /// Concurrent builds from this master.
    pub parallel_builds: u32,
    /// Relative speed.
    pub speed: f64,
    /// Supported system features.
    pub features: Vec<String>,
    /// Where the record was written.
    pub location: Location,
}

/// Field names in the order Guix declares them (`system` is deprecated).
pub const FIELDS: [&str; 14] = [
    "name",
    "port",
    "systems",
    "system",
    "user",
    "private-key",
    "host-key",
    "compression",
    "compression-level",
    "daemon-socket",
    "overload-threshold",
    "parallel-builds",
    "speed",
    "features",
];

/// Fields without a default.
pub const REQUIRED: [&str; 3] = ["name", "user", "host-key"];

/// A field value as the evaluator hands it over.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue {
    /// `#f`.
    False,
    /// `#t`.
    True,
    /// An exact integer.
    Int(i64),
    /// A real.
    Real(f64),
    /// A string.
    Str(String),
    /// A list of strings.
    Strings(Vec<String>),
    /// Anything else, printed as Scheme would `write` it (for messages).
    Other(String),
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::False => f.write_str("#f"),
            Self::True => f.write_str("#t"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Real(r) => f.write_str(&format_real(*r)),
            Self::Str(s) => f.write_str(&write_string(s)),
            Self::Strings(items) => {
                f.write_str("(")?;
                for (i, s) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    f.write_str(&write_string(s))?;
                }
                f.write_str(")")
            }
            Self::Other(text) => f.write_str(text),
        }
    }
}

/// A real as Guile's `write` prints it: `2.0`, `0.5`, `1.0e21`.
pub fn format_real(r: f64) -> String {
    if r.is_finite() && r.fract() == 0.0 && r.abs() < 1e21 {
        format!("{r:.1}")
    } else if r.is_finite() && r.abs() >= 1e21 {
        let s = format!("{r:e}");
        match s.split_once('e') {
            Some((m, e)) if !m.contains('.') => format!("{m}.0e{e}"),
            Some((m, e)) => format!("{m}e{e}"),
            None => s,
        }
    } else {
        format!("{r}")
    }
}

/// A string as Guile's `write` prints it.
pub fn write_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A field that failed its type check: `FIELD: expected TYPE, got VALUE`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: expected {expected}, got {got}")]
pub struct TypeError {
    /// The field.
    pub field: &'static str,
    /// What it must be.
    pub expected: &'static str,
    /// What it was (Scheme `write` form).
    pub got: String,
}

/// The fields given to one `build-machine` form (after `inherit`), before defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fields {
    values: Vec<(&'static str, FieldValue)>,
}

impl Fields {
    /// The field named `name` in [`FIELDS`], if any.
    pub fn canonical(name: &str) -> Option<&'static str> {
        FIELDS.iter().copied().find(|f| *f == name)
    }

    /// Set (or override) a field.
    pub fn set(&mut self, field: &'static str, value: FieldValue) {
        self.values.retain(|(f, _)| *f != field);
        self.values.push((field, value));
    }

    fn get(&self, field: &str) -> Option<&FieldValue> {
        self.values
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| v)
    }

    /// The fields of an already built machine (for `inherit`).
    pub fn from_machine(m: &BuildMachine) -> Self {
        let mut f = Self::default();
        f.set("name", FieldValue::Str(m.name.clone()));
        f.set("port", FieldValue::Int(i64::from(m.port)));
        f.set("systems", FieldValue::Strings(m.systems.clone()));
        f.set("user", FieldValue::Str(m.user.clone()));
        f.set("private-key", FieldValue::Str(m.private_key.clone()));
        f.set("host-key", FieldValue::Str(m.host_key.clone()));
        f.set("compression", FieldValue::Str(m.compression.clone()));
        f.set("compression-level", FieldValue::Int(m.compression_level));
        f.set("daemon-socket", FieldValue::Str(m.daemon_socket.clone()));
        f.set(
            "overload-threshold",
            m.overload_threshold
                .map_or(FieldValue::False, FieldValue::Real),
        );
        f.set(
            "parallel-builds",
            FieldValue::Int(i64::from(m.parallel_builds)),
        );
        f.set("speed", FieldValue::Real(m.speed));
        f.set("features", FieldValue::Strings(m.features.clone()));
        f
    }

    /// Whether `field` was given a value other than `#f`.
    pub fn is_set(&self, field: &str) -> bool {
        !matches!(self.get(field), None | Some(FieldValue::False))
    }

    /// Whether the systems come from the deprecated `system` field (Guix
    /// warns when it reads them).
    pub fn uses_deprecated_system(&self) -> bool {
        self.is_set("system") && !self.is_set("systems")
    }

    /// Whether neither `systems` nor `system` is set: the machine serves nothing.
    pub fn lacks_systems(&self) -> bool {
        !self.is_set("system") && !self.is_set("systems")
    }

    /// Apply defaults and type checks. `default_private_key` is the daemon
    /// user's `~/.ssh/id_rsa`.
    pub fn build(
        &self,
        location: Location,
        default_private_key: &str,
    ) -> Result<BuildMachine, BuildError> {
        for field in REQUIRED {
            if self.get(field).is_none() {
                return Err(BuildError::Missing(field));
            }
        }
        let string = |field: &'static str, default: Option<&str>| -> Result<String, BuildError> {
            match (self.get(field), default) {
                (None, Some(d)) => Ok(d.to_owned()),
                (Some(FieldValue::Str(s)), _) => Ok(s.clone()),
                (Some(other), _) => Err(type_error(field, "a string", other)),
                (None, None) => Err(BuildError::Missing(field)),
            }
        };
        let int = |field: &'static str,
                   default: i64,
                   min: i64,
                   max: i64,
                   expected: &'static str|
         -> Result<i64, BuildError> {
            match self.get(field) {
                None => Ok(default),
                Some(FieldValue::Int(i)) if (min..=max).contains(i) => Ok(*i),
                Some(other) => Err(type_error(field, expected, other)),
            }
        };
        let strings = |field: &'static str| -> Result<Option<Vec<String>>, BuildError> {
            match self.get(field) {
                None | Some(FieldValue::False) => Ok(None),
                Some(FieldValue::Strings(v)) => Ok(Some(v.clone())),
                Some(other) => Err(type_error(field, "a list of strings", other)),
            }
        };
        // Checked in declaration order, as the Guile driver does.
        let name = string("name", None)?;
        let port =
            u16::try_from(int("port", 22, 1, 65535, "an integer in 1..65535")?).unwrap_or(22);
        let systems = strings("systems")?;
        let system = match self.get("system") {
            None | Some(FieldValue::False) => None,
            Some(FieldValue::Str(s)) => Some(s.clone()),
            Some(other) => return Err(type_error("system", "a string", other)),
        };
        let user = string("user", None)?;
        let private_key = string("private-key", Some(default_private_key))?;
        let host_key = string("host-key", None)?;
        let compression = string("compression", Some(DEFAULT_COMPRESSION))?;
        let compression_level = int("compression-level", 3, i64::MIN, i64::MAX, "an integer")?;
        let daemon_socket = string("daemon-socket", Some(DEFAULT_DAEMON_SOCKET))?;
        let real = |v: &FieldValue| match v {
            FieldValue::Int(i) => Some(*i as f64),
            FieldValue::Real(r) => Some(*r),
            _ => None,
        };
        let overload_threshold = match self.get("overload-threshold") {
            None => Some(DEFAULT_OVERLOAD_THRESHOLD),
            Some(FieldValue::False) => None,
            Some(v) => Some(
                real(v)
                    .filter(|t| (0.0..=1.0).contains(t))
                    .ok_or_else(|| type_error("overload-threshold", "#f or a real in [0,1]", v))?,
            ),
        };
        let parallel_builds = u32::try_from(int(
            "parallel-builds",
            1,
            1,
            i64::from(u32::MAX),
            "a positive integer",
        )?)
        .unwrap_or(1);
        let speed = match self.get("speed") {
            None => 1.0,
            Some(v) => real(v)
                .filter(|s| *s > 0.0 && s.is_finite())
                .ok_or_else(|| type_error("speed", "a positive real", v))?,
        };
        let features = match self.get("features") {
            None => Vec::new(),
            Some(FieldValue::Strings(v)) => v.clone(),
            Some(other) => return Err(type_error("features", "a list of strings", other)),
        };
        let machine = BuildMachine {
            name,
            port,
            systems: systems
                .or_else(|| system.map(|s| vec![s]))
                .unwrap_or_default(),
            user,
            private_key,
            host_key,
            compression,
            compression_level,
            daemon_socket,
            overload_threshold,
            parallel_builds,
            speed,
            features,
            location,
        };
        Ok(machine)
    }
}

fn type_error(field: &'static str, expected: &'static str, got: &FieldValue) -> BuildError {
    BuildError::Type(TypeError {
        field,
        expected,
        got: got.to_string(),
    })
}

/// Why a `build-machine` form does not make a record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A required field is absent.
    #[error("build-machine: missing field initializers ({0})")]
    Missing(&'static str),
    /// A field has the wrong type.
    #[error("build-machine: {0}")]
    Type(TypeError),
}
