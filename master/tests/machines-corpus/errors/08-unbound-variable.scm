;; expect-error: 5:49: unbound variable
(define key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l")
(list (build-machine (name "a.lan") (systems (list "x86_64-linux"))
                     (host-key key)
                     (user (string-append "off" lod))))
