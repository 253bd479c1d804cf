#!/usr/bin/guile \
-s
!#
;;; Comments of every kind, everywhere.
#| block comment #| nested |# still in the comment
   (build-machine (name "commented-out")) |#
(list ; after list
 #;(build-machine (name "skipped by a datum comment"))
 (build-machine #| inline |# (name "c1.lan") ; trailing
   #;(port 9999)
   (systems (list "x86_64-linux" #;"i686-linux"))
   ;; a full-line comment
   (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l") #| between |# (user "offload"))
 #;
 (list "datum comment on the next line")
 (build-machine (name "c2.lan") (systems (list "x86_64-linux")) #;#;(a) (b)
   (host-key "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7+0ffl0x") (user "offload")))
;; trailing comment without a newline at the end