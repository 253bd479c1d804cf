# Several outputs, an input source and an input derivation with two used outputs.
let
  script = builtins.toFile "build.sh" "echo out > $out; echo dev > $dev; echo doc > $doc\n";
  lib = derivation { name = "lib"; system = builtins.currentSystem; builder = "/bin/sh"; outputs = [ "out" "dev" ]; args = [ "-c" "echo > $out; echo > $dev" ]; };
in derivation {
  name = "multi";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  outputs = [ "out" "dev" "doc" ];
  args = [ script ];
  libOut = lib.out;
  libDev = lib.dev;
}
