;;; offload-machines.scm --- evaluate a Guix machines.scm file with real Guile.
;;;
;;; This is the Guile side of offload's machines.scm reader (spec
;;; guix-offload.md §3 and §4).  The Rust evaluator in
;;; master/src/machines/scheme/ handles the common subset natively and falls
;;; back to this script for anything else.  Guix itself is not needed: this
;;; module defines a `build-machine' record equivalent to Guix 2025's
;;; <build-machine> (guix/scripts/offload.scm).
;;;
;;; Usage:
;;;
;;;   guile --no-auto-compile -s offload-machines.scm eval FILE
;;;
;;; FILE is loaded as Guix does it: its top-level forms are read and
;;; evaluated in turn (like `primitive-load') in a fresh module that has the
;;; default guile-user bindings plus this module's exports, and the value of
;;; the last form is the result.  Output written by FILE itself goes to
;;; stderr, never to stdout.
;;;
;;; stdout (UTF-8), exactly one s-expression and a newline:
;;;
;;;   (machines
;;;    (machine (name "b1") (port 22) (systems ("x86_64-linux")) (user "u")
;;;             (private-key "/root/.ssh/id_rsa") (host-key "ssh-ed25519 AAAA")
;;;             (compression "zlib@openssh.com,zlib") (compression-level 3)
;;;             (daemon-socket "/var/guix/daemon-socket/socket")
;;;             (overload-threshold 0.8) (parallel-builds 1) (speed 1.0)
;;;             (features ()) (location "FILE" LINE COLUMN))
;;;    ...)
;;;
;;; Each (machine ...) is on one line of its own, one space indented; with no
;;; machine the output is "(machines)".  Values are printed by Guile's
;;; `write': strings with \\ \" \t \n \r \a \b \v \f \xHH \uHHHH \UHHHHHH
;;; escapes (other characters raw, UTF-8); integers as integers; `speed' and
;;; `overload-threshold' converted with `exact->inexact', so 2 prints 2.0,
;;; 3/2 prints 1.5, 1e20 prints 1.0e20; a disabled overload-threshold is #f.
;;; `systems' is the resolved list (or systems (list system)), and () when
;;; neither field is set.
;;;
;;; LOCATIONS.  Everywhere (the `location' field, messages on stderr) a line
;;; is 1-based.  A column counts characters (Unicode scalar values) and a TAB
;;; counts as ONE character, unlike Guile's port columns, which expand tabs to
;;; multiples of 8: this script converts Guile's columns.  In the `location'
;;; field the column is 0-based (the base of Guile's source properties); in
;;; every message on stderr it is 1-based (GNU style, what the Rust side
;;; prints).  So a form at the very start of line 3 has location ("F" 3 0)
;;; and is reported as F:3:1.  Guix itself prints Guile's 0-based column.
;;;
;;; stderr:
;;;
;;;   FILE:LINE:COL: warning: The 'system' field is deprecated, please use 'systems' instead.
;;;       for each returned machine (in list order) whose `systems' is #f and
;;;       whose `system' is a string: Guix warns when the scheduler reads the
;;;       systems of a machine that lacks them.
;;;   FILE:LINE:COL: warning: machine 'NAME' has neither 'systems' nor 'system'; it matches no build
;;;       for each returned machine with both #f (our deliberate choice).
;;;   warning: 'FILE' did not return a list of build machines; ignoring it
;;;       when the value of the last form is not a proper list of
;;;       build-machine records; stdout is then "(machines)", exit 0.
;;;   error: FILE:LINE:COL: MESSAGE          exit 1
;;;   error: FILE: MESSAGE                   exit 1, when there is no location
;;;
;;; A missing FILE (ENOENT) prints "(machines)", nothing on stderr, exit 0.
;;; Bad usage exits 2.
;;;
;;; Where errors are located (1-based line and column):
;;;   * reader errors, at the start of the offending text:
;;;       end of file inside a list     the innermost unclosed "(" or "["
;;;       unexpected ")" / mismatched   that closing parenthesis
;;;       unterminated string           its opening double quote
;;;       unterminated #| comment       its outermost "#|"
;;;       unknown character name        the "#" of "#\name"
;;;       bad escape in a string        the backslash
;;;       unknown # syntax              the "#"
;;;     (Guile itself reports the position just after the offending
;;;     character; this script moves it back.)  Messages about parentheses
;;;     start with "unbalanced parentheses: ".
;;;   * `build-machine' errors (missing, unknown, duplicate or malformed
;;;     fields, a field of the wrong type, inherit from a non-record): the
;;;     `(build-machine' form.  Field syntax is checked when the enclosing
;;;     top-level form is expanded, i.e. before any of it runs (even in code
;;;     that is never called); types are checked when the record is made.
;;;   * other syntax errors: the location Guile's expander gives, else the
;;;     top-level form.
;;;   * "unbound variable: NAME": the first occurrence of the symbol NAME in
;;;     the failing top-level form, outside quoted data (skip (quote ...);
;;;     inside (quasiquote ...) only (unquote ...) and (unquote-splicing ...)
;;;     count); if there is none, the first such occurrence in the top-level
;;;     forms read so far; else the failing top-level form.
;;;   * any other run-time error ("wrong type to apply: 5", errors raised by
;;;     procedures): the failing top-level form.
;;;
;;; Records.  `(build-machine CLAUSE ...)' takes `(FIELD VALUE)' clauses in
;;; any order; `(inherit EXPR)' is allowed as the FIRST clause only (as in
;;; Guix's define-record-type*).  Clauses are checked in this order:
;;;   "invalid field specifier: CLAUSE"   (not (IDENTIFIER EXPR), or inherit
;;;                                        elsewhere than first)
;;;   "duplicate field initializer: FIELD"
;;;   "unknown field initializers (F ...)"
;;;   "missing field initializers (F ...)" (without inherit; in field order)
;;; each prefixed with "build-machine: ".  Values are evaluated in clause
;;; order, then the inherited record.  Defaults (Guix 2025): port 22,
;;; systems #f, system #f, private-key $HOME/.ssh/id_rsa where $HOME is the
;;; home directory of the current user in the password database, compression
;;; "zlib@openssh.com,zlib", compression-level 3, daemon-socket
;;; "/var/guix/daemon-socket/socket", overload-threshold 0.8, parallel-builds
;;; 1, speed 1.0, features ().  The location is innate: a record made with
;;; inherit has the location of its own form.  Types are checked in field
;;; order, first failure wins, message "FIELD: expected TYPE, got VALUE"
;;; (VALUE as `write' prints it), prefixed with "build-machine: ":
;;;   name, user, host-key, private-key, compression, daemon-socket: a string
;;;   port: an integer in 1..65535          (exact integers only)
;;;   compression-level: an integer
;;;   parallel-builds: an integer >= 1
;;;   speed: a finite real > 0
;;;   overload-threshold: #f or a real in [0,1]
;;;   systems: #f or a list of strings
;;;   system: #f or a string
;;;   features: a list of strings
;;;
;;; Code:

(define-module (offload machines)
  #:use-module (srfi srfi-1)
  #:use-module (srfi srfi-9)
  #:use-module (srfi srfi-26)
  #:use-module (ice-9 match)
  #:use-module (ice-9 textual-ports)
  #:use-module ((system syntax) #:select (syntax?))
  #:export (build-machine
            build-machine?
            build-machine-name
            build-machine-port
            build-machine-systems
            build-machine-user
            build-machine-private-key
            build-machine-host-key
            build-machine-compression
            build-machine-compression-level
            build-machine-daemon-socket
            build-machine-overload-threshold
            build-machine-parallel-builds
            build-machine-speed
            build-machine-features
            build-machine-location))


;;;
;;; The record.
;;;

(define-record-type <build-machine>
  (%make-build-machine name port systems system user private-key host-key
                       compression compression-level daemon-socket
                       overload-threshold parallel-builds speed features
                       location)
  build-machine?
  (name               build-machine-name)
  (port               build-machine-port)
  (systems            %build-machine-systems)
  (system             %build-machine-system)
  (user               build-machine-user)
  (private-key        build-machine-private-key)
  (host-key           build-machine-host-key)
  (compression        build-machine-compression)
  (compression-level  build-machine-compression-level)
  (daemon-socket      build-machine-daemon-socket)
  (overload-threshold build-machine-overload-threshold)
  (parallel-builds    build-machine-parallel-builds)
  (speed              build-machine-speed)
  (features           build-machine-features)
  ;; Guile source properties (an alist: filename, line 0-based, column
  ;; 0-based with tabs expanded) of the `(build-machine' form, or #f.
  (location           build-machine-location))

;; Field names in record order.
(define %fields
  '(name port systems system user private-key host-key compression
    compression-level daemon-socket overload-threshold parallel-builds speed
    features))

(define (field-ref machine field)
  (case field
    ((name) (build-machine-name machine))
    ((port) (build-machine-port machine))
    ((systems) (%build-machine-systems machine))
    ((system) (%build-machine-system machine))
    ((user) (build-machine-user machine))
    ((private-key) (build-machine-private-key machine))
    ((host-key) (build-machine-host-key machine))
    ((compression) (build-machine-compression machine))
    ((compression-level) (build-machine-compression-level machine))
    ((daemon-socket) (build-machine-daemon-socket machine))
    ((overload-threshold) (build-machine-overload-threshold machine))
    ((parallel-builds) (build-machine-parallel-builds machine))
    ((speed) (build-machine-speed machine))
    ((features) (build-machine-features machine))))

;; Top-level form being evaluated by the driver: its source properties are
;; the fallback location of records and errors.
(define %toplevel-source #f)

(define (machine-error source message)
  (throw 'offload-machine-error source message))

(define (default-private-key source)
  (let ((home (false-if-exception (passwd:dir (getpwuid (getuid))))))
    (unless (string? home)
      (machine-error source
                     (format #f "build-machine: private-key: cannot find the \
home directory of user ID ~a; set 'private-key'" (getuid))))
    (string-append home "/.ssh/id_rsa")))

(define (default-value field source)
  (case field
    ((port) 22)
    ((systems system) #f)
    ((private-key) (default-private-key source))
    ((compression) "zlib@openssh.com,zlib")
    ((compression-level) 3)
    ((daemon-socket) "/var/guix/daemon-socket/socket")
    ((overload-threshold) 0.8)
    ((parallel-builds) 1)
    ((speed) 1.0)
    ((features) '())
    (else #f)))

(define (string-list? x)
  (and (list? x) (every string? x)))

;; FIELD -> (PREDICATE . EXPECTED-TEXT)
(define %field-types
  `((name               ,string? . "a string")
    (port               ,(lambda (x) (and (exact-integer? x) (<= 1 x 65535)))
                        . "an integer in 1..65535")
    (systems            ,(lambda (x) (or (not x) (string-list? x)))
                        . "#f or a list of strings")
    (system             ,(lambda (x) (or (not x) (string? x)))
                        . "#f or a string")
    (user               ,string? . "a string")
    (private-key        ,string? . "a string")
    (host-key           ,string? . "a string")
    (compression        ,string? . "a string")
    (compression-level  ,exact-integer? . "an integer")
    (daemon-socket      ,string? . "a string")
    (overload-threshold ,(lambda (x) (or (not x) (and (real? x) (<= 0 x 1))))
                        . "#f or a real in [0,1]")
    (parallel-builds    ,(lambda (x) (and (exact-integer? x) (>= x 1)))
                        . "an integer >= 1")
    (speed              ,(lambda (x) (and (real? x) (finite? x) (> x 0)))
                        . "a finite real > 0")
    (features           ,string-list? . "a list of strings")))

(define (%construct-build-machine source base-thunk field-thunks)
  "Make a record from FIELD-THUNKS, an alist of field names and thunks
returning their values (called in order), and BASE-THUNK, #f or a thunk
returning the inherited record.  SOURCE is the location of the form."
  (let* ((source (or source %toplevel-source))
         (given  (map (match-lambda ((field . thunk) (cons field (thunk))))
                      field-thunks))
         (base   (and base-thunk (base-thunk))))
    (when (and base-thunk (not (build-machine? base)))
      (machine-error source
                     (format #f "build-machine: inherit: expected a \
build-machine record, got ~s" base)))
    (let ((values (map (lambda (field)
                         (cond ((assq field given) => cdr)
                               (base (field-ref base field))
                               (else (default-value field source))))
                       %fields)))
      (for-each (lambda (field value)
                  (match (assq-ref %field-types field)
                    ((ok? . expected)
                     (unless (ok? value)
                       (machine-error source
                                      (format #f "build-machine: ~a: expected ~a, got ~s"
                                              field expected value))))))
                %fields values)
      (apply %make-build-machine (append values (list source))))))

(define-syntax build-machine
  (lambda (form)
    (define known
      '(name port systems system user private-key host-key compression
        compression-level daemon-socket overload-threshold parallel-builds
        speed features))
    (define required '(name user host-key))
    (define (fail fmt . args)
      (syntax-violation 'build-machine (apply format #f fmt args) form))
    (define (clause-field clause first?)
      ;; The field name of CLAUSE, a symbol, or an error.
      (syntax-case clause ()
        ((field value)
         (and (identifier? #'field)
              (or first? (not (eq? (syntax->datum #'field) 'inherit))))
         (syntax->datum #'field))
        (_
         (fail "invalid field specifier: ~s" (syntax->datum clause)))))
    (syntax-case form ()
      ((_ clause ...)
       (let* ((clauses #'(clause ...))
              (names   (let loop ((clauses clauses) (first? #t) (acc '()))
                         (if (null? clauses)
                             (reverse acc)
                             (loop (cdr clauses) #f
                                   (cons (clause-field (car clauses) first?)
                                         acc)))))
              (inherit? (and (pair? names) (eq? (car names) 'inherit)))
              (fields  (if inherit? (cdr names) names))
              (exprs   (map (lambda (clause)
                              (syntax-case clause () ((_ value) #'value)))
                            (if inherit? (cdr clauses) clauses))))
         (let loop ((seen '()) (rest fields))
           (match rest
             (() #t)
             ((field . rest)
              (when (memq field seen)
                (fail "duplicate field initializer: ~a" field))
              (loop (cons field seen) rest))))
         (let ((unknown (remove (lambda (f) (memq f known)) fields)))
           (unless (null? unknown)
             (fail "unknown field initializers ~a" unknown)))
         (unless inherit?
           (let ((missing (remove (lambda (f) (memq f fields)) required)))
             (unless (null? missing)
               (fail "missing field initializers ~a" missing))))
         (with-syntax ((source (datum->syntax form (syntax-source form)))
                       (base   (if inherit?
                                   (syntax-case (car clauses) ()
                                     ((_ base) #'(lambda () base)))
                                   #f))
                       (((field . expr) ...)
                        (map (lambda (field expr)
                               (cons (datum->syntax form field) expr))
                             fields exprs)))
           #'(%construct-build-machine 'source base
                                       (list (cons 'field (lambda () expr))
                                             ...))))))))

(define (build-machine-system machine)
  "The deprecated `system' field; warns like Guix."
  (format (current-error-port) "~a: warning: The 'system' field is deprecated, \
please use 'systems' instead.~%"
          (source->string (build-machine-location machine)))
  (%build-machine-system machine))

(define (build-machine-systems machine)
  "(or systems (list system)), as in Guix."
  (or (%build-machine-systems machine)
      (list (build-machine-system machine))))


;;;
;;; Locations.
;;;

(define %file-lines (make-hash-table))

(define (file-lines file)
  "The lines of FILE as a vector of strings, or #f."
  (or (hash-ref %file-lines file)
      (let ((lines (false-if-exception
                    (list->vector
                     (string-split (call-with-input-file file
                                     (lambda (port)
                                       (set-port-encoding!
                                        port (or (file-encoding port) "UTF-8"))
                                       (get-string-all port)))
                                   #\newline)))))
        (hash-set! %file-lines file lines)
        lines)))

(define (char-column file line guile-column)
  "Convert GUILE-COLUMN (0-based, tabs expanded as Guile's ports do) on LINE
\(0-based) of FILE to a 0-based count of characters."
  (let* ((lines (file-lines file))
         (text  (and lines (< -1 line (vector-length lines))
                     (vector-ref lines line))))
    (if (not text)
        guile-column
        (let loop ((i 0) (col 0))
          (if (or (>= col guile-column) (>= i (string-length text)))
              i
              (loop (+ i 1)
                    (case (string-ref text i)
                      ((#\tab) (+ col (- 8 (modulo col 8))))
                      ((#\return) 0)
                      ((#\alarm) col)
                      ((#\backspace) (max 0 (- col 1)))
                      (else (+ col 1)))))))))

(define (source-location source)
  "SOURCE, Guile source properties (alist or #(file line col)), as a list
\(FILE LINE COLUMN) with a 1-based line and a 0-based character column, or #f."
  (define (make file line col)
    (and (string? file) (integer? line) (integer? col)
         (list file (+ line 1) (char-column file line col))))
  (match source
    (#(file line col) (make file line col))
    ((((? symbol?) . _) . _)
     (make (assq-ref source 'filename) (assq-ref source 'line)
           (assq-ref source 'column)))
    (_ #f)))

(define (source->string source)
  "FILE:LINE:COL with a 1-based column, or \"<unknown location>\"."
  (match (source-location source)
    ((file line col) (format #f "~a:~a:~a" file line (+ col 1)))
    (#f "<unknown location>")))


;;;
;;; Reader errors.
;;;

(define (unclosed-position text)
  "Scan TEXT as Guile's reader would and return what is open at its end:
\(list KIND LINE COL) with KIND one of `list', `string', `comment' and a
1-based LINE and COL, or #f."
  (let ((n (string-length text)))
    (let loop ((i 0) (line 1) (col 1) (parens '()))
      (define (peek k) (and (< (+ i k) n) (string-ref text (+ i k))))
      (define (advance i line col count)
        ;; Move COUNT characters forward from I.
        (let adv ((i i) (line line) (col col) (count count))
          (if (or (zero? count) (>= i n))
              (values i line col)
              (if (char=? (string-ref text i) #\newline)
                  (adv (+ i 1) (+ line 1) 1 (- count 1))
                  (adv (+ i 1) line (+ col 1) (- count 1))))))
      (define (skip-until i line col done?)
        ;; Advance until (DONE? i) gives a count of characters to skip, or EOF.
        (let skip ((i i) (line line) (col col))
          (cond ((>= i n) (values #f line col))
                ((done? i) => (lambda (k) (advance i line col k)))
                (else (call-with-values (lambda () (advance i line col 1))
                        skip)))))
      (if (>= i n)
          (match parens
            (((l . c) . _) (list 'list l c))
            (() #f))
          (let ((c (string-ref text i)))
            (cond
             ((char=? c #\;)
              (call-with-values
                  (lambda () (skip-until i line col
                                         (lambda (j)
                                           (and (char=? (string-ref text j)
                                                        #\newline)
                                                0))))
                (lambda (j l c) (if j (loop j l c parens) (loop n l c parens)))))
             ((char=? c #\")
              (call-with-values
                  (lambda ()
                    (let str ((j (+ i 1)) (l line) (k (+ col 1)))
                      (cond ((>= j n) (values #f l k))
                            ((char=? (string-ref text j) #\\)
                             (call-with-values (lambda () (advance j l k 2))
                               str))
                            ((char=? (string-ref text j) #\")
                             (values (+ j 1) l (+ k 1)))
                            (else
                             (call-with-values (lambda () (advance j l k 1))
                               str)))))
                (lambda (j l k)
                  (if j
                      (loop j l k parens)
                      (list 'string line col)))))
             ((and (char=? c #\#) (eqv? (peek 1) #\|))
              (let comment ((j (+ i 2)) (l line) (k (+ col 2)) (depth 1))
                (cond ((>= j n) (list 'comment line col))
                      ((and (char=? (string-ref text j) #\|)
                            (< (+ j 1) n) (char=? (string-ref text (+ j 1)) #\#))
                       (if (= depth 1)
                           (loop (+ j 2) l (+ k 2) parens)
                           (comment (+ j 2) l (+ k 2) (- depth 1))))
                      ((and (char=? (string-ref text j) #\#)
                            (< (+ j 1) n) (char=? (string-ref text (+ j 1)) #\|))
                       (comment (+ j 2) l (+ k 2) (+ depth 1)))
                      ((char=? (string-ref text j) #\newline)
                       (comment (+ j 1) (+ l 1) 1 depth))
                      (else (comment (+ j 1) l (+ k 1) depth)))))
             ((and (char=? c #\#) (eqv? (peek 1) #\!))
              ;; #!fold-case and the like are directives, else a comment.
              (let ((end (let find ((j (+ i 2)))
                           (cond ((>= (+ j 1) n) #f)
                                 ((and (char=? (string-ref text j) #\!)
                                       (char=? (string-ref text (+ j 1)) #\#))
                                  (+ j 2))
                                 (else (find (+ j 1)))))))
                (if (and end
                         (not (string-prefix? "#!fold-case" (substring text i)))
                         (not (string-prefix? "#!no-fold-case" (substring text i))))
                    (call-with-values (lambda () (advance i line col (- end i)))
                      (lambda (j l k) (loop j l k parens)))
                    (loop (+ i 2) line (+ col 2) parens))))
             ((and (char=? c #\#) (eqv? (peek 1) #\\))
              ;; A character: #\ then one character, then a name.
              (let name ((j (+ i 3)) (k (+ col 3)))
                (if (and (< j n)
                         (not (memv (string-ref text j)
                                    '(#\space #\tab #\newline #\return #\( #\)
                                      #\[ #\] #\" #\;))))
                    (name (+ j 1) (+ k 1))
                    (if (and (< (+ i 2) n)
                             (char=? (string-ref text (+ i 2)) #\newline))
                        (loop (min n (+ i 3)) (+ line 1) 1 parens)
                        (loop (min n j) line k parens)))))
             ((memv c '(#\( #\[))
              (loop (+ i 1) line (+ col 1) (cons (cons line col) parens)))
             ((memv c '(#\) #\]))
              (loop (+ i 1) line (+ col 1) (if (pair? parens) (cdr parens) '())))
             ((char=? c #\newline)
              (loop (+ i 1) (+ line 1) 1 parens))
             (else
              (loop (+ i 1) line (+ col 1) parens))))))))

(define (read-error-report file message)
  "MESSAGE is Guile's reader message \"FILE:LINE:COL: TEXT\" where COL is
1-based and points just after the offending character.  Return the line
for stderr, moved to the start of the offending text."
  (define prefix (string-append file ":"))
  (define (guile-position rest)
    ;; "LINE:COL: TEXT" -> (values LINE COL TEXT) or #f
    (let* ((c1 (string-index rest #\:))
           (c2 (and c1 (string-index rest #\: (+ c1 1))))
           (line (and c2 (string->number (substring rest 0 c1))))
           (col  (and c2 (string->number (substring rest (+ c1 1) c2)))))
      (if (and line col (< (+ c2 1) (string-length rest)))
          (values line col (string-trim (substring rest (+ c2 1))))
          (values #f #f message))))
  (if (not (string-prefix? prefix message))
      (format #f "error: ~a: ~a" file message)
      (call-with-values (lambda () (guile-position (substring message (string-length prefix))))
        (lambda (line col text)
          (define (at line col text)
            (format #f "error: ~a:~a:~a: ~a" file line col text))
          (define (back count)
            ;; The 1-based character column COUNT characters before Guile's.
            (let ((after (char-column file (- line 1) (- col 1))))
              (+ 1 (max 0 (- after count)))))
          (define (unclosed kind text)
            (match (let ((lines (file-lines file)))
                     (and lines
                          (unclosed-position
                           (string-join (vector->list lines) "\n"))))
              (((? (cut eq? <> kind)) l c) (at l c text))
              (_ (at line (back 0) text))))
          (cond
           ((not line) (format #f "error: ~a: ~a" file text))
           ((string-contains text "end of input while searching for")
            (unclosed 'list (string-append "unbalanced parentheses: " text)))
           ((or (string-prefix? "unexpected \")\"" text)
                (string-prefix? "mismatched close paren" text))
            (at line (back 1) (string-append "unbalanced parentheses: " text)))
           ((string-contains text "end of input while reading string")
            (unclosed 'string "unterminated string (end of input while reading string)"))
           ((string-prefix? "unterminated `#|" text)
            (unclosed 'comment text))
           ((string-prefix? "unknown character name " text)
            (let ((name (substring text (string-length "unknown character name "))))
              (at line (back (+ 2 (string-length name)))
                  (string-append "unknown character name #\\" name))))
           ((string-prefix? "missing close paren" text)
            (at line (back 1) text))
           ((string-prefix? "invalid character in escape sequence" text)
            (at line (back 2) text))
           ((string-prefix? "Unknown # object: " text)
            (let ((object (false-if-exception
                           (with-input-from-string
                               (substring text (string-length "Unknown # object: "))
                             read))))
              (at line (back (if (string? object) (string-length object) 1))
                  (string-append "unknown # syntax: "
                                 (if (string? object) object text)))))
           (else (at line (back 0) text)))))))


;;;
;;; Run-time error locations.
;;;

(define (first-reference form name)
  "Source of the first occurrence of the symbol NAME in FORM, a syntax object
from `read-syntax', outside quoted data; or #f."
  ;; The reader leaves some parts bare (the `quote' of 'x, for instance).
  (define (symbol-of x)
    (let ((datum (if (syntax? x) (syntax->datum x) x)))
      (and (symbol? datum) datum)))
  (define (walk stx quasi?)
    (let ((symbol (symbol-of stx)))
      (if symbol
          (and (not quasi?) (eq? symbol name) (syntax? stx)
               (syntax-source stx))
          (syntax-case stx ()
            ((head . rest)
             (let ((head (symbol-of #'head)))
               (cond ((eq? head 'quote) #f)
                     ((eq? head 'quasiquote) (walk-elements #'rest #t))
                     ((and quasi? (memq head '(unquote unquote-splicing)))
                      (walk-elements #'rest #f))
                     (else (walk-elements stx quasi?)))))
            (#(element ...)
             (walk-elements #'(element ...) quasi?))
            (_ #f)))))
  (define (walk-elements stx quasi?)
    (syntax-case stx ()
      ((first . rest) (or (walk #'first quasi?) (walk-elements #'rest quasi?)))
      (() #f)
      (tail (walk #'tail quasi?))))
  (walk form #f))


;;;
;;; The driver.
;;;

(define (make-user-module)
  (let ((module (make-fresh-user-module)))
    (module-use! module (resolve-interface '(offload machines)))
    module))

(define (fail-with line)
  (display line (current-error-port))
  (newline (current-error-port))
  (exit 1))

(define (report-error file key args form forms)
  "Print the error for the exception KEY ARGS raised by FORM (a syntax object)
among FORMS (read so far, in order), and exit 1."
  (define form-source (and form (syntax-source form)))
  (define (at source message)
    (match (source-location (or source form-source))
      ((f line col) (format #f "error: ~a:~a:~a: ~a" f line (+ col 1) message))
      (#f (format #f "error: ~a: ~a" file message))))
  (fail-with
   (match (cons key args)
     (('read-error subr fmt fmt-args . _)
      (read-error-report file (apply format #f fmt (or fmt-args '()))))
     (('offload-machine-error source message)
      (at source message))
     (('syntax-error who message source form* subform . _)
      (at (or source
              (and (syntax? subform) (syntax-source subform))
              (and (syntax? form*) (syntax-source form*)))
          (if who (format #f "~a: ~a" who message) message)))
     (('unbound-variable _ _ (name) . _)
      (at (or (first-reference form name)
              (any (cut first-reference <> name) forms))
          (format #f "unbound variable: ~a" name)))
     (('wrong-type-arg #f "Wrong type to apply: ~S" (value) . _)
      (at #f (format #f "wrong type to apply: ~s" value)))
     (('system-error . _)
      (at #f (call-with-output-string
               (lambda (port) (print-exception port #f key args)))))
     (_
      (at #f (string-trim-right
              (call-with-output-string
                (lambda (port) (print-exception port #f key args)))))))))

(define (evaluate-file file)
  "Load FILE as Guix's `build-machines' does; return the value of its last
form, or the empty list when FILE does not exist."
  (define module (make-user-module))
  (define port
    (catch 'system-error
      (lambda () (open-input-file file))
      (lambda args
        (if (= ENOENT (system-error-errno args))
            #f
            (fail-with (format #f "error: ~a: failed to open machine file: ~a"
                               file (strerror (system-error-errno args))))))))
  (if (not port)
      '()
      (begin
        (catch 'system-error
          (lambda ()
            (set-port-encoding! port (or (file-encoding port) "UTF-8")))
          (lambda args
            (fail-with (format #f "error: ~a: failed to read machine file: ~a"
                               file (strerror (system-error-errno args))))))
        (let loop ((value *unspecified*) (forms '()))
          (let ((form (catch #t
                        (lambda () (read-syntax port))
                        (lambda (key . args)
                          (report-error file key args #f (reverse forms))))))
            (if (eof-object? form)
                (begin (close-port port) value)
                (let ((forms (cons form forms)))
                  (set! %toplevel-source (syntax-source form))
                  (loop (catch #t
                          (lambda ()
                            (with-output-to-port (current-error-port)
                              (lambda () (eval form module))))
                          (lambda (key . args)
                            (report-error file key args form (reverse forms))))
                        forms))))))))

(define (machine->sexp machine)
  (define (inexact x) (and x (exact->inexact x)))
  `(machine (name ,(build-machine-name machine))
            (port ,(build-machine-port machine))
            (systems ,(or (%build-machine-systems machine)
                          (let ((system (%build-machine-system machine)))
                            (if system (list system) '()))))
            (user ,(build-machine-user machine))
            (private-key ,(build-machine-private-key machine))
            (host-key ,(build-machine-host-key machine))
            (compression ,(build-machine-compression machine))
            (compression-level ,(build-machine-compression-level machine))
            (daemon-socket ,(build-machine-daemon-socket machine))
            (overload-threshold
             ,(inexact (build-machine-overload-threshold machine)))
            (parallel-builds ,(build-machine-parallel-builds machine))
            (speed ,(inexact (build-machine-speed machine)))
            (features ,(build-machine-features machine))
            (location ,@(or (source-location (build-machine-location machine))
                            '(#f #f #f)))))

(define (warn-about-systems machine)
  (unless (%build-machine-systems machine)
    (let ((where (source->string (build-machine-location machine))))
      (if (%build-machine-system machine)
          (format (current-error-port) "~a: warning: The 'system' field is \
deprecated, please use 'systems' instead.~%" where)
          (format (current-error-port) "~a: warning: machine '~a' has neither \
'systems' nor 'system'; it matches no build~%"
                  where (build-machine-name machine))))))

(define (main args)
  (set-port-encoding! (current-output-port) "UTF-8")
  (set-port-encoding! (current-error-port) "UTF-8")
  (match args
    ((_ "eval" file)
     (let* ((value    (evaluate-file file))
            (machines (if (and (list? value) (every build-machine? value))
                          value
                          (begin
                            (format (current-error-port) "warning: '~a' did \
not return a list of build machines; ignoring it~%" file)
                            '()))))
       (for-each warn-about-systems machines)
       (let ((out (current-output-port)))
         (display "(machines" out)
         (for-each (lambda (machine)
                     (display "\n " out)
                     (write (machine->sexp machine) out))
                   machines)
         (display ")\n" out)
         (force-output out))
       (exit 0)))
    (_
     (format (current-error-port)
             "usage: guile --no-auto-compile -s offload-machines.scm eval FILE~%")
     (exit 2))))

;; Run the driver when invoked as a script ("guile -s offload-machines.scm
;; eval FILE"), not when loaded as a module.
(let ((args (command-line)))
  (when (and (pair? args)
             (string-suffix? "offload-machines.scm" (car args)))
    (main args)))

;;; offload-machines.scm ends here
