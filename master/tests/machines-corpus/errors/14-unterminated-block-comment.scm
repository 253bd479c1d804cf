;; expect-error: 3:1: unterminated
(list)
#| this comment #| nested |# never ends
(list)
