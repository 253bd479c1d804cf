;; expect-error: 3:3: inherit: expected
(list
  (build-machine (inherit "a.lan") (name "b.lan")))
