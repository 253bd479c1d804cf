(define x86
  (list (build-machine (name "x1.lan") (systems (list "x86_64-linux"))
                       (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l") (user "offload"))))
(define arm
  (list (build-machine (name "a1.lan") (systems (list "aarch64-linux"))
                       (host-key "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7+0ffl0x") (user "offload"))))
(cons (build-machine (name "first.lan") (systems (list "x86_64-linux"))
                     (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l") (user "offload"))
      (append x86 arm '()))
