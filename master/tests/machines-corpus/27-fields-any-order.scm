;; Clauses in any order.
(list (build-machine
        (features (list "kvm"))
        (speed 0.75)
        (user "offload")
        (host-key "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7+0ffl0x")
        (port 22)
        (systems (list "aarch64-linux"))
        (name "order.lan")))
