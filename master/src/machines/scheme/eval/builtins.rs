//! The procedures a machines.scm file may call.

use super::*;

pub(super) const BUILTINS: [&str; 21] = [
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

impl Evaluator {
    pub(super) fn builtin(&mut self, name: &str, args: Vec<Value>, depth: usize) -> Result<Value> {
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

pub(super) fn arithmetic(op: &str, args: &[Value]) -> Result<Value> {
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
