;; Characters, keywords and square brackets, as Guile's default reader takes them.
(define unused-characters '(#\a #\A #\space #\newline #\tab #\nul #\x41 #\( #\) #\; #\"))
(define unused-keywords '(#:speed #:port))
(let ([name "bracket.lan"]
      [systems (list "x86_64-linux")])
  (list (build-machine [name name] [systems systems]
                       [host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l"] [user "offload"])))
