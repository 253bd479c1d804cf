//! Special forms, quasiquote, records and closures.

use super::*;

impl Evaluator {
    /// `Some(value)` if `name` is a special form handled here.
    pub(super) fn special_form(
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

    pub(super) fn quasi(
        &mut self,
        d: &Datum,
        env: &Env,
        depth: usize,
        level: usize,
    ) -> Result<Value> {
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
    pub(super) fn build_machine(
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
}

pub(super) fn closure(
    params: &[Datum],
    rest: Option<&Datum>,
    body: &[Datum],
    env: &Env,
) -> Result<Value> {
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
pub(super) fn quoted(d: &Datum) -> Result<Value> {
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
