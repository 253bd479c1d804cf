;; expect-error: 3:1: wrong type to apply
(define machines '())
(list 1 (machines))
