//! Key and ACL files as Guix keeps them.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use offload_core::keys::PublicKey;
use offload_files::{acl_file, key_file};

#[test]
fn generated_files_have_guix_modes_and_refuse_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let public = key_file::generate(tmp.path()).unwrap();
    let mode = |f: &str| {
        fs::metadata(tmp.path().join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(
        (mode("signing-key.sec"), mode("signing-key.pub")),
        (0o400, 0o444)
    );
    let secret = key_file::load_secret(&tmp.path().join("signing-key.sec")).unwrap();
    assert_eq!(secret.public_key(), &public);
    let err = key_file::generate(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("key pair exists under"), "{err}");
}

#[test]
fn a_mismatched_public_key_file_is_refused() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    key_file::generate(a.path()).unwrap();
    key_file::generate(b.path()).unwrap();
    fs::set_permissions(
        a.path().join("signing-key.pub"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    fs::copy(
        b.path().join("signing-key.pub"),
        a.path().join("signing-key.pub"),
    )
    .unwrap();
    let err = key_file::load_secret(&a.path().join("signing-key.sec"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("does not belong to the secret key"), "{err}");
}

#[test]
fn a_missing_key_says_how_to_make_one() {
    let tmp = tempfile::tempdir().unwrap();
    let err = key_file::load_secret(&tmp.path().join("signing-key.sec"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("offload-master key generate"), "{err}");
}

#[test]
fn authorizing_into_a_missing_acl_keeps_the_machines_own_key() {
    let tmp = tempfile::tempdir().unwrap();
    let own = key_file::generate(tmp.path()).unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other = key_file::generate(other_dir.path()).unwrap();
    let acl_path = tmp.path().join("acl");
    assert!(acl_file::authorize(&acl_path, &other).unwrap());
    let acl = acl_file::load(&acl_path).unwrap();
    let keys: Vec<PublicKey> = acl
        .keys()
        .iter()
        .map(|k| PublicKey::from_sexp(k.clone()).unwrap())
        .collect();
    assert_eq!(
        keys,
        [other, own],
        "new key first, then the machine's own (ensure-acl)"
    );
}

#[test]
fn authorizing_the_machines_own_key_into_a_missing_acl_writes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let own = key_file::generate(tmp.path()).unwrap();
    let acl_path = tmp.path().join("acl");
    assert!(acl_file::authorize(&acl_path, &own).unwrap());
    let acl = acl_file::load(&acl_path).unwrap();
    assert_eq!(acl.keys().len(), 1);
    assert!(
        !acl_file::authorize(&acl_path, &own).unwrap(),
        "already there"
    );
}
