;; expect-error: 3:24: escape
(list
  (string-append "a" "b\qc"))
