;; An unset variable gives #f; 'or' supplies a fallback.
(define host (or (getenv "OFFLOAD_TEST_UNSET_VARIABLE") "fallback.lan"))
(list (build-machine
        (name host)
        (systems (list "x86_64-linux"))
        (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l")
        (user (if (getenv "OFFLOAD_TEST_UNSET_VARIABLE") "nobody" "offload"))))
