;; inherit from inherit: fields come from the nearest record; the location
;; is always the record's own form.
(define base
  (build-machine (name "base.lan") (systems (list "x86_64-linux"))
                 (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l") (user "offload") (port 2200)
                 (features (list "kvm")) (speed 3.0)))
(define child
  (build-machine (inherit base) (name "child.lan") (parallel-builds 4)))
(define grandchild
  (build-machine (inherit child) (name "grandchild.lan") (speed 0.5)
                 (overload-threshold #f)))
(list base child grandchild)
