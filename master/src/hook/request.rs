//! The lines `guix-daemon` writes to its build hook (spec §2.1, §2.3) and
//! the hook's arguments (§1.3), parsed with explicit limits.

use offload_core::store_path::{StoreDir, StorePath};

/// Longest request line read (a `.drv` path and its features).
pub const MAX_REQUEST_LINE: u64 = 64 << 10;
/// Longest line of paths after `# accept` (the whole input closure).
pub const MAX_PATHS_LINE: u64 = 64 << 20;
/// Most paths on one such line.
pub const MAX_PATHS: usize = 1 << 20;
/// Most required features.
const MAX_FEATURES: usize = 64;

/// Why a line was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Not `L SYSTEM DRV FEATURES`.
    #[error("invalid request line: {0:?}")]
    Request(String),
    /// A path of the two lines after `# accept` is not a store path.
    #[error("invalid store path {path:?} after accept: {why}")]
    Path {
        /// The token.
        path: String,
        /// Why.
        why: String,
    },
    /// Too many paths on one line.
    #[error("more than {MAX_PATHS} paths on one line")]
    TooMany,
}

/// One request: may the hook build this derivation?
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildRequest {
    /// Whether the daemon has a local build slot free (`1`).
    pub local_slot_free: bool,
    /// The derivation's system.
    pub system: String,
    /// The `.drv` path.
    pub drv: StorePath,
    /// Its `requiredSystemFeatures`.
    pub features: Vec<String>,
}

fn system_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Parse `L SYSTEM DRV FEATURES` (the line without its `\n`; with no
/// features the line ends in a space).
pub fn parse_request(line: &str, dir: &StoreDir) -> Result<BuildRequest, Error> {
    let bad = || Error::Request(line.to_owned());
    let mut fields = line.splitn(4, ' ');
    let local_slot_free = match fields.next() {
        Some("1") => true,
        Some("0") => false,
        _ => return Err(bad()),
    };
    let system = fields.next().filter(|s| system_ok(s)).ok_or_else(bad)?;
    let drv = fields.next().ok_or_else(bad)?;
    if !drv.ends_with(".drv") {
        return Err(bad());
    }
    let drv = StorePath::parse_in(dir, drv).map_err(|_| bad())?;
    let rest = fields.next().unwrap_or("");
    if rest.contains(' ') {
        return Err(bad());
    }
    let features: Vec<String> = rest
        .split(',')
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect();
    if features.len() > MAX_FEATURES
        || features
            .iter()
            .any(|f| offload_core::store_path::check_name(f).is_err())
    {
        return Err(bad());
    }
    Ok(BuildRequest {
        local_slot_free,
        system: system.to_owned(),
        drv,
        features,
    })
}

/// Parse one of the two lines after `# accept`: store paths separated by
/// white space (each followed by a space).
pub fn parse_paths(line: &str, dir: &StoreDir) -> Result<Vec<StorePath>, Error> {
    let mut out = Vec::new();
    for token in line.split_ascii_whitespace() {
        if out.len() >= MAX_PATHS {
            return Err(Error::TooMany);
        }
        out.push(StorePath::parse_in(dir, token).map_err(|e| Error::Path {
            path: token.to_owned(),
            why: e.to_string(),
        })?);
    }
    Ok(out)
}

/// `PRINT_BUILD_TRACE`: `1` or `true` (the 2025 daemon prints a C++ bool).
pub fn trace_flag(arg: &str) -> bool {
    matches!(arg, "1" | "true")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> StoreDir {
        StoreDir::default()
    }

    const DRV: &str = "/gnu/store/w6jxszsn4s15pw6z03bxc8rkivkrqdmv-hookB-plain.drv";

    #[test]
    fn request_lines_as_the_daemon_writes_them() {
        // From the transcript of a real guix-daemon: no features → a
        // trailing space; features joined with commas.
        let r = parse_request(&format!("0 x86_64-linux {DRV} "), &dir()).unwrap();
        assert!(!r.local_slot_free);
        assert_eq!(r.system, "x86_64-linux");
        assert_eq!(r.drv.to_string(), DRV);
        assert!(r.features.is_empty());
        let r = parse_request(&format!("1 aarch64-linux {DRV} kvm,big-parallel"), &dir()).unwrap();
        assert!(r.local_slot_free);
        assert_eq!(r.features, ["kvm", "big-parallel"]);
        // Without the trailing space too.
        assert!(parse_request(&format!("1 x86_64-linux {DRV}"), &dir()).is_ok());
    }

    #[test]
    fn malformed_requests_are_refused_with_the_line() {
        for line in [
            "",
            "2 x86_64-linux /gnu/store/w6jxszsn4s15pw6z03bxc8rkivkrqdmv-hookB-plain.drv ",
            "1 X86 /gnu/store/w6jxszsn4s15pw6z03bxc8rkivkrqdmv-hookB-plain.drv ",
            "1 x86_64-linux /gnu/store/w6jxszsn4s15pw6z03bxc8rkivkrqdmv-hookB-plain ",
            "1 x86_64-linux /nix/store/w6jxszsn4s15pw6z03bxc8rkivkrqdmv-hookB-plain.drv ",
            "1 x86_64-linux /gnu/store/w6jxszsn4s15pw6z03bxc8rkivkrqdmv-hookB-plain.drv a b",
            "1 x86_64-linux /gnu/store/w6jxszsn4s15pw6z03bxc8rkivkrqdmv-hookB-plain.drv a/b",
        ] {
            assert_eq!(
                parse_request(line, &dir()),
                Err(Error::Request(line.to_owned())),
                "{line:?}"
            );
        }
    }

    #[test]
    fn path_lines_split_on_white_space() {
        let line = format!("/gnu/store/0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-dep {DRV} ");
        let paths = parse_paths(&line, &dir()).unwrap();
        assert_eq!(paths.len(), 2);
        assert!(parse_paths(" ", &dir()).unwrap().is_empty());
        assert!(matches!(
            parse_paths("/gnu/store/x ", &dir()),
            Err(Error::Path { .. })
        ));
    }

    #[test]
    fn the_trace_flag_accepts_both_spellings() {
        assert!(trace_flag("1") && trace_flag("true"));
        assert!(!trace_flag("0") && !trace_flag("false") && !trace_flag("yes"));
    }
}
