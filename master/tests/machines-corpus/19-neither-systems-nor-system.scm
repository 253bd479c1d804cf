;; Neither field: the machine matches no build (warning, systems ()).
(list (build-machine (name "nosys.lan") (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l") (user "offload"))
      (build-machine (name "empty.lan") (systems '()) (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l")
                     (user "offload")))
