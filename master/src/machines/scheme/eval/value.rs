//! Values, records, procedures and scopes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::*;

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
    pub(super) items: Vec<Value>,
    pub(super) depth: u32,
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
    pub(super) car: Value,
    pub(super) cdr: Value,
    pub(super) depth: u32,
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
    pub(super) fn truthy(&self) -> bool {
        !matches!(self, Self::Bool(false))
    }

    pub(super) fn list(items: Vec<Self>) -> Self {
        let depth = 1 + items.iter().map(Self::depth).max().unwrap_or(0);
        Self::List(Rc::new(ListVal { items, depth }))
    }

    pub(super) fn pair(car: Self, cdr: Self) -> Self {
        let depth = 1 + car.depth().max(cdr.depth());
        Self::Pair(Rc::new(PairVal { car, cdr, depth }))
    }

    /// Nesting depth: 0 for atoms.
    pub(super) fn depth(&self) -> u32 {
        match self {
            Self::List(l) => l.depth,
            Self::Pair(p) => p.depth,
            _ => 0,
        }
    }

    /// Structural equality (`equal?`) within a work budget.
    pub(super) fn equal(&self, other: &Self, budget: &mut u64) -> Option<bool> {
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

    pub(super) fn write_into(&self, out: &mut String, limit: usize) {
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

    pub(super) fn write_atom(&self) -> String {
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

    pub(super) fn to_field(&self) -> FieldValue {
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
    pub(super) vars: RefCell<HashMap<String, Value>>,
    pub(super) parent: Option<Env>,
}

impl Scope {
    pub(super) fn lookup(&self, name: &str) -> Option<Value> {
        if let Some(v) = self.vars.borrow().get(name) {
            return Some(v.clone());
        }
        self.parent.as_ref()?.lookup(name)
    }

    pub(super) fn define(&self, name: &str, value: Value) {
        self.vars.borrow_mut().insert(name.to_owned(), value);
    }
}
