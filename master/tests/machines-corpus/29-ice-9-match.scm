;; (ice-9 match): beyond the native subset, evaluated by Guile.
(use-modules (ice-9 match))
(map (match-lambda
       ((name . systems)
        (build-machine (name name) (systems systems)
                       (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l") (user "offload"))))
     '(("m1.lan" "x86_64-linux") ("m2.lan" "aarch64-linux" "armhf-linux")))
