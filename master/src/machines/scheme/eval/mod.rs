//! The evaluator: the subset of Scheme that machines.scm files use.
//!
//! Special forms: `quote`, `quasiquote` (with `unquote` and
//! `unquote-splicing`), `define`, `let`, `let*`, `lambda`, `if`, `cond`,
//! `when`, `unless`, `and`, `or`, `begin`, `use-modules` (of known modules),
//! `(@ (srfi srfi-1) append-map)`, and `build-machine` with `(inherit …)`.
//! Procedures: `list`, `cons`, `car`, `cdr`, `append`, `string-append`,
//! `getenv`, `map`, `filter`, `append-map`, `build-machine?`, `null?`,
//! `pair?`, `list?`, `not`, `length`, `reverse`, `equal?`, `+`, `-`, `*`.
//!
//! As in Guile, each top-level form is expanded before it runs: the field
//! syntax of every `build-machine` in it (clause shape, duplicates, unknown
//! and missing fields, in that order) is checked first, even inside a
//! procedure that is never called. Error locations follow the corpus
//! conventions (`master/tests/machines-corpus/README.md`): record errors at
//! the `(build-machine` form, unbound variables at their first occurrence,
//! other run-time errors at the failing top-level form.
//!
//! Anything else is [`EvalError::Unsupported`]: the caller may hand the file
//! to Guile instead. Errors Guile raises as well are [`EvalError::Invalid`].

use std::cell::RefCell;
use std::rc::Rc;

use super::read::{Datum, Kind, Pos};
use crate::machines::record::{
    BuildMachine, FIELDS, FieldValue, Fields, Location, REQUIRED, format_real, write_string,
};

/// Deepest evaluation recursion (guards against runaway recursion in the file).
pub const MAX_EVAL_DEPTH: usize = 256;
/// The evaluation budget of one file: steps, plus one unit per list
/// element allocated (lists are copied by `cons`, `cdr`, `reverse`, …), so
/// that neither endless loops nor quadratic copying can exhaust time or
/// memory (a million units is at most a few tens of MiB).
pub const MAX_STEPS: u64 = 1_000_000;
/// Modules a file may `use-modules` (their bindings used by machines files are built in).
const KNOWN_MODULES: [&str; 5] = [
    "(gnu)",
    "(guix)",
    "(guix scripts offload)",
    "(srfi srfi-1)",
    "(guix records)",
];

mod builtins;
mod special;
mod syntax;
mod value;

use self::builtins::BUILTINS;
pub use self::syntax::datum_write;
use self::syntax::{check_syntax, find_symbol};
pub use self::value::{
    Env, ListVal, MAX_LIST, MAX_STRING, MAX_VALUE_DEPTH, PairVal, Procedure, Record, Scope, Value,
};

/// Why evaluation stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// A form this evaluator does not implement (Guile may).
    #[error("{pos}: {what}")]
    Unsupported {
        /// Where.
        pos: Pos,
        /// What.
        what: String,
    },
    /// An error Guile would raise too.
    #[error("{pos}: {message}")]
    Invalid {
        /// Where.
        pos: Pos,
        /// What.
        message: String,
    },
}

/// Errors inside evaluation, before they get their final location.
enum Fail {
    /// A run-time error: located at the failing top-level form.
    Runtime(String),
    /// An error located where it was found (record errors).
    At(Pos, String),
    /// An unbound variable: located at its first occurrence.
    Unbound(String),
    /// A form the evaluator does not implement.
    Unsupported(Pos, String),
}

type Result<T> = std::result::Result<T, Fail>;

fn runtime(message: impl Into<String>) -> Fail {
    Fail::Runtime(message.into())
}

/// Answers Scheme's `getenv`.
pub type Getenv = Box<dyn Fn(&str) -> Option<String>>;

/// Evaluates the top-level forms of one file.
pub struct Evaluator {
    file: String,
    default_private_key: String,
    getenv: Getenv,
    steps: u64,
    /// Every scope made, to break closure ↔ scope cycles when the run ends.
    scopes: Vec<std::rc::Weak<Scope>>,
}

impl Evaluator {
    /// An evaluator for `file`; `getenv` answers Scheme's `getenv`.
    pub fn new(file: &str, default_private_key: &str, getenv: Getenv) -> Self {
        Self {
            file: file.to_owned(),
            default_private_key: default_private_key.to_owned(),
            getenv,
            steps: 0,
            scopes: Vec::new(),
        }
    }

    /// Expand and evaluate the forms in order; the result is the value of
    /// the last. Procedures in the result no longer see their bindings: the
    /// scopes are emptied at the end, which frees closures that refer to
    /// the scope they are defined in.
    pub fn run(mut self, forms: &[Datum]) -> std::result::Result<Value, EvalError> {
        let env = self.scope(None);
        let result = self.run_forms(forms, &env);
        for scope in self.scopes.drain(..).filter_map(|w| w.upgrade()) {
            scope.vars.borrow_mut().clear();
        }
        result
    }

    fn scope(&mut self, parent: Option<&Env>) -> Env {
        let scope = Rc::new(Scope {
            vars: RefCell::default(),
            parent: parent.cloned(),
        });
        self.scopes.push(Rc::downgrade(&scope));
        scope
    }

    fn run_forms(&mut self, forms: &[Datum], env: &Env) -> std::result::Result<Value, EvalError> {
        let mut value = Value::Unspecified;
        for (i, form) in forms.iter().enumerate() {
            let result = check_syntax(form, 0).and_then(|()| self.eval(form, env, 0));
            value = result.map_err(|fail| match fail {
                Fail::Runtime(message) => EvalError::Invalid {
                    pos: form.pos,
                    message,
                },
                Fail::At(pos, message) => EvalError::Invalid { pos, message },
                Fail::Unsupported(pos, what) => EvalError::Unsupported {
                    pos: if pos.line == 0 { form.pos } else { pos },
                    what,
                },
                Fail::Unbound(name) => {
                    let pos = find_symbol(form, &name, 0)
                        .or_else(|| forms[..i].iter().find_map(|f| find_symbol(f, &name, 0)))
                        .unwrap_or(form.pos);
                    EvalError::Unsupported {
                        pos,
                        what: format!("unbound variable: {name}"),
                    }
                }
            })?;
        }
        Ok(value)
    }

    fn eval(&mut self, d: &Datum, env: &Env, depth: usize) -> Result<Value> {
        self.charge(1)?;
        if depth > MAX_EVAL_DEPTH {
            return Err(runtime(format!(
                "evaluation nested deeper than {MAX_EVAL_DEPTH} levels (runaway recursion?)"
            )));
        }
        let value = self.eval_kind(d, env, depth)?;
        if value.depth() > MAX_VALUE_DEPTH {
            return Err(runtime(format!(
                "a value nested deeper than {MAX_VALUE_DEPTH} levels"
            )));
        }
        Ok(value)
    }

    /// Count `n` units of work or allocation, before doing it; too much is
    /// an error, as a file must neither hang nor exhaust the master.
    fn charge(&mut self, n: u64) -> Result<()> {
        self.steps = self.steps.saturating_add(n);
        if self.steps > MAX_STEPS {
            return Err(runtime(format!(
                "evaluation budget exceeded: more than {MAX_STEPS} steps and list elements (an endless loop, or lists copied over and over?)"
            )));
        }
        Ok(())
    }

    fn eval_kind(&mut self, d: &Datum, env: &Env, depth: usize) -> Result<Value> {
        match &d.kind {
            Kind::Int(i) => Ok(Value::Int(*i)),
            Kind::Real(r) => Ok(Value::Real(*r)),
            Kind::Str(s) => Ok(Value::Str(s.as_str().into())),
            Kind::Bool(b) => Ok(Value::Bool(*b)),
            Kind::Char(c) => Ok(Value::Char(*c)),
            Kind::Keyword(k) => Ok(Value::Keyword(k.as_str().into())),
            Kind::Symbol(name) => env
                .lookup(name)
                .or_else(|| {
                    BUILTINS
                        .iter()
                        .find(|b| *b == name)
                        .map(|b| Value::Proc(Rc::new(Procedure::Builtin(b))))
                })
                .ok_or_else(|| Fail::Unbound(name.clone())),
            Kind::Dotted(..) => Err(runtime("dotted list in expression position")),
            Kind::List(items) => self.eval_list(d.pos, items, env, depth),
        }
    }

    fn eval_list(&mut self, pos: Pos, items: &[Datum], env: &Env, depth: usize) -> Result<Value> {
        let Some(head) = items.first() else {
            return Err(runtime("missing procedure in empty combination ()"));
        };
        let args = &items[1..];
        if let Kind::Symbol(name) = &head.kind
            && env.lookup(name).is_none()
            && let Some(v) = self.special_form(pos, name, args, env, depth)?
        {
            return Ok(v);
        }
        let f = self.eval(head, env, depth + 1)?;
        let mut values = Vec::with_capacity(args.len());
        for a in args {
            values.push(self.eval(a, env, depth + 1)?);
        }
        self.apply(&f, values, depth)
    }

    fn body(&mut self, forms: &[Datum], env: &Env, depth: usize) -> Result<Value> {
        let scope = self.scope(Some(env));
        let mut v = Value::Unspecified;
        for f in forms {
            v = self.eval(f, &scope, depth + 1)?;
        }
        Ok(v)
    }

    fn apply(&mut self, f: &Value, args: Vec<Value>, depth: usize) -> Result<Value> {
        let Value::Proc(p) = f else {
            return Err(runtime(format!("wrong type to apply: {}", f.write())));
        };
        match p.as_ref() {
            Procedure::Builtin(name) => self.builtin(name, args, depth),
            Procedure::Closure {
                params,
                rest,
                body,
                env,
            } => {
                if args.len() < params.len() || (rest.is_none() && args.len() != params.len()) {
                    return Err(runtime(format!(
                        "wrong number of arguments: expected {}, got {}",
                        params.len(),
                        args.len()
                    )));
                }
                let scope = self.scope(Some(env));
                let mut args = args.into_iter();
                for p in params {
                    scope.define(p, args.next().unwrap_or(Value::Unspecified));
                }
                if let Some(rest) = rest {
                    scope.define(rest, Value::list(args.collect()));
                }
                self.body(body, &scope, depth + 1)
            }
        }
    }
}
