//! The evaluator on hostile and tricky files.

use super::eval::{EvalError, Evaluator, Value};
use super::read::read_all;

fn run(src: &str) -> Result<Value, EvalError> {
    let forms = read_all(src).expect("reads");
    Evaluator::new("t.scm", "/root/.ssh/id_rsa", Box::new(|_| None)).run(&forms)
}

fn message(src: &str) -> String {
    match run(src) {
        Err(EvalError::Invalid { message, .. } | EvalError::Unsupported { what: message, .. }) => {
            message
        }
        Ok(v) => panic!("{src} gave {}", v.write()),
    }
}

#[test]
fn runaway_files_stop_with_an_error() {
    assert!(message("(define (f) (f)) (f)").contains("nested deeper"));
    assert!(message("(define (f x) (f (list x))) (f 1)").contains("deeper"));
    let doubling = format!(
        "(define s \"ab\") {}",
        "(define s (string-append s s)) ".repeat(25)
    );
    assert!(message(&doubling).contains("longer than"));
    let growing = format!("(define x '(1)) {}", "(define x (append x x)) ".repeat(25));
    assert!(message(&growing).contains("longer than"));
    let nested = format!("(define x '()) {}", "(define x (list x x)) ".repeat(150));
    assert!(message(&nested).contains("nested deeper than 100"));
    // Shared structure does not make comparison exponential.
    let shared = format!(
        "(define x '()) {} (equal? x x)",
        "(define x (list x x)) ".repeat(60)
    );
    assert!(matches!(run(&shared), Ok(Value::Bool(true))));
}

#[test]
fn begin_defines_at_top_level_and_let_star_nests() {
    assert!(matches!(
        run("(define x 0) (begin (define x 1)) x"),
        Ok(Value::Int(1))
    ));
    assert!(matches!(
        run("(let* ((a 1) (b (+ a 1))) b)"),
        Ok(Value::Int(2))
    ));
}

#[test]
fn quasiquote_edge_cases() {
    assert_eq!(run("(define b 2) `(a . ,b)").unwrap().write(), "(a . 2)");
    assert_eq!(
        run("(define b '(2 3)) `(a . ,b)").unwrap().write(),
        "(a 2 3)"
    );
    assert!(run("(define x '(1)) `,@,x").is_err(), "no panic on `,@,x`");
}

#[test]
fn several_lists_to_map_are_left_to_guile() {
    assert!(matches!(
        run("(map list '(1) '(2))"),
        Err(EvalError::Unsupported { .. })
    ));
}

#[test]
fn field_types_are_checked_in_declaration_order() {
    let m =
        message(r#"(build-machine (name "a") (user "u") (host-key "k") (speed 0) (port "22"))"#);
    assert!(m.starts_with("build-machine: port:"), "{m}");
}
