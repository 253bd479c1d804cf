;; Internal defines and a lambda stored in a variable.
(let ()
  (define key "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7+0ffl0x")
  (define make
    (lambda (name)
      (build-machine (name name) (systems (list "aarch64-linux"))
                     (host-key key) (user "offload"))))
  (list (make "inner1.lan") (make "inner2.lan")))
