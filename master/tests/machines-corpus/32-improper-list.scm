;; An improper list is not a list of machines.
(define m (build-machine (name "m.lan") (systems (list "x86_64-linux"))
                         (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l") (user "offload")))
(cons m m)
