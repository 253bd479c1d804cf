;; Keep only the records of a mixed list.
(define mixed
  (list "not a machine"
        (build-machine (name "keep1.lan") (systems (list "x86_64-linux"))
                       (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l") (user "offload"))
        42
        (build-machine (name "keep2.lan") (systems (list "x86_64-linux"))
                       (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l") (user "offload"))))

(filter build-machine? mixed)
