(define one
  (build-machine (name "one.lan") (systems `("x86_64-linux" ,"i686-linux"))
                 (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l") (user "offload")))
(define more
  (list (build-machine (name "two.lan") (systems '("x86_64-linux"))
                       (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l") (user "offload"))
        (build-machine (name "three.lan") (systems '("x86_64-linux"))
                       (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l") (user "offload")
                       (features `("kvm" ,@(list "big-parallel" "nested"))))))
`(,one ,@more)
