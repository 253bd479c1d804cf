;; Only 'system': one warning.  Both fields: 'systems' wins, no warning.
(list (build-machine (name "old.lan") (system "x86_64-linux")
                     (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l") (user "offload"))
      (build-machine (name "both.lan") (system "i686-linux")
                     (systems (list "x86_64-linux"))
                     (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l") (user "offload")))
