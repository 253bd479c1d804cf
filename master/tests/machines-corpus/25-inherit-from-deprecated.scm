;; The base uses 'system' and is not returned: Guix warns when the
;; scheduler reads the systems of a returned machine, so only the two
;; returned records warn (each at its own form), not the base.
(define old
  (build-machine (name "old.lan") (system "x86_64-linux")
                 (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l") (user "offload")))
(list (build-machine (inherit old) (name "new1.lan"))
      (build-machine (inherit old) (name "new2.lan") (systems (list "i686-linux")))
      (build-machine (inherit old) (name "new3.lan")))
