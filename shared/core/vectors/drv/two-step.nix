# nix-daemon.md section 4.1: step-b depends on step-a.
let a = derivation { name = "step-a"; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" "echo a-content > $out"]; };
in derivation { name = "step-b"; system = builtins.currentSystem; builder = "/bin/sh";
  args = ["-c" "read x < ${a}; echo \"b got $x from ${a}\" > $out"]; }
