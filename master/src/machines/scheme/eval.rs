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
//! Anything else is [`EvalError::Unsupported`]: the caller may hand the
//! file to Guile instead. Errors that Guile would raise as well (missing
//! fields, wrong types, calling a non-procedure) are [`EvalError::Invalid`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::read::{Datum, Kind, Pos};
use crate::machines::record::{
    BuildMachine, FieldValue, Fields, Location, format_real, write_string,
};

/// Deepest evaluation recursion (guards against runaway recursion in the file).
pub const MAX_EVAL_DEPTH: usize = 256;
/// Most evaluation steps for one file.
pub const MAX_STEPS: u64 = 1_000_000;
/// Modules a file may `use-modules` (their bindings used by machines files are built in).
const KNOWN_MODULES: [&str; 5] = [
    "(gnu)",
    "(guix)",
    "(guix scripts offload)",
    "(srfi srfi-1)",
    "(guix records)",
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
    List(Rc<Vec<Value>>),
    /// A procedure.
    Proc(Rc<Procedure>),
    /// A build-machine record.
    Machine(Rc<BuildMachine>),
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

impl Value {
    fn truthy(&self) -> bool {
        !matches!(self, Self::Bool(false))
    }

    fn list(items: Vec<Self>) -> Self {
        Self::List(Rc::new(items))
    }

    /// The value as Scheme's `write` would print it (for messages).
    pub fn write(&self) -> String {
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
            Self::List(items) => format!(
                "({})",
                items.iter().map(Self::write).collect::<Vec<_>>().join(" ")
            ),
            Self::Proc(_) => "#<procedure>".into(),
            Self::Machine(m) => format!("#<build-machine {}>", m.name),
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

    fn child(parent: &Env) -> Env {
        Rc::new(Self {
            vars: RefCell::default(),
            parent: Some(parent.clone()),
        })
    }

    fn define(&self, name: &str, value: Value) {
        self.vars.borrow_mut().insert(name.to_owned(), value);
    }
}

/// Why evaluation stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// A form this evaluator does not implement (Guile may).
    #[error("{pos}: unsupported by the built-in evaluator: {what}")]
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

impl EvalError {
    /// Where the error is.
    pub fn pos(&self) -> Pos {
        match self {
            Self::Unsupported { pos, .. } | Self::Invalid { pos, .. } => *pos,
        }
    }
}

fn invalid(pos: Pos, message: impl Into<String>) -> EvalError {
    EvalError::Invalid {
        pos,
        message: message.into(),
    }
}

fn unsupported(pos: Pos, what: impl Into<String>) -> EvalError {
    EvalError::Unsupported {
        pos,
        what: what.into(),
    }
}

/// What evaluating a file produced: its last value and warnings.
#[derive(Debug)]
pub struct Evaluation {
    /// The value of the last top-level form (`Unspecified` for an empty file).
    pub value: Value,
    /// Warnings, each `LINE:COL: warning: …` relative to the file.
    pub warnings: Vec<(Pos, String)>,
}

/// Evaluates top-level forms of one file.
pub struct Evaluator {
    file: String,
    default_private_key: String,
    getenv: Box<dyn Fn(&str) -> Option<String>>,
    warnings: Vec<(Pos, String)>,
    steps: u64,
}

impl Evaluator {
    /// An evaluator for `file`; `getenv` answers Scheme's `getenv`.
    pub fn new(
        file: &str,
        default_private_key: &str,
        getenv: Box<dyn Fn(&str) -> Option<String>>,
    ) -> Self {
        Self {
            file: file.to_owned(),
            default_private_key: default_private_key.to_owned(),
            getenv,
            warnings: Vec::new(),
            steps: 0,
        }
    }

    /// Evaluate the forms in order; the result is the last value.
    pub fn run(mut self, forms: &[Datum]) -> Result<Evaluation, EvalError> {
        let env: Env = Rc::new(Scope::default());
        let mut value = Value::Unspecified;
        for form in forms {
            value = self.eval(form, &env, 0)?;
        }
        Ok(Evaluation {
            value,
            warnings: self.warnings,
        })
    }

    fn eval(&mut self, d: &Datum, env: &Env, depth: usize) -> Result<Value, EvalError> {
        self.steps += 1;
        if self.steps > MAX_STEPS || depth > MAX_EVAL_DEPTH {
            return Err(unsupported(d.pos, "evaluation too deep or too long"));
        }
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
                .ok_or_else(|| unsupported(d.pos, format!("unbound variable: {name}"))),
            Kind::Dotted(..) => Err(invalid(d.pos, "dotted list in expression position")),
            Kind::List(items) => self.eval_list(d.pos, items, env, depth),
        }
    }

    fn eval_list(
        &mut self,
        pos: Pos,
        items: &[Datum],
        env: &Env,
        depth: usize,
    ) -> Result<Value, EvalError> {
        let Some(head) = items.first() else {
            return Err(invalid(pos, "missing procedure in empty combination ()"));
        };
        let args = &items[1..];
        if let Kind::Symbol(name) = &head.kind {
            if env.lookup(name).is_none() {
                if let Some(v) = self.special_form(pos, name, args, env, depth)? {
                    return Ok(v);
                }
            }
        }
        // `(@ (srfi srfi-1) append-map)` in operator position.
        let f = self.eval(head, env, depth + 1)?;
        let mut values = Vec::with_capacity(args.len());
        for a in args {
            values.push(self.eval(a, env, depth + 1)?);
        }
        self.apply(pos, &f, values, depth)
    }

    /// `Some(value)` if `name` is a special form handled here.
    fn special_form(
        &mut self,
        pos: Pos,
        name: &str,
        args: &[Datum],
        env: &Env,
        depth: usize,
    ) -> Result<Option<Value>, EvalError> {
        let v = match name {
            "quote" => match args {
                [x] => quoted(x)?,
                _ => return Err(invalid(pos, "quote: bad syntax")),
            },
            "quasiquote" => match args {
                [x] => self.quasi(x, env, depth, 1)?,
                _ => return Err(invalid(pos, "quasiquote: bad syntax")),
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
                _ => return Err(invalid(pos, "if: bad syntax")),
            },
            "begin" => self.body(args, env, depth)?,
            "and" => {
                let mut v = Value::Bool(true);
                for a in args {
                    v = self.eval(a, env, depth + 1)?;
                    if !v.truthy() {
                        break;
                    }
                }
                v
            }
            "or" => {
                let mut v = Value::Bool(false);
                for a in args {
                    v = self.eval(a, env, depth + 1)?;
                    if v.truthy() {
                        break;
                    }
                }
                v
            }
            "when" | "unless" => {
                let [c, body @ ..] = args else {
                    return Err(invalid(pos, format!("{name}: bad syntax")));
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
                        return Err(invalid(clause.pos, "cond: bad clause"));
                    };
                    let [test, body @ ..] = parts.as_slice() else {
                        return Err(invalid(clause.pos, "cond: empty clause"));
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
                    [
                        Datum {
                            kind: Kind::List(sig),
                            pos: sig_pos,
                        },
                        body @ ..,
                    ] if !body.is_empty() => {
                        let [
                            Datum {
                                kind: Kind::Symbol(var),
                                ..
                            },
                            params @ ..,
                        ] = sig.as_slice()
                        else {
                            return Err(invalid(*sig_pos, "define: bad procedure name"));
                        };
                        let closure = closure(*sig_pos, params, None, body, env)?;
                        env.define(var, closure);
                    }
                    [
                        Datum {
                            kind: Kind::Dotted(sig, rest),
                            pos: sig_pos,
                        },
                        body @ ..,
                    ] if !body.is_empty() => {
                        let [
                            Datum {
                                kind: Kind::Symbol(var),
                                ..
                            },
                            params @ ..,
                        ] = sig.as_slice()
                        else {
                            return Err(invalid(*sig_pos, "define: bad procedure name"));
                        };
                        let closure = closure(*sig_pos, params, Some(rest), body, env)?;
                        env.define(var, closure);
                    }
                    _ => return Err(invalid(pos, "define: bad syntax")),
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
                ] if !body.is_empty() => closure(pos, params, None, body, env)?,
                [
                    Datum {
                        kind: Kind::Dotted(params, rest),
                        ..
                    },
                    body @ ..,
                ] if !body.is_empty() => closure(pos, params, Some(rest), body, env)?,
                [
                    rest @ Datum {
                        kind: Kind::Symbol(_),
                        ..
                    },
                    body @ ..,
                ] if !body.is_empty() => closure(pos, &[], Some(rest), body, env)?,
                _ => return Err(invalid(pos, "lambda: bad syntax")),
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
                    return Err(unsupported(pos, format!("{name} form (named let?)")));
                };
                let scope = Scope::child(env);
                for b in bindings {
                    let (var, expr) = match &b.kind {
                        Kind::List(pair) => match pair.as_slice() {
                            [
                                Datum {
                                    kind: Kind::Symbol(var),
                                    ..
                                },
                                expr,
                            ] => (var, expr),
                            _ => return Err(invalid(b.pos, format!("{name}: bad binding"))),
                        },
                        _ => return Err(invalid(b.pos, format!("{name}: bad binding"))),
                    };
                    let value =
                        self.eval(expr, if name == "let" { env } else { &scope }, depth + 1)?;
                    scope.define(var, value);
                }
                self.body(body, &scope, depth)?
            }
            "use-modules" => {
                for m in args {
                    let text = datum_text(m);
                    if !KNOWN_MODULES.contains(&text.as_str()) {
                        return Err(unsupported(m.pos, format!("module {text}")));
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
                ] if datum_text(module) == "(srfi srfi-1)" && BUILTINS.contains(&var.as_str()) => {
                    Value::Proc(Rc::new(Procedure::Builtin(
                        BUILTINS
                            .iter()
                            .find(|b| *b == var)
                            .copied()
                            .unwrap_or("list"),
                    )))
                }
                _ => return Err(unsupported(pos, format!("({name} …) reference"))),
            },
            "build-machine" => self.build_machine(pos, args, env, depth)?,
            _ => return Ok(None),
        };
        Ok(Some(v))
    }

    fn body(&mut self, forms: &[Datum], env: &Env, depth: usize) -> Result<Value, EvalError> {
        let scope = Scope::child(env);
        let mut v = Value::Unspecified;
        for f in forms {
            v = self.eval(f, &scope, depth + 1)?;
        }
        Ok(v)
    }

    fn quasi(
        &mut self,
        d: &Datum,
        env: &Env,
        depth: usize,
        level: usize,
    ) -> Result<Value, EvalError> {
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
                    Value::List(spliced) => out.extend(spliced.iter().cloned()),
                    other => {
                        return Err(invalid(
                            item.pos,
                            format!("unquote-splicing: expected a list, got {}", other.write()),
                        ));
                    }
                }
                continue;
            }
            out.push(self.quasi(item, env, depth, level)?);
        }
        Ok(Value::list(out))
    }

    fn build_machine(
        &mut self,
        pos: Pos,
        clauses: &[Datum],
        env: &Env,
        depth: usize,
    ) -> Result<Value, EvalError> {
        let mut fields = Fields::default();
        let mut given = Vec::new();
        for clause in clauses {
            let Kind::List(parts) = &clause.kind else {
                return Err(invalid(
                    clause.pos,
                    "build-machine: invalid field specifier",
                ));
            };
            let [
                Datum {
                    kind: Kind::Symbol(name),
                    ..
                },
                expr,
            ] = parts.as_slice()
            else {
                return Err(invalid(
                    clause.pos,
                    "build-machine: invalid field specifier",
                ));
            };
            let value = self.eval(expr, env, depth + 1)?;
            if name == "inherit" {
                let Value::Machine(base) = value else {
                    return Err(invalid(
                        clause.pos,
                        format!(
                            "build-machine: inherit: expected a build-machine, got {}",
                            value.write()
                        ),
                    ));
                };
                let mut inherited = Fields::from_machine(&base);
                for (f, v) in std::mem::take(&mut given) {
                    inherited.set(f, v);
                }
                fields = inherited;
                continue;
            }
            let Some(field) = Fields::canonical(name) else {
                return Err(invalid(
                    clause.pos,
                    format!("build-machine: unknown field '{name}'"),
                ));
            };
            // `systems` set explicitly replaces an inherited one, and the deprecated `system` too.
            fields.set(field, value.to_field());
            given.push((field, value.to_field()));
        }
        let location = Location {
            file: self.file.clone(),
            line: pos.line,
            col: pos.col,
        };
        let (machine, deprecated) = fields
            .build(location, &self.default_private_key)
            .map_err(|e| invalid(pos, e.to_string()))?;
        if deprecated {
            self.warnings.push((
                pos,
                "The 'system' field is deprecated, please use 'systems' instead.".into(),
            ));
        }
        if machine.systems.is_empty() {
            self.warnings.push((
                pos,
                format!(
                    "machine '{}' has neither 'systems' nor 'system'; it matches no build",
                    machine.name
                ),
            ));
        }
        Ok(Value::Machine(Rc::new(machine)))
    }

    fn apply(
        &mut self,
        pos: Pos,
        f: &Value,
        args: Vec<Value>,
        depth: usize,
    ) -> Result<Value, EvalError> {
        let Value::Proc(p) = f else {
            return Err(invalid(pos, format!("Wrong type to apply: {}", f.write())));
        };
        match p.as_ref() {
            Procedure::Builtin(name) => self.builtin(pos, name, args, depth),
            Procedure::Closure {
                params,
                rest,
                body,
                env,
            } => {
                if args.len() < params.len() || (rest.is_none() && args.len() != params.len()) {
                    return Err(invalid(
                        pos,
                        format!(
                            "Wrong number of arguments: expected {}, got {}",
                            params.len(),
                            args.len()
                        ),
                    ));
                }
                let scope = Scope::child(env);
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

    fn builtin(
        &mut self,
        pos: Pos,
        name: &str,
        args: Vec<Value>,
        depth: usize,
    ) -> Result<Value, EvalError> {
        let wrong = |what: &str, v: &Value| {
            invalid(
                pos,
                format!(
                    "In procedure {name}: Wrong type argument (expecting {what}): {}",
                    v.write()
                ),
            )
        };
        let list_of = |v: &Value| -> Result<Rc<Vec<Value>>, EvalError> {
            match v {
                Value::List(items) => Ok(items.clone()),
                other => Err(wrong("list", other)),
            }
        };
        let arity = |n: usize| -> Result<(), EvalError> {
            if args.len() == n {
                Ok(())
            } else {
                Err(invalid(pos, format!("Wrong number of arguments to {name}")))
            }
        };
        Ok(match name {
            "list" => Value::list(args),
            "cons" => {
                arity(2)?;
                match &args[1] {
                    Value::List(tail) => {
                        let mut items = vec![args[0].clone()];
                        items.extend(tail.iter().cloned());
                        Value::list(items)
                    }
                    _ => return Err(unsupported(pos, "improper list from cons")),
                }
            }
            "car" | "cdr" => {
                arity(1)?;
                let items = list_of(&args[0])?;
                let Some(first) = items.first() else {
                    return Err(wrong("pair", &args[0]));
                };
                if name == "car" {
                    first.clone()
                } else {
                    Value::list(items[1..].to_vec())
                }
            }
            "append" => {
                let mut out = Vec::new();
                for a in &args {
                    out.extend(list_of(a)?.iter().cloned());
                }
                Value::list(out)
            }
            "string-append" => {
                let mut s = String::new();
                for a in &args {
                    match a {
                        Value::Str(x) => s.push_str(x),
                        other => return Err(wrong("string", other)),
                    }
                }
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
                arity(2)?;
                let items = list_of(&args[1])?;
                let mut out = Vec::new();
                for item in items.iter() {
                    let v = self.apply(pos, &args[0], vec![item.clone()], depth + 1)?;
                    match name {
                        "map" => out.push(v),
                        "filter" => {
                            if v.truthy() {
                                out.push(item.clone());
                            }
                        }
                        _ => out.extend(list_of(&v)?.iter().cloned()),
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
                Value::Bool(matches!(&args[0], Value::List(l) if !l.is_empty()))
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
                Value::Int(list_of(&args[0])?.len() as i64)
            }
            "reverse" => {
                arity(1)?;
                Value::list(list_of(&args[0])?.iter().rev().cloned().collect())
            }
            "equal?" => {
                arity(2)?;
                Value::Bool(args[0].write() == args[1].write())
            }
            "+" | "-" | "*" => arithmetic(pos, name, &args)?,
            _ => return Err(unsupported(pos, format!("procedure {name}"))),
        })
    }
}

fn arithmetic(pos: Pos, op: &str, args: &[Value]) -> Result<Value, EvalError> {
    let mut nums = Vec::new();
    for a in args {
        match a {
            Value::Int(i) => nums.push((Some(*i), *i as f64)),
            Value::Real(r) => nums.push((None, *r)),
            other => {
                return Err(invalid(
                    pos,
                    format!("In procedure {op}: Wrong type argument: {}", other.write()),
                ));
            }
        }
    }
    let exact = nums.iter().all(|(i, _)| i.is_some());
    let (init_i, init_r) = if op == "*" { (1i64, 1.0) } else { (0, 0.0) };
    let (mut acc_i, mut acc_r) = (Some(init_i), init_r);
    for (k, (i, r)) in nums.iter().enumerate() {
        let first_minus = op == "-" && k == 0 && nums.len() > 1;
        match op {
            "+" => {
                acc_i = acc_i.zip(*i).and_then(|(a, b)| a.checked_add(b));
                acc_r += r;
            }
            "-" if first_minus => {
                acc_i = *i;
                acc_r = *r;
            }
            "-" => {
                acc_i = acc_i.zip(*i).and_then(|(a, b)| a.checked_sub(b));
                acc_r -= r;
            }
            _ => {
                acc_i = acc_i.zip(*i).and_then(|(a, b)| a.checked_mul(b));
                acc_r *= r;
            }
        }
    }
    if exact {
        acc_i
            .map(Value::Int)
            .ok_or_else(|| unsupported(pos, "integer overflow"))
    } else {
        Ok(Value::Real(acc_r))
    }
}

fn closure(
    pos: Pos,
    params: &[Datum],
    rest: Option<&Datum>,
    body: &[Datum],
    env: &Env,
) -> Result<Value, EvalError> {
    let mut names = Vec::new();
    for p in params {
        match &p.kind {
            Kind::Symbol(s) => names.push(s.clone()),
            _ => {
                return Err(unsupported(
                    p.pos,
                    "lambda parameter that is not a symbol (optional or keyword arguments)",
                ));
            }
        }
    }
    let rest = match rest.map(|r| &r.kind) {
        None => None,
        Some(Kind::Symbol(s)) => Some(s.clone()),
        Some(_) => return Err(invalid(pos, "lambda: bad rest parameter")),
    };
    Ok(Value::Proc(Rc::new(Procedure::Closure {
        params: names,
        rest,
        body: body.to_vec(),
        env: env.clone(),
    })))
}

/// A quoted datum as a value; improper lists are left to Guile.
fn quoted(d: &Datum) -> Result<Value, EvalError> {
    Ok(match &d.kind {
        Kind::List(items) => Value::list(items.iter().map(quoted).collect::<Result<_, _>>()?),
        Kind::Dotted(..) => return Err(unsupported(d.pos, "quoted improper list")),
        Kind::Symbol(s) => Value::Symbol(s.as_str().into()),
        Kind::Str(s) => Value::Str(s.as_str().into()),
        Kind::Int(i) => Value::Int(*i),
        Kind::Real(r) => Value::Real(*r),
        Kind::Bool(b) => Value::Bool(*b),
        Kind::Char(c) => Value::Char(*c),
        Kind::Keyword(k) => Value::Keyword(k.as_str().into()),
    })
}

/// A module name datum as text, `(srfi srfi-1)`.
fn datum_text(d: &Datum) -> String {
    match &d.kind {
        Kind::List(items) => format!(
            "({})",
            items.iter().map(datum_text).collect::<Vec<_>>().join(" ")
        ),
        Kind::Symbol(s) => s.clone(),
        Kind::Int(i) => i.to_string(),
        _ => "?".into(),
    }
}
