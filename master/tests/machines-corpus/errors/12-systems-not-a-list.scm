;; expect-error: 3:3: systems: expected
(list
  (build-machine (name "a.lan") (systems "x86_64-linux")
                 (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l") (user "offload")))
