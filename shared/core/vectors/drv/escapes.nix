# Strings that need escaping in the ATerm: quotes, backslashes, newlines, tabs, carriage returns.
derivation {
  name = "escapes";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "printf '%s\\n' \"quoted\" 'back\\slash' > $out\n\techo\ttab\r\n" "" "plain" ];
  quote = "say \"hi\"";
  backslash = "a\\b\\\\c";
  multiline = "line one\nline two\n\ttabbed\r\nend";
  empty = "";
  unicode = "grüße, 世界";
}
