;; expect-error: 4:3: port: expected an integer in 1..65535, got "22"
(define key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l")
(list
  (build-machine (name "a.lan") (port "22") (systems (list "x86_64-linux"))
                 (host-key key) (user "offload")))
