//! Signed export streams into a directory: verification before anything
//! becomes visible, and hostile streams (truncated, flipped, extended)
//! restore nothing of what they touched.

use std::fs;
use std::path::{Path, PathBuf};

use offload_core::acl::Acl;
use offload_core::keys::SecretKey;
use offload_core::store_path::StoreDir;
use offload_files::{dump, export_dir, import_dir};
use proptest::prelude::*;

const A: &str = "0123456789abcdfghijklmnpqrsvwxyz-base";
const B: &str = "1123456789abcdfghijklmnpqrsvwxyz-app";

struct Fixture {
    _tmp: tempfile::TempDir,
    store: PathBuf,
    key: SecretKey,
    acl: Acl,
    /// The stream of A then B; `a_len` bytes of it are A's item (marker included).
    stream: Vec<u8>,
    a_len: usize,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    fs::create_dir_all(store.join(A).join("lib")).unwrap();
    fs::write(store.join(A).join("lib/data"), vec![42u8; 5000]).unwrap();
    fs::write(store.join(B), format!("#!/gnu/store/{A}/bin/sh\n")).unwrap();
    let key = SecretKey::from_random(&[7; 32]);
    let mut acl = Acl::default();
    acl.authorize(key.public_key());
    let export = |items: &[&str]| {
        let paths: Vec<PathBuf> = items.iter().map(|i| store.join(i)).collect();
        let mut out = Vec::new();
        export_dir::export_paths(&paths, &StoreDir::default(), &key, &mut out).unwrap();
        out
    };
    // B is given first: the exporter must still put A (its reference) first.
    let stream = export(&[B, A]);
    let a_len = export(&[A]).len() - 8;
    Fixture {
        _tmp: tmp,
        store,
        key,
        acl,
        stream,
        a_len,
    }
}

fn import(
    stream: &[u8],
    dir: &Path,
    acl: &Acl,
) -> (Result<(), import_dir::Error>, Vec<import_dir::Outcome>) {
    let mut outcomes = Vec::new();
    let result = import_dir::import_stream(
        stream,
        dir,
        &StoreDir::default(),
        acl,
        Default::default(),
        &mut outcomes,
    );
    (result, outcomes)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn valid_stream_imports_in_order_and_is_idempotent() {
    let f = fixture();
    let out = tempfile::tempdir().unwrap();
    let (result, outcomes) = import(&f.stream, out.path(), &f.acl);
    result.unwrap();
    let paths: Vec<String> = outcomes.iter().map(|o| o.path.to_string()).collect();
    assert_eq!(
        paths,
        [format!("/gnu/store/{A}"), format!("/gnu/store/{B}")]
    );
    assert!(outcomes.iter().all(|o| o.result == Ok(true)));
    for item in [A, B] {
        assert_eq!(
            dump::dump_path(&out.path().join(item), Vec::new()).unwrap(),
            dump::dump_path(&f.store.join(item), Vec::new()).unwrap()
        );
    }
    let (result, again) = import(&f.stream, out.path(), &f.acl);
    result.unwrap();
    assert!(
        again.iter().all(|o| o.result == Ok(false)),
        "second import finds both present"
    );
    assert_eq!(entries(out.path()), [A, B]);
}

#[test]
fn unauthorized_and_missing_references_import_nothing() {
    let f = fixture();
    let out = tempfile::tempdir().unwrap();
    let mut other = Acl::default();
    other.authorize(SecretKey::from_random(&[9; 32]).public_key());
    let (result, outcomes) = import(&f.stream, out.path(), &other);
    result.unwrap();
    assert!(outcomes.iter().all(|o| o.verdict
        == Some(offload_core::signature::Verdict::Unauthorized)
        && o.result.is_err()));
    assert!(entries(out.path()).is_empty());
    // B alone: its reference A is neither present nor earlier in the stream.
    let mut only_b = Vec::new();
    export_dir::export_paths(
        &[f.store.join(B)],
        &StoreDir::default(),
        &f.key,
        &mut only_b,
    )
    .unwrap();
    let (result, outcomes) = import(&only_b, out.path(), &f.acl);
    result.unwrap();
    let why = outcomes[0].result.as_ref().unwrap_err();
    assert!(why.contains("import its closure first"), "{why}");
    assert!(entries(out.path()).is_empty());
}

/// What a mutated stream may leave: only original items, byte for byte,
/// and none whose bytes the mutation touched (`touched` = item indexes).
fn check_mutated(f: &Fixture, stream: &[u8], touched: &[usize]) -> Result<(), TestCaseError> {
    let out = tempfile::tempdir().unwrap();
    let (result, outcomes) = import(stream, out.path(), &f.acl);
    let names = entries(out.path());
    if result.is_err() {
        prop_assert!(names.is_empty(), "a malformed stream left {names:?}");
    }
    for name in &names {
        let i = [A, B].iter().position(|x| x == name);
        prop_assert!(i.is_some(), "unexpected entry {name}");
        prop_assert!(
            !touched.contains(&i.unwrap_or(9)),
            "{name} was altered yet imported"
        );
        let ours = dump::dump_path(&out.path().join(name), Vec::new()).unwrap();
        prop_assert_eq!(
            ours,
            dump::dump_path(&f.store.join(name), Vec::new()).unwrap()
        );
    }
    prop_assert!(outcomes.len() <= 2);
    Ok(())
}

/// The item whose hashed bytes or framing lie at `offset`. A change inside
/// an item's signature *text* may leave the parsed signature the same (the
/// case of a hex digit, say): the content is untouched, so that item may
/// still be imported, and `check_mutated` proves its bytes are the original.
fn items_at(f: &Fixture, offset: usize) -> Vec<usize> {
    let sig_start = |from: usize| {
        f.stream[from..]
            .windows(10)
            .position(|w| w == b"(signature")
            .map(|p| from + p)
            .unwrap()
    };
    if offset < sig_start(0) {
        vec![0]
    } else if (f.a_len..sig_start(f.a_len)).contains(&offset) {
        vec![1]
    } else {
        vec![]
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn truncated_streams_restore_nothing(cut in any::<prop::sample::Index>()) {
        let f = fixture();
        let cut = cut.index(f.stream.len());
        let out = tempfile::tempdir().unwrap();
        let (result, _) = import(&f.stream[..cut], out.path(), &f.acl);
        prop_assert!(result.is_err());
        prop_assert!(entries(out.path()).is_empty());
    }

    #[test]
    fn flipped_bytes_restore_no_altered_item(at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let f = fixture();
        let mut stream = f.stream.clone();
        let at = at.index(stream.len());
        stream[at] ^= 1 << bit;
        check_mutated(&f, &stream, &items_at(&f, at))?;
    }

    #[test]
    fn extended_streams_restore_no_altered_item(at in any::<prop::sample::Index>(), extra in prop::collection::vec(any::<u8>(), 1..40)) {
        let f = fixture();
        let at = at.index(f.stream.len() + 1);
        let mut stream = f.stream[..at].to_vec();
        stream.extend_from_slice(&extra);
        stream.extend_from_slice(&f.stream[at..]);
        let touched = if at == f.stream.len() { vec![] } else { items_at(&f, at) };
        check_mutated(&f, &stream, &touched)?;
        if at == f.stream.len() {
            let out = tempfile::tempdir().unwrap();
            let (result, _) = import(&stream, out.path(), &f.acl);
            prop_assert!(matches!(result, Err(import_dir::Error::Trailing)));
        }
    }
}

#[test]
fn items_of_another_store_directory_are_refused() {
    let f = fixture();
    let out = tempfile::tempdir().unwrap();
    let mut outcomes = Vec::new();
    let nix = StoreDir::new("/nix/store").unwrap();
    import_dir::import_stream(
        f.stream.as_slice(),
        out.path(),
        &nix,
        &f.acl,
        Default::default(),
        &mut outcomes,
    )
    .unwrap();
    let why = outcomes[0].result.as_ref().unwrap_err();
    assert!(
        why.contains("is not in the store directory /nix/store"),
        "{why}"
    );
    assert!(entries(out.path()).is_empty());
}

#[test]
fn truncation_errors_name_the_item() {
    let f = fixture();
    let out = tempfile::tempdir().unwrap();
    let (result, _) = import(&f.stream[..f.a_len + 100], out.path(), &f.acl);
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("item 2 of the stream (after /gnu/store/") && err.contains("truncated"),
        "{err}"
    );
}
