(map (lambda (name)
       (build-machine
         (name name)
         (systems (list "aarch64-linux"))
         (host-key "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7+0ffl0x")
         (user "builder")
         (parallel-builds 2)))
     (list "pi1.lan" "pi2.lan" "pi3.lan"))
