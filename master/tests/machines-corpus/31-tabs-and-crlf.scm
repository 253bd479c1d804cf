;; Tabs and CRLF line ends: a tab counts as one column.
(list
	(build-machine (name "tab1.lan") (system "x86_64-linux")
		(host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l") (user "offload"))
	  	(build-machine (name "tab2.lan") (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqhSqmBFIqXTq2KNGnGyRz0VNNf6TxECVGDGLH8w4l")
		(user "offload")))
