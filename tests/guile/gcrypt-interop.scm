;;; gcrypt-interop.scm --- drive real libgcrypt the way Guix does, for offload's interop tests.
;;;
;;; This script is the libgcrypt side of tests/tests/guile_interop.rs.  It uses
;;; guile-gcrypt's (gcrypt pk-crypto), the crypto stack of Guix, and does what
;;; Guix does with it: key generation as `guix archive --generate-key',
;;; signatures as `signature-sexp' in guix/pki.scm, verification as
;;; `%signature-status' / `validate-signature' (ACL membership of the subject,
;;; comparison of the signed hash with the expected one, then `verify').  It
;;; contains no code copied from Guix.
;;;
;;; One Guile process handles a whole batch, read from stdin.
;;;
;;; Bytes: libgcrypt's advanced format may contain raw bytes 0xA1-0xFF (quoted
;;; strings).  guile-gcrypt maps them to and from Guile strings as ISO-8859-1,
;;; so every port used here is ISO-8859-1 too: a character is a byte, and the
;;; bytes round-trip exactly.
;;;
;;; Framing: a "frame" is `<decimal byte length>\n<bytes>' (no terminator).
;;;
;;; Usage: guile --no-auto-compile -s gcrypt-interop.scm COMMAND ARGS...
;;;
;;;   check
;;;       Print "gcrypt <libgcrypt version>\n".
;;;   genkey DIR
;;;       Generate a key pair with Guix's parameters and write DIR/signing-key.pub
;;;       (0444) and DIR/signing-key.sec (0400) in advanced format.  Refuse if
;;;       either file exists.
;;;   sign SECRET-KEY-FILE PUBLIC-KEY-FILE
;;;       stdin: lines of 64 lowercase hex digits (a SHA-256 hash H each).
;;;       stdout: one frame per line, holding the complete signature
;;;       s-expression text (canonical-sexp->string of Guix's signature-sexp).
;;;   verify PUBLIC-KEY-FILE...
;;;       The key files form the ACL.  stdin: records `<expected H, 64 lowercase
;;;       hex>\n<frame with the signature text>'.  stdout: one line per record,
;;;       `ok' or `fail <reason>' with reason `corrupt', `unauthorized',
;;;       `hash-mismatch', `invalid' or `error <libgcrypt message>'.
;;;   reprint FILE...
;;;       For each file: parse it and write a frame with libgcrypt's printing.
;;;   canon
;;;       stdin: frames of s-expression text.  stdout: a frame with libgcrypt's
;;;       printing of each.
;;;   parts
;;;       stdin: frames of signature texts.  stdout: one line per signature,
;;;       `<H> <r> <s> <q>', each the lowercase hex of the atom's bytes as
;;;       stored (r and s minimal-length, as libgcrypt made them).

(use-modules (gcrypt pk-crypto)
             (gcrypt base16)
             (gcrypt common)
             (rnrs bytevectors)
             (rnrs io ports)
             (ice-9 match)
             (ice-9 rdelim)
             (ice-9 receive))

(define %latin-1 "ISO-8859-1")

;; Guix's default key generation parameters (%key-generation-parameters in
;; guix/scripts/archive.scm).
(define %key-generation-parameters
  "(genkey (ecdsa (curve Ed25519) (flags rfc6979)))")

(define (die fmt . args)
  (let ((err (current-error-port)))
    (display "gcrypt-interop: " err)
    (apply format err fmt args)
    (newline err)
    (exit 1)))

(define (setup-standard-ports!)
  (for-each (lambda (port)
              (set-port-encoding! port %latin-1)
              (set-port-conversion-strategy! port 'error))
            (list (current-input-port) (current-output-port))))

(define (read-latin-1-file file)
  "Return the contents of FILE as a string with one character per byte."
  (catch 'system-error
    (lambda ()
      (call-with-input-file file get-string-all #:encoding %latin-1))
    (lambda args
      (die "cannot read ~a: ~a" file
           (strerror (system-error-errno args))))))

(define (write-latin-1-file file text)
  "Write TEXT, one byte per character, to FILE."
  (call-with-output-file file
    (lambda (port)
      (set-port-conversion-strategy! port 'error)
      (put-string port text))
    #:encoding %latin-1))

(define (read-sexp-file file)
  (catch 'gcry-error
    (lambda () (string->canonical-sexp (read-latin-1-file file)))
    (lambda (key proc err)
      (die "cannot parse ~a: ~a" file (error-string err)))))

(define (write-frame text)
  "Write TEXT as `<length>\\n<bytes>' to stdout."
  (let ((port (current-output-port)))
    (put-string port (number->string (string-length text)))
    (put-string port "\n")
    (put-string port text)))

(define (read-frame)
  "Read one frame from stdin; return its text, or the EOF object."
  (let ((line (read-line (current-input-port))))
    (if (eof-object? line)
        line
        (let ((len (string->number line 10)))
          (unless (and len (exact-integer? len) (>= len 0))
            (die "bad frame length line ~s" line))
          (let ((text (if (zero? len)
                          ""
                          (get-string-n (current-input-port) len))))
            (when (or (eof-object? text) (< (string-length text) len))
              (die "truncated frame: wanted ~a bytes" len))
            text)))))

(define (hex->hash line)
  "Parse LINE, 64 lowercase hex digits, into a 32-byte bytevector."
  (unless (and (= (string-length line) 64)
               (string-every (char-set-union char-set:digit
                                             (string->char-set "abcdef"))
                             line))
    (die "not a lowercase SHA-256 hex digest: ~s" line))
  (base16-string->bytevector line))

(define (for-each-line proc)
  (let loop ()
    (let ((line (read-line (current-input-port))))
      (unless (eof-object? line)
        (proc line)
        (loop)))))

(define (for-each-frame proc)
  (let loop ()
    (let ((text (read-frame)))
      (unless (eof-object? text)
        (proc text)
        (loop)))))

;;; genkey

(define (cmd-genkey dir)
  (let ((public-file (string-append dir "/signing-key.pub"))
        (secret-file (string-append dir "/signing-key.sec")))
    (when (or (file-exists? public-file) (file-exists? secret-file))
      (die "key pair exists under '~a'; remove it first" dir))
    (let* ((pair   (generate-key
                    (string->canonical-sexp %key-generation-parameters)))
           (public (find-sexp-token pair 'public-key))
           (secret (find-sexp-token pair 'private-key)))
      ;; As Guix: files created under umask 0266 (so 0400), then the public
      ;; key made world-readable.
      (umask #o266)
      (write-latin-1-file public-file (canonical-sexp->string public))
      (write-latin-1-file secret-file (canonical-sexp->string secret))
      (chmod public-file #o444))))

;;; sign

(define (signature-sexp data secret-key public-key)
  "The signature s-expression Guix makes: (signature DATA SIG-VAL PUBLIC-KEY)."
  (string->canonical-sexp
   (string-append "(signature "
                  (canonical-sexp->string data) " "
                  (canonical-sexp->string (sign data secret-key)) " "
                  (canonical-sexp->string public-key)
                  ")")))

(define (cmd-sign secret-file public-file)
  (let* ((secret (read-sexp-file secret-file))
         (public (read-sexp-file public-file))
         (type   (key-type public)))
    (unless type
      (die "~a does not hold a public key" public-file))
    (for-each-line
     (lambda (line)
       (let ((data (bytevector->hash-data (hex->hash line) "sha256"
                                          #:key-type type)))
         (write-frame
          (canonical-sexp->string (signature-sexp data secret public))))))))

;;; verify

(define (signature-status text expected-hash acl)
  "Check signature TEXT as Guix does; ACL is a list of public keys as Scheme
sexps.  Return \"ok\" or \"fail <reason>\"."
  (catch 'gcry-error
    (lambda ()
      (let* ((sig     (string->canonical-sexp text))
             (subject (find-sexp-token sig 'public-key))
             (data    (find-sexp-token sig 'data))
             (sig-val (find-sexp-token sig 'sig-val)))
        (cond ((not (and subject data sig-val))
               "fail corrupt")
              ((not (member (canonical-sexp->sexp subject) acl))
               "fail unauthorized")
              ((not (receive (hash algorithm) (hash-data->bytevector data)
                      (equal? hash expected-hash)))
               "fail hash-mismatch")
              ((verify sig-val data subject)
               "ok")
              (else
               "fail invalid"))))
    (lambda (key proc err)
      (string-append "fail error " (symbol->string proc) ": "
                     (error-string err)))))

(define (cmd-verify public-files)
  (let ((acl (map (lambda (file)
                    (canonical-sexp->sexp (read-sexp-file file)))
                  public-files)))
    (for-each-line
     (lambda (line)
       (let ((expected (hex->hash line))
             (text     (read-frame)))
         (when (eof-object? text)
           (die "missing signature after expected hash ~a" line))
         (put-string (current-output-port)
                     (string-append (signature-status text expected acl)
                                    "\n")))))))

;;; reprint, canon, parts

(define (cmd-reprint files)
  (for-each (lambda (file)
              (write-frame (canonical-sexp->string (read-sexp-file file))))
            files))

(define (cmd-canon)
  (for-each-frame
   (lambda (text)
     (catch 'gcry-error
       (lambda ()
         (write-frame (canonical-sexp->string (string->canonical-sexp text))))
       (lambda (key proc err)
         (die "cannot parse ~s: ~a" text (error-string err)))))))

(define (atom-bytes list-sexp index)
  "The bytes of the INDEXth atom of LIST-SEXP, whether printed as a token,
a string or hex."
  (match (canonical-sexp-nth-data list-sexp index)
    ((? bytevector? bv) bv)
    ((? symbol? sym)   (string->bytevector (symbol->string sym) %latin-1))
    (_ (die "missing atom ~a" index))))

(define (cmd-parts)
  (define (token-value sexp token index)
    (let ((sub (find-sexp-token sexp token)))
      (unless sub
        (die "no (~a ...) in signature" token))
      (bytevector->base16-string (atom-bytes sub index))))
  (for-each-frame
   (lambda (text)
     (let ((sig (catch 'gcry-error
                  (lambda () (string->canonical-sexp text))
                  (lambda (key proc err)
                    (die "cannot parse ~s: ~a" text (error-string err))))))
       (put-string (current-output-port)
                   (string-append (token-value sig 'hash 2) " "
                                  (token-value sig 'r 1) " "
                                  (token-value sig 's 1) " "
                                  (token-value sig 'q 1) "\n"))))))

;;; main

(define (main args)
  (setup-standard-ports!)
  (match (cdr args)
    (("check")
     (put-string (current-output-port)
                 (string-append "gcrypt " (gcrypt-version) "\n")))
    (("genkey" dir) (cmd-genkey dir))
    (("sign" secret public) (cmd-sign secret public))
    (("verify" public public* ...) (cmd-verify (cons public public*)))
    (("reprint" files ...) (cmd-reprint files))
    (("canon") (cmd-canon))
    (("parts") (cmd-parts))
    (_ (die "usage: gcrypt-interop.scm check | genkey DIR | sign SEC PUB \
| verify PUB... | reprint FILE... | canon | parts")))
  (force-output (current-output-port)))

(main (command-line))
