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
use std::collections::HashMap;
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

const BUILTINS: [&str; 21] = [
    "list",
    "cons",
    "car",
    "cdr",
    "append",
    "string-append",
    "getenv",
    "map",
    "filter",
    "append-map",
    "build-machine?",
    "null?",
    "pair?",
    "list?",
    "not",
    "length",
    "reverse",
    "equal?",
    "+",
    "-",
    "*",
];

/// A Scheme value.
#[derive(Clone, Debug)]
pub enum Value {
    /// What `define` and one-armed `if` return.
    Unspecified,
    /// A boolean.
    Bool(bool),
    /// An exact integer.
    Int(i64),
    /// A real.
    Real(f64),
    /// A string.
    Str(Rc<str>),
    /// A character.
    Char(char),
    /// A symbol.
    Symbol(Rc<str>),
    /// A keyword.
    Keyword(Rc<str>),
    /// A proper list.
    List(Rc<ListVal>),
    /// A pair whose tail is not a list, `(a . b)`.
    Pair(Rc<PairVal>),
    /// A procedure.
    Proc(Rc<Procedure>),
    /// A build-machine record.
    Machine(Rc<Record>),
}

/// Deepest nesting of list values a file may build (printing and freeing
/// them recurse).
pub const MAX_VALUE_DEPTH: u32 = 100;
/// Longest string a file may build.
pub const MAX_STRING: usize = 1 << 20;
/// Longest list a file may build.
pub const MAX_LIST: usize = 100_000;

/// The items of a list value and its nesting depth.
#[derive(Debug)]
pub struct ListVal {
    items: Vec<Value>,
    depth: u32,
}

impl std::ops::Deref for ListVal {
    type Target = Vec<Value>;
    fn deref(&self) -> &Vec<Value> {
        &self.items
    }
}

/// An improper pair and its nesting depth.
#[derive(Debug)]
pub struct PairVal {
    car: Value,
    cdr: Value,
    depth: u32,
}

/// A build-machine record: the resolved machine and the fields it was made
/// from (what `inherit` copies and what decides its warnings).
#[derive(Debug)]
pub struct Record {
    /// The machine.
    pub machine: BuildMachine,
    /// Its fields before defaults.
    pub fields: Fields,
}

/// A procedure value.
#[derive(Debug)]
pub enum Procedure {
    /// One of the built-in procedures, by name.
    Builtin(&'static str),
    /// A `lambda`.
    Closure {
        /// Fixed parameters.
        params: Vec<String>,
        /// The rest parameter, if any.
        rest: Option<String>,
        /// Body forms.
        body: Vec<Datum>,
        /// The defining environment.
        env: Env,
    },
}

impl Value {
    fn truthy(&self) -> bool {
        !matches!(self, Self::Bool(false))
    }

    fn list(items: Vec<Self>) -> Self {
        let depth = 1 + items.iter().map(Self::depth).max().unwrap_or(0);
        Self::List(Rc::new(ListVal { items, depth }))
    }

    fn pair(car: Self, cdr: Self) -> Self {
        let depth = 1 + car.depth().max(cdr.depth());
        Self::Pair(Rc::new(PairVal { car, cdr, depth }))
    }

    /// Nesting depth: 0 for atoms.
    fn depth(&self) -> u32 {
        match self {
            Self::List(l) => l.depth,
            Self::Pair(p) => p.depth,
            _ => 0,
        }
    }

    /// Structural equality (`equal?`) within a work budget.
    fn equal(&self, other: &Self, budget: &mut u64) -> Option<bool> {
        *budget = budget.checked_sub(1)?;
        Some(match (self, other) {
            (Self::List(a), Self::List(b)) => {
                if Rc::ptr_eq(a, b) {
                    return Some(true);
                }
                if a.len() != b.len() {
                    return Some(false);
                }
                for (x, y) in a.iter().zip(b.iter()) {
                    if !x.equal(y, budget)? {
                        return Some(false);
                    }
                }
                true
            }
            (Self::Pair(a), Self::Pair(b)) => {
                a.car.equal(&b.car, budget)? && a.cdr.equal(&b.cdr, budget)?
            }
            (Self::Proc(a), Self::Proc(b)) => Rc::ptr_eq(a, b),
            (Self::Machine(a), Self::Machine(b)) => Rc::ptr_eq(a, b),
            (Self::Int(a), Self::Int(b)) => a == b,
            (Self::Real(a), Self::Real(b)) => a == b,
            (Self::Str(a), Self::Str(b))
            | (Self::Symbol(a), Self::Symbol(b))
            | (Self::Keyword(a), Self::Keyword(b)) => a == b,
            (Self::Bool(a), Self::Bool(b)) => a == b,
            (Self::Char(a), Self::Char(b)) => a == b,
            (Self::Unspecified, Self::Unspecified) => true,
            _ => false,
        })
    }

    /// The value as Scheme's `write` would print it (for messages), cut
    /// after about 200 characters.
    pub fn write(&self) -> String {
        let mut out = String::new();
        self.write_into(&mut out, 200);
        out
    }

    fn write_into(&self, out: &mut String, limit: usize) {
        if out.len() > limit {
            if !out.ends_with('…') {
                out.push('…');
            }
            return;
        }
        match self {
            Self::List(items) => {
                out.push('(');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    item.write_into(out, limit);
                    if out.len() > limit {
                        break;
                    }
                }
                out.push(')');
            }
            Self::Pair(pair) => {
                out.push('(');
                pair.car.write_into(out, limit);
                out.push_str(" . ");
                pair.cdr.write_into(out, limit);
                out.push(')');
            }
            atom => out.push_str(&atom.write_atom()),
        }
    }

    fn write_atom(&self) -> String {
        match self {
            Self::Unspecified => "#<unspecified>".into(),
            Self::Bool(true) => "#t".into(),
            Self::Bool(false) => "#f".into(),
            Self::Int(i) => i.to_string(),
            Self::Real(r) => format_real(*r),
            Self::Str(s) => write_string(s),
            Self::Char(c) => format!("#\\{c}"),
            Self::Symbol(s) => s.to_string(),
            Self::Keyword(k) => format!("#:{k}"),
            Self::List(_) | Self::Pair(_) => self.write(),
            Self::Proc(_) => "#<procedure>".into(),
            Self::Machine(m) => format!("#<build-machine {}>", m.machine.name),
        }
    }

    fn to_field(&self) -> FieldValue {
        match self {
            Self::Bool(false) => FieldValue::False,
            Self::Bool(true) => FieldValue::True,
            Self::Int(i) => FieldValue::Int(*i),
            Self::Real(r) => FieldValue::Real(*r),
            Self::Str(s) => FieldValue::Str(s.to_string()),
            Self::List(items) if items.iter().all(|v| matches!(v, Self::Str(_))) => {
                FieldValue::Strings(
                    items
                        .iter()
                        .filter_map(|v| {
                            if let Self::Str(s) = v {
                                Some(s.to_string())
                            } else {
                                None
                            }
                        })
                        .collect(),
                )
            }
            other => FieldValue::Other(other.write()),
        }
    }
}

/// A lexical environment.
pub type Env = Rc<Scope>;

/// One frame of bindings.
#[derive(Debug, Default)]
pub struct Scope {
    vars: RefCell<HashMap<String, Value>>,
    parent: Option<Env>,
}

impl Scope {
    fn lookup(&self, name: &str) -> Option<Value> {
        if let Some(v) = self.vars.borrow().get(name) {
            return Some(v.clone());
        }
        self.parent.as_ref()?.lookup(name)
    }

    fn define(&self, name: &str, value: Value) {
        self.vars.borrow_mut().insert(name.to_owned(), value);
    }
}

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

    /// `Some(value)` if `name` is a special form handled here.
    fn special_form(
        &mut self,
        pos: Pos,
        name: &str,
        args: &[Datum],
        env: &Env,
        depth: usize,
    ) -> Result<Option<Value>> {
        let bad = || runtime(format!("{name}: bad syntax"));
        let v = match name {
            "quote" => match args {
                [x] => quoted(x)?,
                _ => return Err(bad()),
            },
            "quasiquote" => match args {
                [x] => self.quasi(x, env, depth, 1)?,
                _ => return Err(bad()),
            },
            "if" => match args {
                [c, t] | [c, t, _] => {
                    if self.eval(c, env, depth + 1)?.truthy() {
                        self.eval(t, env, depth + 1)?
                    } else if let [_, _, e] = args {
                        self.eval(e, env, depth + 1)?
                    } else {
                        Value::Unspecified
                    }
                }
                _ => return Err(bad()),
            },
            "begin" => {
                let mut v = Value::Unspecified;
                for f in args {
                    v = self.eval(f, env, depth + 1)?;
                }
                v
            }
            "and" | "or" => {
                let mut v = Value::Bool(name == "and");
                for a in args {
                    v = self.eval(a, env, depth + 1)?;
                    if v.truthy() != (name == "and") {
                        break;
                    }
                }
                v
            }
            "when" | "unless" => {
                let [c, body @ ..] = args else {
                    return Err(bad());
                };
                if self.eval(c, env, depth + 1)?.truthy() == (name == "when") {
                    self.body(body, env, depth)?
                } else {
                    Value::Unspecified
                }
            }
            "cond" => {
                for clause in args {
                    let Kind::List(parts) = &clause.kind else {
                        return Err(bad());
                    };
                    let [test, body @ ..] = parts.as_slice() else {
                        return Err(bad());
                    };
                    let hit = matches!(&test.kind, Kind::Symbol(s) if s == "else")
                        || self.eval(test, env, depth + 1)?.truthy();
                    if hit {
                        return Ok(Some(self.body(body, env, depth)?));
                    }
                }
                Value::Unspecified
            }
            "define" => {
                match args {
                    [
                        Datum {
                            kind: Kind::Symbol(var),
                            ..
                        },
                        expr,
                    ] => {
                        let v = self.eval(expr, env, depth + 1)?;
                        env.define(var, v);
                    }
                    // `(define (name . params) body …)`, with or without a rest parameter.
                    [
                        Datum {
                            kind: sig_kind @ (Kind::List(_) | Kind::Dotted(..)),
                            ..
                        },
                        body @ ..,
                    ] if !body.is_empty() => {
                        let (sig, rest) = match sig_kind {
                            Kind::Dotted(sig, rest) => (sig, Some(rest.as_ref())),
                            Kind::List(sig) => (sig, None),
                            _ => return Err(bad()),
                        };
                        let [
                            Datum {
                                kind: Kind::Symbol(var),
                                ..
                            },
                            params @ ..,
                        ] = sig.as_slice()
                        else {
                            return Err(bad());
                        };
                        env.define(var, closure(params, rest, body, env)?);
                    }
                    _ => return Err(bad()),
                }
                Value::Unspecified
            }
            "lambda" => match args {
                [
                    Datum {
                        kind: Kind::List(params),
                        ..
                    },
                    body @ ..,
                ] if !body.is_empty() => closure(params, None, body, env)?,
                [
                    Datum {
                        kind: Kind::Dotted(params, rest),
                        ..
                    },
                    body @ ..,
                ] if !body.is_empty() => closure(params, Some(rest), body, env)?,
                [
                    rest @ Datum {
                        kind: Kind::Symbol(_),
                        ..
                    },
                    body @ ..,
                ] if !body.is_empty() => closure(&[], Some(rest), body, env)?,
                _ => return Err(bad()),
            },
            "let" | "let*" => {
                let [
                    Datum {
                        kind: Kind::List(bindings),
                        ..
                    },
                    body @ ..,
                ] = args
                else {
                    return Err(Fail::Unsupported(
                        pos,
                        format!("this {name} form (named let)"),
                    ));
                };
                let mut scope = self.scope(Some(env));
                for b in bindings {
                    let Kind::List(pair) = &b.kind else {
                        return Err(bad());
                    };
                    if name == "let*" && !scope.vars.borrow().is_empty() {
                        scope = self.scope(Some(&scope));
                    }
                    let [
                        Datum {
                            kind: Kind::Symbol(var),
                            ..
                        },
                        expr,
                    ] = pair.as_slice()
                    else {
                        return Err(bad());
                    };
                    let value =
                        self.eval(expr, if name == "let" { env } else { &scope }, depth + 1)?;
                    scope.define(var, value);
                }
                self.body(body, &scope, depth)?
            }
            "use-modules" => {
                for m in args {
                    let text = datum_write(m);
                    if !KNOWN_MODULES.contains(&text.as_str()) {
                        return Err(Fail::Unsupported(m.pos, format!("module {text}")));
                    }
                }
                Value::Unspecified
            }
            "@" | "@@" => match args {
                [
                    module,
                    Datum {
                        kind: Kind::Symbol(var),
                        ..
                    },
                ] if datum_write(module) == "(srfi srfi-1)" => match BUILTINS
                    .iter()
                    .find(|b| *b == var)
                {
                    Some(b) => Value::Proc(Rc::new(Procedure::Builtin(b))),
                    None => return Err(Fail::Unsupported(pos, format!("(@ (srfi srfi-1) {var})"))),
                },
                _ => return Err(Fail::Unsupported(pos, format!("({name} …) reference"))),
            },
            "build-machine" => self.build_machine(pos, args, env, depth)?,
            _ => return Ok(None),
        };
        Ok(Some(v))
    }

    fn body(&mut self, forms: &[Datum], env: &Env, depth: usize) -> Result<Value> {
        let scope = self.scope(Some(env));
        let mut v = Value::Unspecified;
        for f in forms {
            v = self.eval(f, &scope, depth + 1)?;
        }
        Ok(v)
    }

    fn quasi(&mut self, d: &Datum, env: &Env, depth: usize, level: usize) -> Result<Value> {
        if level == 0 {
            return Err(Fail::Unsupported(
                d.pos,
                "unquote outside quasiquote".into(),
            ));
        }
        if let Kind::Dotted(items, tail) = &d.kind {
            // `(a b . ,c)` and `(a . (b c))` templates.
            let mut value = self.quasi(tail, env, depth, level)?;
            for item in items.iter().rev() {
                let head = self.quasi(item, env, depth, level)?;
                value = match value {
                    Value::List(rest) => {
                        self.charge(rest.len() as u64 + 1)?;
                        let mut all = vec![head];
                        all.extend(rest.iter().cloned());
                        Value::list(all)
                    }
                    other => Value::pair(head, other),
                };
            }
            return Ok(value);
        }
        let Kind::List(items) = &d.kind else {
            return quoted(d);
        };
        if let [
            Datum {
                kind: Kind::Symbol(s),
                ..
            },
            x,
        ] = items.as_slice()
        {
            match s.as_str() {
                "unquote" if level == 1 => return self.eval(x, env, depth + 1),
                "unquote" | "unquote-splicing" => {
                    return Ok(Value::list(vec![
                        Value::Symbol(s.as_str().into()),
                        self.quasi(x, env, depth, level - 1)?,
                    ]));
                }
                "quasiquote" => {
                    return Ok(Value::list(vec![
                        Value::Symbol(s.as_str().into()),
                        self.quasi(x, env, depth, level + 1)?,
                    ]));
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        for item in items {
            if let Kind::List(inner) = &item.kind
                && let [
                    Datum {
                        kind: Kind::Symbol(s),
                        ..
                    },
                    x,
                ] = inner.as_slice()
                && s == "unquote-splicing"
                && level == 1
            {
                match self.eval(x, env, depth + 1)? {
                    Value::List(spliced) => {
                        self.charge(spliced.len() as u64)?;
                        out.extend(spliced.iter().cloned());
                    }
                    other => {
                        return Err(runtime(format!(
                            "unquote-splicing: expected a list, got {}",
                            other.write()
                        )));
                    }
                }
                continue;
            }
            out.push(self.quasi(item, env, depth, level)?);
        }
        Ok(Value::list(out))
    }

    /// Make a record; the clause syntax was checked by [`check_syntax`].
    fn build_machine(
        &mut self,
        pos: Pos,
        clauses: &[Datum],
        env: &Env,
        depth: usize,
    ) -> Result<Value> {
        let mut given = Vec::new();
        let mut base = None;
        for clause in clauses {
            let Kind::List(parts) = &clause.kind else {
                continue;
            };
            let [
                Datum {
                    kind: Kind::Symbol(name),
                    ..
                },
                expr,
            ] = parts.as_slice()
            else {
                continue;
            };
            let value = self.eval(expr, env, depth + 1)?;
            if name == "inherit" {
                match value {
                    Value::Machine(record) => base = Some(record),
                    other => {
                        return Err(Fail::At(
                            pos,
                            format!(
                                "build-machine: inherit: expected a build-machine, got {}",
                                other.write()
                            ),
                        ));
                    }
                }
            } else if let Some(field) = Fields::canonical(name) {
                given.push((field, value.to_field()));
            }
        }
        let mut fields = base.map(|b| b.fields.clone()).unwrap_or_default();
        for (field, value) in given {
            fields.set(field, value);
        }
        let location = Location {
            file: self.file.clone(),
            line: pos.line,
            col: pos.col,
        };
        let machine = fields
            .build(location, &self.default_private_key)
            .map_err(|e| Fail::At(pos, e.to_string()))?;
        Ok(Value::Machine(Rc::new(Record { machine, fields })))
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

    fn builtin(&mut self, name: &str, args: Vec<Value>, depth: usize) -> Result<Value> {
        let wrong = |what: &str, v: &Value| {
            runtime(format!(
                "in procedure {name}: wrong type argument (expecting {what}): {}",
                v.write()
            ))
        };
        let list_of = |v: &Value| -> Result<Rc<ListVal>> {
            match v {
                Value::List(items) => Ok(items.clone()),
                other => Err(wrong("list", other)),
            }
        };
        let arity = |n: usize| -> Result<()> {
            if args.len() == n {
                Ok(())
            } else {
                Err(runtime(format!("wrong number of arguments to {name}")))
            }
        };
        Ok(match name {
            "list" => {
                if args.len() > MAX_LIST {
                    return Err(runtime(format!("list: longer than {MAX_LIST} elements")));
                }
                self.charge(args.len() as u64)?;
                Value::list(args)
            }
            "cons" => {
                arity(2)?;
                match &args[1] {
                    Value::List(tail) => {
                        // The tail is copied: that is what it costs.
                        self.charge(tail.len() as u64 + 1)?;
                        let mut items = vec![args[0].clone()];
                        items.extend(tail.iter().cloned());
                        Value::list(items)
                    }
                    tail => Value::pair(args[0].clone(), tail.clone()),
                }
            }
            "car" | "cdr" => {
                arity(1)?;
                match &args[0] {
                    Value::List(items) if !items.is_empty() => {
                        if name == "car" {
                            items[0].clone()
                        } else {
                            self.charge(items.len() as u64)?;
                            Value::list(items[1..].to_vec())
                        }
                    }
                    Value::Pair(pair) => {
                        if name == "car" {
                            pair.car.clone()
                        } else {
                            pair.cdr.clone()
                        }
                    }
                    other => return Err(wrong("pair", other)),
                }
            }
            "append" => {
                let mut out = Vec::new();
                for a in &args {
                    out.extend(list_of(a)?.iter().cloned());
                    if out.len() > MAX_LIST {
                        return Err(runtime(format!(
                            "append: a list longer than {MAX_LIST} elements"
                        )));
                    }
                }
                self.charge(out.len() as u64)?;
                Value::list(out)
            }
            "string-append" => {
                let mut s = String::new();
                for a in &args {
                    match a {
                        Value::Str(x) => s.push_str(x),
                        other => return Err(wrong("string", other)),
                    }
                    if s.len() > MAX_STRING {
                        return Err(runtime(format!(
                            "string-append: a string longer than {MAX_STRING} bytes"
                        )));
                    }
                }
                self.charge(s.len() as u64 / 64)?;
                Value::Str(s.into())
            }
            "getenv" => {
                arity(1)?;
                match &args[0] {
                    Value::Str(var) => {
                        (self.getenv)(var).map_or(Value::Bool(false), |v| Value::Str(v.into()))
                    }
                    other => return Err(wrong("string", other)),
                }
            }
            "map" | "filter" | "append-map" => {
                if args.len() > 2 {
                    return Err(Fail::Unsupported(
                        Pos { line: 0, col: 0 },
                        format!("{name} over several lists"),
                    ));
                }
                arity(2)?;
                let items = list_of(&args[1])?;
                let mut out = Vec::new();
                for item in items.iter() {
                    let v = self.apply(&args[0], vec![item.clone()], depth + 1)?;
                    match name {
                        "map" => out.push(v),
                        "filter" => {
                            if v.truthy() {
                                out.push(item.clone());
                            }
                        }
                        _ => {
                            let part = list_of(&v)?;
                            self.charge(part.len() as u64)?;
                            out.extend(part.iter().cloned());
                        }
                    }
                    if out.len() > MAX_LIST {
                        return Err(runtime(format!(
                            "{name}: a list longer than {MAX_LIST} elements"
                        )));
                    }
                }
                Value::list(out)
            }
            "build-machine?" => {
                arity(1)?;
                Value::Bool(matches!(args[0], Value::Machine(_)))
            }
            "null?" => {
                arity(1)?;
                Value::Bool(matches!(&args[0], Value::List(l) if l.is_empty()))
            }
            "pair?" => {
                arity(1)?;
                Value::Bool(
                    matches!(&args[0], Value::List(l) if !l.is_empty())
                        || matches!(&args[0], Value::Pair(_)),
                )
            }
            "list?" => {
                arity(1)?;
                Value::Bool(matches!(&args[0], Value::List(_)))
            }
            "not" => {
                arity(1)?;
                Value::Bool(!args[0].truthy())
            }
            "length" => {
                arity(1)?;
                Value::Int(i64::try_from(list_of(&args[0])?.len()).unwrap_or(i64::MAX))
            }
            "reverse" => {
                arity(1)?;
                let items = list_of(&args[0])?;
                self.charge(items.len() as u64)?;
                Value::list(items.iter().rev().cloned().collect())
            }
            "equal?" => {
                arity(2)?;
                let mut budget = MAX_STEPS.saturating_sub(self.steps);
                let same = args[0]
                    .equal(&args[1], &mut budget)
                    .ok_or_else(|| runtime("equal?: values too large to compare"))?;
                self.steps = MAX_STEPS - budget;
                Value::Bool(same)
            }
            "+" | "-" | "*" => arithmetic(name, &args)?,
            _ => return Err(runtime(format!("unknown procedure {name}"))),
        })
    }
}

fn arithmetic(op: &str, args: &[Value]) -> Result<Value> {
    let mut exact = Some(if op == "*" { 1i64 } else { 0 });
    let mut inexact = if op == "*" { 1.0 } else { 0.0 };
    for (k, a) in args.iter().enumerate() {
        let (i, r) = match a {
            Value::Int(i) => (Some(*i), *i as f64),
            Value::Real(r) => (None, *r),
            other => {
                return Err(runtime(format!(
                    "in procedure {op}: wrong type argument: {}",
                    other.write()
                )));
            }
        };
        if op == "-" && k == 0 && args.len() > 1 {
            (exact, inexact) = (i, r);
            continue;
        }
        exact = match op {
            "+" => exact.zip(i).and_then(|(a, b)| a.checked_add(b)),
            "-" => exact.zip(i).and_then(|(a, b)| a.checked_sub(b)),
            _ => exact.zip(i).and_then(|(a, b)| a.checked_mul(b)),
        };
        inexact = match op {
            "+" => inexact + r,
            "-" => inexact - r,
            _ => inexact * r,
        };
    }
    if args.iter().all(|a| matches!(a, Value::Int(_))) {
        exact
            .map(Value::Int)
            .ok_or_else(|| runtime("integer overflow"))
    } else {
        Ok(Value::Real(inexact))
    }
}

fn closure(params: &[Datum], rest: Option<&Datum>, body: &[Datum], env: &Env) -> Result<Value> {
    let mut names = Vec::new();
    for p in params {
        match &p.kind {
            Kind::Symbol(s) => names.push(s.clone()),
            _ => {
                return Err(Fail::Unsupported(
                    p.pos,
                    "lambda parameter that is not a symbol (optional or keyword arguments)".into(),
                ));
            }
        }
    }
    let rest = match rest.map(|r| &r.kind) {
        None => None,
        Some(Kind::Symbol(s)) => Some(s.clone()),
        Some(_) => return Err(runtime("lambda: bad rest parameter")),
    };
    Ok(Value::Proc(Rc::new(Procedure::Closure {
        params: names,
        rest,
        body: body.to_vec(),
        env: env.clone(),
    })))
}

/// A quoted datum as a value.
fn quoted(d: &Datum) -> Result<Value> {
    Ok(match &d.kind {
        Kind::List(items) => Value::list(items.iter().map(quoted).collect::<Result<_>>()?),
        Kind::Dotted(items, tail) => {
            let mut value = quoted(tail)?;
            for item in items.iter().rev() {
                value = match value {
                    Value::List(rest) => {
                        let mut all = vec![quoted(item)?];
                        all.extend(rest.iter().cloned());
                        Value::list(all)
                    }
                    other => Value::pair(quoted(item)?, other),
                };
            }
            value
        }
        Kind::Symbol(s) => Value::Symbol(s.as_str().into()),
        Kind::Str(s) => Value::Str(s.as_str().into()),
        Kind::Int(i) => Value::Int(*i),
        Kind::Real(r) => Value::Real(*r),
        Kind::Bool(b) => Value::Bool(*b),
        Kind::Char(c) => Value::Char(*c),
        Kind::Keyword(k) => Value::Keyword(k.as_str().into()),
    })
}

/// A datum as Scheme's `write` prints it (for messages and module names).
pub fn datum_write(d: &Datum) -> String {
    match &d.kind {
        Kind::List(items) => format!(
            "({})",
            items.iter().map(datum_write).collect::<Vec<_>>().join(" ")
        ),
        Kind::Dotted(items, tail) => format!(
            "({} . {})",
            items.iter().map(datum_write).collect::<Vec<_>>().join(" "),
            datum_write(tail)
        ),
        Kind::Symbol(s) => s.clone(),
        Kind::Str(s) => write_string(s),
        Kind::Int(i) => i.to_string(),
        Kind::Real(r) => format_real(*r),
        Kind::Bool(b) => if *b { "#t" } else { "#f" }.into(),
        Kind::Char(c) => format!("#\\{c}"),
        Kind::Keyword(k) => format!("#:{k}"),
    }
}

/// The head symbol of a list datum.
fn head(items: &[Datum]) -> Option<&str> {
    match items.first().map(|d| &d.kind) {
        Some(Kind::Symbol(s)) => Some(s),
        _ => None,
    }
}

/// Macro expansion of one top-level form: the field syntax of every
/// `build-machine` in code position (not quoted data), in textual order.
fn check_syntax(d: &Datum, quasi: usize) -> Result<()> {
    let items: Vec<&Datum> = match &d.kind {
        Kind::List(items) => items.iter().collect(),
        Kind::Dotted(items, tail) => items.iter().chain(std::iter::once(tail.as_ref())).collect(),
        _ => return Ok(()),
    };
    let list = if let Kind::List(items) = &d.kind {
        Some(items.as_slice())
    } else {
        None
    };
    match (quasi, list.and_then(head)) {
        (0, Some("quote")) => return Ok(()),
        (_, Some("quasiquote")) => {
            return items
                .iter()
                .skip(1)
                .try_for_each(|x| check_syntax(x, quasi + 1));
        }
        (1.., Some("unquote" | "unquote-splicing")) => {
            return items
                .iter()
                .skip(1)
                .try_for_each(|x| check_syntax(x, quasi - 1));
        }
        (0, Some("build-machine")) => check_clauses(d.pos, &list.unwrap_or_default()[1..])?,
        _ => {}
    }
    items.iter().try_for_each(|x| check_syntax(x, quasi))
}

fn check_clauses(pos: Pos, clauses: &[Datum]) -> Result<()> {
    let at = |message: String| Fail::At(pos, format!("build-machine: {message}"));
    let mut names: Vec<&str> = Vec::new();
    for (i, clause) in clauses.iter().enumerate() {
        let name = match &clause.kind {
            Kind::List(parts) if parts.len() == 2 => head(parts),
            _ => None,
        };
        match name {
            Some("inherit") if i > 0 => {
                return Err(at(format!(
                    "invalid field specifier: {}",
                    datum_write(clause)
                )));
            }
            Some(name) => names.push(name),
            None => {
                return Err(at(format!(
                    "invalid field specifier: {}",
                    datum_write(clause)
                )));
            }
        }
    }
    if let Some(dup) = names
        .iter()
        .enumerate()
        .find_map(|(i, n)| names[..i].contains(n).then_some(*n))
    {
        return Err(at(format!("duplicate field initializer: {dup}")));
    }
    let unknown: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| *n != "inherit" && !FIELDS.contains(n))
        .collect();
    if !unknown.is_empty() {
        return Err(at(format!(
            "unknown field initializers ({})",
            unknown.join(" ")
        )));
    }
    if names.first() != Some(&"inherit") {
        let missing: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .filter(|f| !names.contains(f))
            .collect();
        if !missing.is_empty() {
            return Err(at(format!(
                "missing field initializers ({})",
                missing.join(" ")
            )));
        }
    }
    Ok(())
}

/// Where `name` first appears as code in `d` (quoted data excluded; inside
/// a quasiquote only unquoted parts count).
fn find_symbol(d: &Datum, name: &str, quasi: usize) -> Option<Pos> {
    let items: Vec<&Datum> = match &d.kind {
        Kind::Symbol(s) if s == name && quasi == 0 => return Some(d.pos),
        Kind::List(items) => items.iter().collect(),
        Kind::Dotted(items, tail) => items.iter().chain(std::iter::once(tail.as_ref())).collect(),
        _ => return None,
    };
    let list = if let Kind::List(items) = &d.kind {
        Some(items.as_slice())
    } else {
        None
    };
    match (quasi, list.and_then(head)) {
        (0, Some("quote")) => None,
        (_, Some("quasiquote")) => items
            .iter()
            .skip(1)
            .find_map(|x| find_symbol(x, name, quasi + 1)),
        (1.., Some("unquote" | "unquote-splicing")) => items
            .iter()
            .skip(1)
            .find_map(|x| find_symbol(x, name, quasi - 1)),
        _ => items.iter().find_map(|x| find_symbol(x, name, quasi)),
    }
}
