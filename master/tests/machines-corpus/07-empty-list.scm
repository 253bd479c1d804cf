;; No machines at all, on purpose: no warning.
'()
