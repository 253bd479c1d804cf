;; Nothing but comments: the value is unspecified, hence the warning.
#| a block
   comment |#
#;(list "a datum comment")
