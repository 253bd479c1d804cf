((@ (srfi srfi-1) append-map) (lambda (entry) (if (build-machine? entry) (list entry) entry)) (list))
