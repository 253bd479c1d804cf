;; The last value is a string.
(define note "not machines")
note
