//! Syntax checks done before a top-level form runs, as Guile expands it,
//! and printing data for messages.

use super::*;

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
pub(super) fn head(items: &[Datum]) -> Option<&str> {
    match items.first().map(|d| &d.kind) {
        Some(Kind::Symbol(s)) => Some(s),
        _ => None,
    }
}

/// Macro expansion of one top-level form: the field syntax of every
/// `build-machine` in code position (not quoted data), in textual order.
pub(super) fn check_syntax(d: &Datum, quasi: usize) -> Result<()> {
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

pub(super) fn check_clauses(pos: Pos, clauses: &[Datum]) -> Result<()> {
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
pub(super) fn find_symbol(d: &Datum, name: &str, quasi: usize) -> Option<Pos> {
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
