;; Only the value of the last expression counts.
(list (build-machine (name "ignored.lan") (systems (list "x86_64-linux"))
                     (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l") (user "offload")))
(list (build-machine (name "kept.lan") (systems (list "x86_64-linux"))
                     (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l") (user "offload")))
