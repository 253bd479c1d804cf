;; A helper procedure with 'define'.
(define %key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l")

(define (machine name systems speed)
  (build-machine
    (name name)
    (systems systems)
    (host-key %key)
    (user "offload")
    (speed speed)))

(list (machine "fast.lan" (list "x86_64-linux") 4.0)
      (machine "slow.lan" (list "i686-linux") 0.5))
