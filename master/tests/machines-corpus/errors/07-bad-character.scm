;; expect-error: 3:23: unknown character name
(define separators
  (list #\space #\tab #\bogus))
