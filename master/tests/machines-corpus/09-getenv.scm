;; Values from the environment (the test sets OFFLOAD_TEST_HOST and HOME).
(list (build-machine
        (name (getenv "OFFLOAD_TEST_HOST"))
        (systems (list "x86_64-linux"))
        (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l")
        (user "offload")
        (private-key (string-append (getenv "HOME") "/.ssh/offload_ed25519"))))
