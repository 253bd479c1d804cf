# Fixed-output derivations: recursive (r:sha256) and flat (sha256) hashes.
{
  recursive = derivation {
    name = "fixed-rec";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo fixed > $out" ];
    outputHashMode = "recursive";
    outputHashAlgo = "sha256";
    outputHash = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
  };
  flat = derivation {
    name = "fixed-flat";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo fixed > $out" ];
    outputHashAlgo = "sha1";
    outputHash = "0000000000000000000000000000000000000000";
  };
}
