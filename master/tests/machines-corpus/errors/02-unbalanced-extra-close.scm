;; expect-error: 4:40: unbalanced
(list (build-machine (name "a.lan") (systems (list "x86_64-linux"))
                     (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l")
                     (user "offload")))) ; one parenthesis too many
