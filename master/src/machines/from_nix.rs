//! Nix machines (the `builders` setting, machines files) as pool entries:
//! the host from the store URI (`ssh://user@host`, `ssh-ng://…`), its
//! systems, slots, speed and features, and the features a build must
//! require to go there (Nix's mandatory features).

use super::nix_file::NixMachine;
use super::record::{self, BuildMachine, Location};

/// A Nix machine for the pool, and its mandatory features.
#[derive(Clone, Debug, PartialEq)]
pub struct NixEntry {
    /// The machine.
    pub machine: BuildMachine,
    /// Features a derivation must require to be built there.
    pub mandatory: Vec<String>,
}

/// `user`, `host` and `port` of an `ssh://` or `ssh-ng://` store URI;
/// `None` for other stores (a local or daemon store is not a machine).
fn ssh_target(uri: &str) -> Option<(String, String, u16)> {
    let rest = uri
        .strip_prefix("ssh://")
        .or_else(|| uri.strip_prefix("ssh-ng://"))?;
    let authority = rest.split(['?', '/']).next()?;
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (u.to_owned(), h),
        None => ("root".to_owned(), authority),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()?),
        _ => (hostport, 22),
    };
    (!host.is_empty()).then(|| (user, host.to_owned(), port))
}

/// The pool entries of `machines` (those reached over SSH), with `system`
/// for machines that name none (Nix's default: the local system).
pub fn entries(machines: &[NixMachine], system: &str, file: &str) -> Vec<NixEntry> {
    machines
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let (user, host, port) = ssh_target(&m.uri)?;
            let systems = if m.systems.is_empty() {
                vec![system.to_owned()]
            } else {
                m.systems.clone()
            };
            Some(NixEntry {
                machine: BuildMachine {
                    name: host,
                    port,
                    systems,
                    user,
                    private_key: m.ssh_key.clone().unwrap_or_default(),
                    host_key: m.public_host_key.clone().unwrap_or_default(),
                    compression: record::DEFAULT_COMPRESSION.into(),
                    compression_level: 3,
                    daemon_socket: String::new(),
                    overload_threshold: Some(record::DEFAULT_OVERLOAD_THRESHOLD),
                    parallel_builds: m.max_jobs,
                    speed: m.speed_factor,
                    features: m.supported_features.clone(),
                    location: Location {
                        file: file.into(),
                        line: u32::try_from(i + 1).unwrap_or(u32::MAX),
                        col: 1,
                    },
                },
                mandatory: m.mandatory_features.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_uris_give_user_host_and_port() {
        assert_eq!(
            ssh_target("ssh://nix@build1"),
            Some(("nix".into(), "build1".into(), 22))
        );
        assert_eq!(
            ssh_target("ssh-ng://b@10.0.0.2:2222?compress=true"),
            Some(("b".into(), "10.0.0.2".into(), 2222))
        );
        assert_eq!(
            ssh_target("ssh://host"),
            Some(("root".into(), "host".into(), 22))
        );
        assert_eq!(ssh_target("local?root=/x"), None);
        assert_eq!(ssh_target("ssh://"), None);
    }

    #[test]
    fn entries_keep_slots_speed_features_and_mandatory_features() {
        let text = "ssh://nix@a x86_64-linux - 3 2 kvm,big big\nlocal?root=/r\nssh://b";
        let machines = super::super::nix_file::parse(text, "builders".as_ref(), &mut |_| {
            Err(std::io::ErrorKind::NotFound.into())
        })
        .unwrap();
        let e = entries(&machines, "x86_64-linux", "builders");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].machine.name, "a");
        assert_eq!(e[0].machine.parallel_builds, 3);
        assert_eq!(e[0].machine.speed, 2.0);
        assert_eq!(e[0].machine.features, ["big", "kvm"]);
        assert_eq!(e[0].mandatory, ["big"]);
        assert_eq!(e[1].machine.systems, ["x86_64-linux"]);
    }
}
