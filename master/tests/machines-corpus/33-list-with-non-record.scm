(list (build-machine (name "ok.lan") (systems (list "x86_64-linux"))
                     (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l") (user "offload"))
      "not a machine")
