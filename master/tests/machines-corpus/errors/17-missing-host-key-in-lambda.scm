;; expect-error: 4:5: missing field
;; Expansion checks fields even in code that is never called.
(define (unused name)
    (build-machine (name name) (user "offload")))
'()
