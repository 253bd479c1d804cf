;; The older manual example, with the deprecated 'system' field.
(list (build-machine
        (name "eightysix.example.org")
        (system "x86_64-linux")
        (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l")
        (user "bob")
        (speed 2.))
      (build-machine
        (name "armeight.example.org")
        (system "aarch64-linux")
        (host-key "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7+0ffl0x")
        (user "alice")
        (private-key "/root/.ssh/identity-for-guix")))
