//! The DNS-SD schema agents advertise (design overview §4).
//!
//! Service type `_guix-offload._udp` (QUIC is UDP), one instance per agent,
//! and a subtype per system (`_x86_64-linux._sub._guix-offload._udp`). TXT
//! entries, all ASCII:
//!
//! ```text
//! txtvers=1  proto=1
//! systems=x86_64-linux,i686-linux    features=kvm,big-parallel   (may be empty)
//! speed=2.5  slots=4  free=3  load=0.25  disk=<free store bytes>
//! key=<52-char nix-base32 fingerprint of the signing key>
//! store=/gnu/store   [ssh=USER@PORT]   [draining=1]   [stopping=1]
//! ```
//!
//! Discovery is untrusted input: [`Txt::decode`] checks every value against
//! the limits below and rejects the record with the key that is wrong;
//! unknown keys are ignored (newer agents may add some). The key
//! fingerprint is only a hint: identity is proven over QUIC.

use std::fmt;

use crate::nixbase32;
use crate::store_path::StoreDir;

/// The service type.
pub const SERVICE_TYPE: &str = "_guix-offload._udp.local.";
/// The TXT schema version this code writes and reads.
pub const TXT_VERSION: &str = "1";
/// The agent↔master protocol version advertised.
pub const PROTO_VERSION: &str = "1";
/// Longest TXT value (a `key=value` string must stay under 255 bytes).
pub const MAX_VALUE_LEN: usize = 200;
/// Most systems one agent advertises.
pub const MAX_SYSTEMS: usize = 8;
/// Most features one agent advertises.
pub const MAX_FEATURES: usize = 24;
/// Most build slots.
pub const MAX_SLOTS: u32 = 4096;

/// What an agent advertises.
#[derive(Clone, Debug, PartialEq)]
pub struct Txt {
    /// Systems it builds for.
    pub systems: Vec<String>,
    /// Features it supports.
    pub features: Vec<String>,
    /// Relative speed.
    pub speed: f64,
    /// Build slots.
    pub slots: u32,
    /// Free build slots now.
    pub free: u32,
    /// Normalized load.
    pub load: f64,
    /// Free bytes in its store.
    pub disk: u64,
    /// Fingerprint of its signing key.
    pub key: String,
    /// Its logical store directory.
    pub store: String,
    /// SSH fallback: user and port.
    pub ssh: Option<(String, u16)>,
    /// Finishing work before shutting down.
    pub draining: bool,
    /// Shutting down now: the goodbye that follows is a clean stop.
    pub stopping: bool,
}

/// A TXT record that does not follow the schema.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("TXT entry `{key}`: {problem}")]
pub struct TxtError {
    /// The offending key.
    pub key: &'static str,
    /// What is wrong.
    pub problem: String,
}

fn bad(key: &'static str, problem: impl fmt::Display) -> TxtError {
    TxtError {
        key,
        problem: problem.to_string(),
    }
}

fn is_system_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
}

fn is_feature_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.+".contains(&b)
}

fn list(
    key: &'static str,
    value: &str,
    max: usize,
    ok: fn(u8) -> bool,
) -> Result<Vec<String>, TxtError> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    let items: Vec<String> = value.split(',').map(str::to_owned).collect();
    if items.len() > max {
        return Err(bad(key, format!("more than {max} entries")));
    }
    if let Some(item) = items
        .iter()
        .find(|i| i.is_empty() || i.len() > 64 || !i.bytes().all(ok))
    {
        return Err(bad(key, format!("invalid entry {item:?}")));
    }
    Ok(items)
}

fn number<T: std::str::FromStr>(key: &'static str, value: &str) -> Result<T, TxtError> {
    value
        .parse()
        .map_err(|_| bad(key, format!("not a number: {value:?}")))
}

impl Txt {
    /// The TXT entries, in schema order.
    pub fn encode(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            ("txtvers", TXT_VERSION.to_owned()),
            ("proto", PROTO_VERSION.to_owned()),
            ("systems", self.systems.join(",")),
            ("features", self.features.join(",")),
            ("speed", format!("{}", (self.speed * 100.0).round() / 100.0)),
            ("slots", self.slots.to_string()),
            ("free", self.free.to_string()),
            ("load", format!("{:.2}", self.load)),
            ("disk", self.disk.to_string()),
            ("key", self.key.clone()),
            ("store", self.store.clone()),
        ];
        if let Some((user, port)) = &self.ssh {
            out.push(("ssh", format!("{user}@{port}")));
        }
        if self.draining {
            out.push(("draining", "1".to_owned()));
        }
        if self.stopping {
            out.push(("stopping", "1".to_owned()));
        }
        out
    }

    /// Read and check a TXT record given as key/value pairs.
    pub fn decode<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, TxtError> {
        let mut get = std::collections::HashMap::new();
        for (k, v) in entries {
            if v.len() > MAX_VALUE_LEN {
                return Err(bad(
                    "txt",
                    format!("value of `{k}` longer than {MAX_VALUE_LEN} bytes"),
                ));
            }
            get.entry(k.to_ascii_lowercase()).or_insert(v);
        }
        let required = |key: &'static str| get.get(key).copied().ok_or_else(|| bad(key, "missing"));
        if required("txtvers")? != TXT_VERSION {
            return Err(bad(
                "txtvers",
                format!(
                    "unsupported version {:?} (this master reads {TXT_VERSION})",
                    required("txtvers")?
                ),
            ));
        }
        if required("proto")? != PROTO_VERSION {
            return Err(bad(
                "proto",
                format!(
                    "unsupported protocol {:?} (this master speaks {PROTO_VERSION})",
                    required("proto")?
                ),
            ));
        }
        let systems = list("systems", required("systems")?, MAX_SYSTEMS, is_system_char)?;
        if systems.is_empty() {
            return Err(bad("systems", "empty"));
        }
        let features = list(
            "features",
            get.get("features").copied().unwrap_or(""),
            MAX_FEATURES,
            is_feature_char,
        )?;
        let speed: f64 = number("speed", required("speed")?)?;
        if !(speed > 0.0 && speed <= 1e4) {
            return Err(bad("speed", format!("{speed} is not in (0, 10000]")));
        }
        let slots: u32 = number("slots", required("slots")?)?;
        if slots == 0 || slots > MAX_SLOTS {
            return Err(bad("slots", format!("{slots} is not in 1..={MAX_SLOTS}")));
        }
        let free: u32 = number("free", required("free")?)?;
        if free > slots {
            return Err(bad("free", format!("{free} free slots of {slots}")));
        }
        let load: f64 = number("load", required("load")?)?;
        if !(0.0..=1000.0).contains(&load) {
            return Err(bad("load", format!("{load} is not in [0, 1000]")));
        }
        let disk: u64 = number("disk", required("disk")?)?;
        let key = required("key")?;
        if key.len() != nixbase32::encoded_len(32) || !key.bytes().all(nixbase32::is_char) {
            return Err(bad("key", "not a 52-character nix-base32 fingerprint"));
        }
        let store = required("store")?;
        StoreDir::new(store).map_err(|e| bad("store", e))?;
        let ssh = match get.get("ssh") {
            None => None,
            Some(v) => {
                let (user, port) = v
                    .rsplit_once('@')
                    .ok_or_else(|| bad("ssh", "expected USER@PORT"))?;
                if user.is_empty()
                    || user.len() > 32
                    || !user
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                {
                    return Err(bad("ssh", format!("invalid user {user:?}")));
                }
                let port: u16 = number("ssh", port)?;
                if port == 0 {
                    return Err(bad("ssh", "port 0"));
                }
                Some((user.to_owned(), port))
            }
        };
        let draining = match get.get("draining").copied() {
            None | Some("0") => false,
            Some("1") => true,
            Some(other) => return Err(bad("draining", format!("expected 0 or 1, not {other:?}"))),
        };
        let stopping = match get.get("stopping").copied() {
            None | Some("0") => false,
            Some("1") => true,
            Some(other) => return Err(bad("stopping", format!("expected 0 or 1, not {other:?}"))),
        };
        Ok(Self {
            systems,
            features,
            speed,
            slots,
            free,
            load,
            disk,
            key: key.to_owned(),
            store: store.to_owned(),
            ssh,
            draining,
            stopping,
        })
    }
}

/// The subtype service name for a system: `_x86_64-linux._sub._guix-offload._udp.local.`.
pub fn subtype(system: &str) -> String {
    format!("_{system}._sub.{SERVICE_TYPE}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Txt {
        Txt {
            systems: vec!["x86_64-linux".into(), "i686-linux".into()],
            features: vec!["kvm".into(), "big-parallel".into()],
            speed: 2.5,
            slots: 4,
            free: 3,
            load: 0.25,
            disk: 12_345_678_901,
            key: "0sxkicspy9kklfnwc4z3dficwx3ll0l7nswh2rs92czxppw3g106".into(),
            store: "/gnu/store".into(),
            ssh: Some(("offload".into(), 22)),
            draining: false,
            stopping: false,
        }
    }

    fn decode(entries: &[(&'static str, String)]) -> Result<Txt, TxtError> {
        Txt::decode(entries.iter().map(|(k, v)| (*k, v.as_str())))
    }

    #[test]
    fn round_trip_and_size() {
        let txt = sample();
        let entries = txt.encode();
        assert_eq!(decode(&entries).unwrap(), txt);
        assert!(entries.iter().all(|(k, v)| k.len() + 1 + v.len() < 255));
        let draining = Txt {
            draining: true,
            ssh: None,
            ..sample()
        };
        assert_eq!(decode(&draining.encode()).unwrap(), draining);
        assert_eq!(
            subtype("x86_64-linux"),
            "_x86_64-linux._sub._guix-offload._udp.local."
        );
    }

    #[test]
    fn rejects_values_outside_the_schema() {
        let cases: &[(&'static str, &str, &str)] = &[
            ("txtvers", "2", "unsupported version"),
            ("systems", "", "empty"),
            ("systems", "X86;rm -rf", "invalid entry"),
            ("speed", "0", "not in (0, 10000]"),
            ("speed", "NaN", "not in"),
            ("slots", "0", "not in 1..=4096"),
            ("free", "9", "free slots of 4"),
            ("load", "-1", "not in [0, 1000]"),
            ("disk", "-5", "not a number"),
            ("key", "short", "fingerprint"),
            ("store", "relative", "store directory"),
            ("ssh", "root", "USER@PORT"),
            ("ssh", "a b@22", "invalid user"),
            ("draining", "yes", "expected 0 or 1"),
        ];
        for (key, value, problem) in cases {
            let mut entries = sample().encode();
            entries.retain(|(k, _)| k != key);
            entries.push((key, (*value).to_owned()));
            let err = decode(&entries).unwrap_err();
            assert_eq!(err.key, *key, "{key}={value}: {err}");
            assert!(err.to_string().contains(problem), "{key}={value}: {err}");
        }
        let mut long = sample().encode();
        long.push(("note", "x".repeat(201)));
        assert!(decode(&long).is_err());
        let mut missing = sample().encode();
        missing.retain(|(k, _)| *k != "key");
        assert_eq!(decode(&missing).unwrap_err().key, "key");
        // Unknown keys are ignored.
        let mut extra = sample().encode();
        extra.push(("future", "whatever".into()));
        assert_eq!(decode(&extra).unwrap(), sample());
    }
}
