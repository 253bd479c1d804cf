;; String escapes as Guile reads them.  NOTE: Guile's \xHH takes exactly two
;; hex digits, so "\x41;" is the two characters "A;".
(list (build-machine
        (name "esc.lan")
        (systems (list "x86_64-linux"))
        (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEsc root@\"quoted\"\\back\x41;\x42")
        (user "off\
load")
        (private-key "/home/\u00e9l\u00e8ve/.ssh/id_ed25519")
        (features (list "tab\there" "new\nline" "bell\a" "r\r" "nul\x00" "caf\xe9" "\U01F600" "日本" "ü"))))
