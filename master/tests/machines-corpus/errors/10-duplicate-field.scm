;; expect-error: 3:7: duplicate field
(list
      (build-machine (name "a.lan") (systems (list "x86_64-linux")) (name "b.lan")
               (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l") (user "offload")))
