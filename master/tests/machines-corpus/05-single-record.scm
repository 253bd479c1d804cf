;; A single record, not a list: Guix warns and ignores the file.
(build-machine
  (name "lonely.lan")
  (systems (list "x86_64-linux"))
  (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l")
  (user "offload"))
