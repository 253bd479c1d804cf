# A derivation that needs machine features.
derivation {
  name = "needs-kvm";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo kvm > $out" ];
  requiredSystemFeatures = [ "kvm" "big-parallel" ];
}
