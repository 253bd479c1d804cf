;; define* with keyword arguments: beyond the native subset.
(define* (machine name #:key (systems '("x86_64-linux")) (speed 1.0))
  (build-machine (name name) (systems systems) (speed speed)
                 (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l") (user "offload")))
(list (machine "kw1.lan")
      (machine "kw2.lan" #:speed 2.5 #:systems '("aarch64-linux")))
