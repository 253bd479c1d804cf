use std::collections::HashMap;

use super::*;

fn machine(uri: &str) -> NixMachine {
    NixMachine {
        uri: uri.to_owned(),
        systems: Vec::new(),
        ssh_key: None,
        max_jobs: 1,
        speed_factor: 1.0,
        supported_features: Vec::new(),
        mandatory_features: Vec::new(),
        public_host_key: None,
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn no_includes(path: &Path) -> io::Result<String> {
    panic!("unexpected include of {}", path.display())
}

fn parse_str(text: &str) -> Result<Vec<NixMachine>, ParseError> {
    parse(text, Path::new("machines"), &mut no_includes)
}

fn parse_files(files: &HashMap<&str, &str>, top: &str) -> Result<Vec<NixMachine>, ParseError> {
    let mut read = |p: &Path| {
        files
            .get(p.to_str().unwrap())
            .map(|s| (*s).to_owned())
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    };
    parse(files[top], Path::new(top), &mut read)
}

fn error_at(text: &str) -> (usize, usize, String) {
    let e = parse_str(text).unwrap_err();
    assert_eq!(e.file, Path::new("machines"));
    (e.line, e.column, e.message)
}

#[test]
fn manual_example_machines_file() {
    // Nix 2.8 manual, "Remote Builds".
    let text = "\
nix@scratchy.labs.cs.uu.nl  i686-linux      /home/nix/.ssh/id_scratchy_auto        8 1 kvm
nix@itchy.labs.cs.uu.nl     i686-linux      /home/nix/.ssh/id_scratchy_auto        8 2
nix@poochie.labs.cs.uu.nl   i686-linux      /home/nix/.ssh/id_scratchy_auto        1 2 kvm benchmark
";
    let machines = parse_str(text).unwrap();
    let key = Some("/home/nix/.ssh/id_scratchy_auto".to_owned());
    assert_eq!(
        machines,
        [
            NixMachine {
                systems: strings(&["i686-linux"]),
                ssh_key: key.clone(),
                max_jobs: 8,
                supported_features: strings(&["kvm"]),
                ..machine("ssh://nix@scratchy.labs.cs.uu.nl")
            },
            NixMachine {
                systems: strings(&["i686-linux"]),
                ssh_key: key.clone(),
                max_jobs: 8,
                speed_factor: 2.0,
                ..machine("ssh://nix@itchy.labs.cs.uu.nl")
            },
            NixMachine {
                systems: strings(&["i686-linux"]),
                ssh_key: key,
                max_jobs: 1,
                speed_factor: 2.0,
                supported_features: strings(&["kvm"]),
                mandatory_features: strings(&["benchmark"]),
                ..machine("ssh://nix@poochie.labs.cs.uu.nl")
            },
        ]
    );
}

#[test]
fn manual_example_builders_settings() {
    assert_eq!(
        parse_str("ssh://mac x86_64-darwin").unwrap(),
        [NixMachine {
            systems: strings(&["x86_64-darwin"]),
            ..machine("ssh://mac")
        }]
    );
    assert_eq!(
        parse_str("ssh://mac x86_64-darwin ; ssh://beastie x86_64-freebsd").unwrap(),
        [
            NixMachine {
                systems: strings(&["x86_64-darwin"]),
                ..machine("ssh://mac")
            },
            NixMachine {
                systems: strings(&["x86_64-freebsd"]),
                ..machine("ssh://beastie")
            },
        ]
    );
    // `builders = @/etc/nix/machines` (the default) with no such file.
    let mut missing = |_: &Path| Err(io::Error::from(io::ErrorKind::NotFound));
    assert_eq!(
        parse("@/etc/nix/machines", Path::new("builders"), &mut missing).unwrap(),
        []
    );
}

#[test]
fn every_field_defaults() {
    let defaults = machine("ssh://host");
    assert_eq!(parse_str("host").unwrap(), std::slice::from_ref(&defaults));
    assert_eq!(
        parse_str("host - - - - - - -").unwrap(),
        std::slice::from_ref(&defaults)
    );
    assert_eq!(parse_str("host\t-\t-").unwrap(), [defaults]);
    let full = parse_str("host a,b /key 4 3 f2,f1 m c3NoLWVkMjU1MTkgQUFBQQ==").unwrap();
    assert_eq!(
        full,
        [NixMachine {
            systems: strings(&["a", "b"]),
            ssh_key: Some("/key".into()),
            max_jobs: 4,
            speed_factor: 3.0,
            supported_features: strings(&["f1", "f2"]),
            mandatory_features: strings(&["m"]),
            public_host_key: Some("c3NoLWVkMjU1MTkgQUFBQQ==".into()),
            ..machine("ssh://host")
        }]
    );
    // Each field alone, the others left to default.
    for (i, field) in ["a,b", "/key", "4", "3", "f2,f1", "m", "AAAA"]
        .iter()
        .enumerate()
    {
        let mut words = vec!["host"; 1];
        words.extend(std::iter::repeat_n("-", i));
        words.push(field);
        let m = &parse_str(&words.join(" ")).unwrap()[0];
        let mut expected = machine("ssh://host");
        match i {
            0 => expected.systems = strings(&["a", "b"]),
            1 => expected.ssh_key = Some("/key".into()),
            2 => expected.max_jobs = 4,
            3 => expected.speed_factor = 3.0,
            4 => expected.supported_features = strings(&["f1", "f2"]),
            5 => expected.mandatory_features = strings(&["m"]),
            _ => expected.public_host_key = Some("AAAA".into()),
        }
        assert_eq!(*m, expected, "field {}", i + 2);
    }
}

#[test]
fn numbers_as_nix_reads_them() {
    let jobs = |t: &str| parse_str(&format!("h - - {t}")).map(|m| m[0].max_jobs);
    assert_eq!(jobs("+5"), Ok(5));
    assert_eq!(jobs("0000000000000000000005"), Ok(5));
    assert_eq!(jobs("0"), Ok(0));
    assert_eq!(jobs("4294967295"), Ok(u32::MAX));
    let speed = |t: &str| parse_str(&format!("h - - 1 {t}")).map(|m| m[0].speed_factor);
    assert_eq!(speed("0"), Ok(1.0));
    assert_eq!(speed("+0"), Ok(1.0));
    assert_eq!(speed("7"), Ok(7.0));
}

#[test]
fn bad_numbers_give_line_and_column() {
    for bad in ["0x5", "4294967296", "-1", "5a", "+", "++5", "1.5", "٥"] {
        let (line, column, message) = error_at(&format!("good\nh - - {bad}"));
        assert_eq!((line, column), (2, 7), "{bad}");
        assert!(
            message.contains("max jobs") && message.contains(bad),
            "{message}"
        );
    }
    // Speed factor is an integer in Nix 2.8.
    let (line, column, message) = error_at("a;b\n\n  x86 - - 2 1.5 # c");
    assert_eq!((line, column), (3, 13));
    assert!(message.contains("speed factor `1.5`"), "{message}");
    // Columns count characters, not bytes.
    assert_eq!(error_at("hé - - x").1, 8);
}

#[test]
fn separators_and_comments() {
    let text = "# a comment\na - - 2;b - - 3\n\nc # trailing; d\n;;e#x\n#;f\n";
    let uris: Vec<String> = parse_str(text)
        .unwrap()
        .into_iter()
        .map(|m| m.uri)
        .collect();
    // `;` splits before comments are cut, so `d` and `f` are machines.
    assert_eq!(
        uris,
        [
            "ssh://a", "ssh://b", "ssh://c", "ssh://d", "ssh://e", "ssh://f"
        ]
    );
    assert_eq!(parse_str("").unwrap(), []);
    assert_eq!(parse_str("\n\n;\n").unwrap(), []);
    assert_eq!(parse_str("a\r\nb\r\n").unwrap().len(), 2);
}

#[test]
fn blank_segments_are_errors_as_in_nix_2_8() {
    // Nix 2.8 does not trim segments, so these are machines without URI.
    for (text, line, column) in [
        ("h - - 3 ; ", 1, 10),
        ("h\n   \nh2", 2, 1),
        ("h\n  # indented comment", 2, 1),
        ("h\n\t", 2, 1),
        ("\r\n", 1, 1),
        ("- x86_64-linux", 1, 1),
    ] {
        let (l, c, message) = error_at(text);
        assert_eq!((l, c), (line, column), "{text:?}");
        assert!(message.contains("no store URI"), "{message}");
    }
    // ... and a leading blank makes `@x` a machine, not an include.
    assert_eq!(
        parse_str(" @/x/y - - 4").unwrap(),
        [NixMachine {
            max_jobs: 4,
            ..machine("@/x/y")
        }]
    );
}

#[test]
fn uri_normalisation() {
    let uri = |u: &str| parse_str(u).unwrap().remove(0).uri;
    assert_eq!(uri("nix@mac"), "ssh://nix@mac");
    assert_eq!(uri("ssh://mac"), "ssh://mac");
    assert_eq!(uri("ssh-ng://mac"), "ssh-ng://mac");
    assert_eq!(uri("/some/store"), "/some/store");
    for kept in [
        "auto",
        "daemon",
        "local",
        "local?root=/x",
        "daemon?x=1",
        "?x",
        "unix:///s",
    ] {
        assert_eq!(uri(kept), kept);
    }
    assert_eq!(uri("localhost"), "ssh://localhost");
    assert_eq!(uri("autobuilder"), "ssh://autobuilder");
}

#[test]
fn lists() {
    let m = &parse_str("h a,,b,a - 1 1 x,,y,x z,z").unwrap()[0];
    assert_eq!(m.systems, strings(&["a", "b", "a"]));
    assert_eq!(m.supported_features, strings(&["x", "y"]));
    assert_eq!(m.mandatory_features, strings(&["z"]));
    assert_eq!(
        parse_str("h - - 1 1 ,").unwrap()[0].supported_features,
        Vec::<String>::new()
    );
    assert_eq!(
        parse_str("h -, - 1 1 -,").unwrap()[0].systems,
        strings(&["-"])
    );
    // Deliberate difference: Nix would accept a machine with no systems.
    let (line, column, message) = error_at("h ,,");
    assert_eq!((line, column), (1, 3));
    assert!(message.contains("names no system"), "{message}");
}

#[test]
fn host_keys_and_extra_fields() {
    let key =
        |k: &str| parse_str(&format!("h - - 1 1 - - {k}")).map(|m| m[0].public_host_key.clone());
    assert_eq!(key("AAAA"), Ok(Some("AAAA".into())));
    // Nix's base64Decode stops at the first '='.
    assert_eq!(key("AB=!!"), Ok(Some("AB=!!".into())));
    assert_eq!(key("==="), Ok(Some("===".into())));
    let e = parse_str("h - - 1 1 - - abc!").unwrap_err();
    assert_eq!((e.line, e.column), (1, 18));
    assert!(e.message.contains("not base64"), "{}", e.message);
    // Fields after the eighth are ignored, as in Nix.
    assert_eq!(
        parse_str("h - - 1 1 - - - extra fields here").unwrap(),
        [machine("ssh://h")]
    );
}

#[test]
fn includes_from_a_map() {
    let files = HashMap::from([
        ("top", "a\n@/etc/one # comment\nb;@/etc/missing;c"),
        ("/etc/one", "one - - 2\n@  /etc/two  \n"),
        ("/etc/two", "two;three"),
    ]);
    let uris: Vec<String> = parse_files(&files, "top")
        .unwrap()
        .into_iter()
        .map(|m| m.uri)
        .collect();
    assert_eq!(
        uris,
        [
            "ssh://a",
            "ssh://one",
            "ssh://two",
            "ssh://three",
            "ssh://b",
            "ssh://c"
        ]
    );

    // Errors name the included file and its own line and column.
    let files = HashMap::from([("top", "a\n@inc"), ("inc", "ok\n\nbad - - x")]);
    let e = parse_files(&files, "top").unwrap_err();
    assert_eq!(
        (e.file.as_path(), e.line, e.column),
        (Path::new("inc"), 3, 9)
    );

    // Relative paths are passed through unchanged (Nix resolves them
    // against the process's working directory).
    let mut seen = Vec::new();
    let mut read = |p: &Path| {
        seen.push(p.to_path_buf());
        Ok(String::new())
    };
    parse("@sub/machines\n@\n@ \t", Path::new("top"), &mut read).unwrap();
    assert_eq!(seen, [PathBuf::from("sub/machines")]);
}

#[test]
fn include_read_errors() {
    let mut denied = |_: &Path| Err(io::Error::from(io::ErrorKind::PermissionDenied));
    let e = parse("a\n  b;@/etc/secret", Path::new("top"), &mut denied).unwrap_err();
    assert_eq!(
        (e.file.as_path(), e.line, e.column),
        (Path::new("top"), 2, 6)
    );
    assert!(e.message.contains("/etc/secret"), "{}", e.message);
}

#[test]
fn include_cycles_and_depth() {
    let files = HashMap::from([("top", "a\n@x"), ("x", "@y"), ("y", "b\n@x")]);
    let e = parse_files(&files, "top").unwrap_err();
    assert_eq!((e.file.as_path(), e.line, e.column), (Path::new("y"), 2, 2));
    assert_eq!(e.message, "include cycle: top -> x -> y -> x");

    let files = HashMap::from([("top", "@top")]);
    assert!(
        parse_files(&files, "top")
            .unwrap_err()
            .message
            .contains("cycle")
    );

    // A chain of distinct files: MAX_INCLUDE_DEPTH levels are fine, one more is not.
    let names: Vec<String> = (0..=MAX_INCLUDE_DEPTH + 1)
        .map(|i| format!("f{i}"))
        .collect();
    let texts: Vec<String> = (0..=MAX_INCLUDE_DEPTH + 1)
        .map(|i| format!("m{i}\n@f{}", i + 1))
        .collect();
    let mut files: HashMap<&str, &str> = names
        .iter()
        .map(String::as_str)
        .zip(texts.iter().map(String::as_str))
        .collect();
    files.insert("f9", "m9");
    assert_eq!(names.len(), MAX_INCLUDE_DEPTH + 2);
    assert_eq!(
        parse_files(&files, "f1").unwrap().len(),
        MAX_INCLUDE_DEPTH + 1
    );
    let e = parse_files(&files, "f0").unwrap_err();
    assert_eq!(e.file, Path::new(&format!("f{MAX_INCLUDE_DEPTH}")));
    assert!(e.message.contains("nested deeper"), "{}", e.message);
}

#[test]
fn includes_are_limited_in_number_and_bytes_in_all() {
    // The same include named many times: no cycle, no depth.
    let many = "@x\n".repeat(MAX_INCLUDES + 1);
    let files = HashMap::from([("top", many.as_str()), ("x", "m x86_64-linux")]);
    let e = parse_files(&files, "top").unwrap_err();
    assert!(e.message.contains("more than 64 includes"), "{}", e.message);
    assert_eq!(e.line, MAX_INCLUDES + 1);
    // Fewer is fine.
    let few = "@x\n".repeat(MAX_INCLUDES);
    let files = HashMap::from([("top", few.as_str()), ("x", "m x86_64-linux")]);
    assert_eq!(parse_files(&files, "top").unwrap().len(), MAX_INCLUDES);
    // Big includes add up.
    let big = format!("{}m x86_64-linux", "#".repeat(MAX_FILE_LEN - 20));
    let files = HashMap::from([
        ("top", "@x\n".repeat(9).leak() as &str),
        ("x", big.as_str()),
    ]);
    let e = parse_files(&files, "top").unwrap_err();
    assert!(e.message.contains("bytes in all"), "{}", e.message);
}

#[test]
fn includes_from_real_files() {
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("inner");
    let top = dir.path().join("machines");
    std::fs::write(&inner, "inner x86_64-linux - 2\n").unwrap();
    std::fs::write(
        &top,
        format!(
            "outer\n@{}\n@{}\n",
            inner.display(),
            dir.path().join("absent").display()
        ),
    )
    .unwrap();
    let text = std::fs::read_to_string(&top).unwrap();
    let mut read = |p: &Path| std::fs::read_to_string(p);
    let machines = parse(&text, &top, &mut read).unwrap();
    assert_eq!(
        machines,
        [
            machine("ssh://outer"),
            NixMachine {
                systems: strings(&["x86_64-linux"]),
                max_jobs: 2,
                ..machine("ssh://inner")
            }
        ]
    );
    // A directory is not a missing file: an error, as in Nix.
    let e = parse(&format!("@{}", dir.path().display()), &top, &mut read).unwrap_err();
    assert_eq!((e.line, e.column), (1, 2));
}

#[test]
fn file_length_limit() {
    let long = "#".repeat(MAX_FILE_LEN + 1);
    assert!(parse_str(&long).unwrap_err().message.contains("limit"));
}

#[test]
fn print_format() {
    let m = NixMachine {
        systems: strings(&["x86_64-linux", "i686-linux"]),
        ssh_key: Some("/root/.ssh/id".into()),
        max_jobs: 8,
        speed_factor: 2.0,
        supported_features: strings(&["big-parallel", "kvm"]),
        mandatory_features: strings(&["benchmark"]),
        public_host_key: Some("AAAA".into()),
        ..machine("ssh://nix@a")
    };
    assert_eq!(
        print(&[m.clone(), machine("ssh://b")]),
        "ssh://nix@a x86_64-linux,i686-linux /root/.ssh/id 8 2 big-parallel,kvm benchmark AAAA\nssh://b - - 1 1 - - -\n"
    );
    assert_eq!(parse_str(&print(std::slice::from_ref(&m))).unwrap(), [m]);
    assert_eq!(print(&[]), "");
}

/// A small deterministic generator (xorshift64*), standing in for
/// proptest, which is not a dependency of this crate.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn word(&mut self, alphabet: &[char]) -> String {
        let len = 1 + self.below(6);
        (0..len)
            .map(|_| alphabet[self.below(alphabet.len())])
            .collect()
    }
    fn number(&mut self) -> u32 {
        match self.below(4) {
            0 => 0,
            1 => u32::MAX,
            _ => self.next() as u32 % 100,
        }
    }
}

/// Characters that may appear in a field: anything but blanks, `#`, `;`.
const FIELD: &[char] = &[
    'a', 'Z', '0', '-', '.', '_', ':', '/', '@', '?', '=', '+', ',', 'é', '!',
];
/// Characters of a list element: a field character but not `,`.
const ELEMENT: &[char] = &['a', 'Z', '0', '-', '.', '_', ':', '/', '@', '=', 'é'];
const BASE64: &[char] = &['A', 'z', '0', '+', '/', '=', '!'];

fn arbitrary_machine(g: &mut Gen) -> NixMachine {
    let list = |g: &mut Gen, set: bool| {
        let mut items: Vec<String> = (0..g.below(4)).map(|_| g.word(ELEMENT)).collect();
        if set {
            items.sort();
            items.dedup();
        }
        items
    };
    let systems = list(g, false);
    let supported_features = list(g, true);
    let mandatory_features = list(g, true);
    let mut uri = g.word(FIELD);
    if uri == "-" {
        uri.push('x');
    }
    let optional = |g: &mut Gen, alphabet: &[char]| {
        let w = g.word(alphabet);
        (g.below(2) == 0 && w != "-").then_some(w)
    };
    let mut key = optional(g, BASE64);
    if key
        .as_deref()
        .is_some_and(|k| k.split('=').next().is_some_and(|b| b.contains('!')))
    {
        key = None;
    }
    NixMachine {
        uri: normalize_uri(&uri),
        systems,
        ssh_key: optional(g, FIELD),
        max_jobs: g.number(),
        speed_factor: f64::from(g.number().max(1)),
        supported_features,
        mandatory_features,
        public_host_key: key,
    }
}

#[test]
fn round_trip() {
    let mut g = Gen(0x0ff1_0ad5_eed0_0001);
    for _ in 0..3000 {
        let machines: Vec<NixMachine> =
            (0..g.below(5)).map(|_| arbitrary_machine(&mut g)).collect();
        let text = print(&machines);
        let parsed = parse_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(parsed, machines, "{text}");
        assert_eq!(print(&parsed), text);
    }
}

/// Runs Nix 2.8's build hook (`nix-build --builders …` with nothing
/// allowed to build locally) in a private store under a temporary
/// directory and returns its stderr. The hook parses the machines and,
/// when none fits, lists them.
fn nix_hook_stderr(dir: &Path, builders: &str) -> Option<String> {
    let nix = |program: &str| {
        let mut cmd = std::process::Command::new(program);
        cmd.env(
            "NIX_CONFIG",
            "build-users-group =\nsandbox = false\nsubstituters =\n",
        )
        .env("NIX_STORE_DIR", dir.join("store"))
        .env("NIX_STATE_DIR", dir.join("var"))
        .env("NIX_LOG_DIR", dir.join("var/log"))
        .env("NIX_CONF_DIR", dir.join("etc"))
        .env("HOME", dir.join("home"))
        .env_remove("NIX_REMOTE")
        .current_dir(dir);
        cmd
    };
    let expr = r#"derivation { name = "probe"; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" "echo > $out"]; requiredSystemFeatures = ["offload-probe"]; }"#;
    let out = nix("nix-build")
        .args([
            "--no-out-link",
            "--max-jobs",
            "0",
            "--debug",
            "--builders",
            builders,
            "-E",
            expr,
        ])
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Interop with real Nix 2.8 (Debian's `nix-bin`, which `tests/run`
/// installs; the test fails without it): the hook accepts our printed file, sees the same URIs,
/// systems, max jobs and features, and rejects and accepts the same
/// edge cases as `parse`.
#[test]
fn nix_2_8_reads_what_we_print() {
    let dir = tempfile::tempdir().unwrap();
    // The facts checked are 2.8's: any other version (or none) fails.
    let version = std::process::Command::new("nix-build")
        .arg("--version")
        .output()
        .expect("nix-build is not installed: apt-get install nix-bin (tests/run does)");
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.contains("(Nix) 2.8."),
        "this test checks Nix 2.8 behaviour, found {version}"
    );
    let local_system = std::process::Command::new("nix-instantiate")
        .args(["--eval", "-E", "builtins.currentSystem"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .trim_matches('"')
                .to_owned()
        })
        .unwrap();

    let machines = [
        machine("ssh://plain"),
        NixMachine {
            systems: strings(&["x86_64-linux", "i686-linux", "x86_64-linux"]),
            ssh_key: Some("/root/.ssh/id_ed25519".into()),
            max_jobs: 8,
            speed_factor: 3.0,
            supported_features: strings(&["big-parallel", "kvm", "nixos-test"]),
            mandatory_features: strings(&["benchmark"]),
            public_host_key: Some(
                "c3NoLWVkMjU1MTkgQUFBQUMzTnphQzFsWkRJMU5URTVBQUFBSUNmdQ==".into(),
            ),
            ..machine("ssh://nix@builder.example")
        },
        NixMachine {
            systems: strings(&["aarch64-linux"]),
            max_jobs: 0,
            ..machine("ssh-ng://arm")
        },
        NixMachine {
            systems: strings(&["-"]),
            max_jobs: u32::MAX,
            ..machine("local?root=/tmp/x")
        },
        NixMachine {
            mandatory_features: strings(&["-"]),
            ..machine("@/odd/uri")
        },
    ];
    let file = dir.path().join("machines");
    std::fs::write(&file, print(&machines)).unwrap();
    let stderr = nix_hook_stderr(dir.path(), &format!("@{}", file.display())).unwrap();
    assert!(!stderr.contains("bad machine specification"), "{stderr}");

    let uris: Vec<&str> = stderr
        .lines()
        .filter_map(|l| {
            l.strip_prefix("considering building on remote machine '")?
                .strip_suffix('\'')
        })
        .take(machines.len())
        .collect();
    assert_eq!(
        uris,
        machines.iter().map(|m| m.uri.as_str()).collect::<Vec<_>>(),
        "{stderr}"
    );

    let listed: Vec<&str> = stderr
        .lines()
        .skip_while(|l| !l.starts_with("(systems, maxjobs"))
        .skip(1)
        .take(machines.len())
        .collect();
    let ours: Vec<String> = machines
        .iter()
        .map(|m| {
            let systems = if m.systems.is_empty() {
                vec![local_system.clone()]
            } else {
                m.systems.clone()
            };
            format!(
                "({}, {}, {}, {})",
                systems.join(", "),
                m.max_jobs,
                m.supported_features.join(", "),
                m.mandatory_features.join(", ")
            )
        })
        .collect();
    assert_eq!(listed, ours, "{stderr}");

    // Edge cases: Nix and `parse` agree on what is an error.
    for (text, ok) in [
        ("h - - +5", true),
        ("h - - 0005 0", true),
        ("h - - 1 1 - - AB=!!", true),
        ("h - - 1 1 - - - extra", true),
        ("a # x; b", true),
        ("@/nonexistent/machines", true),
        ("h - - 0x5", false),
        ("h - - -1", false),
        ("h - - 4294967296", false),
        ("h - - 1 1.5", false),
        ("h - - 1 1 - - abc!", false),
        ("h - - 3 ; ", false),
        ("h\n  # indented comment", false),
        ("- x86_64-linux", false),
    ] {
        let stderr = nix_hook_stderr(dir.path(), text).unwrap();
        let nix_ok = !stderr.contains("bad machine specification");
        assert_eq!(nix_ok, ok, "Nix on {text:?}: {stderr}");
        let ours = parse(text, Path::new("builders"), &mut |p: &Path| {
            std::fs::read_to_string(p)
        });
        assert_eq!(ours.is_ok(), ok, "parse on {text:?}: {ours:?}");
    }
}

#[test]
fn arbitrary_text_never_panics() {
    let alphabet = [
        ' ', '\t', '\n', '\r', ';', '#', '@', ',', '-', 'a', '1', '=', '!', 'é', '+',
    ];
    let mut g = Gen(7);
    let mut read = |_: &Path| Ok("x;@y".to_owned());
    for _ in 0..20_000 {
        let text: String = (0..g.below(40))
            .map(|_| alphabet[g.below(alphabet.len())])
            .collect();
        if let Ok(machines) = parse(&text, Path::new("fuzz"), &mut read) {
            assert_eq!(
                parse(&print(&machines), Path::new("p"), &mut no_includes).unwrap(),
                machines
            );
        }
    }
}
