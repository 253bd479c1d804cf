;; The same record twice: listed twice, and warned about twice.
(define m (build-machine (name "twice.lan") (system "x86_64-linux")
                         (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l") (user "offload")))
(list m m)
