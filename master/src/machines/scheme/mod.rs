//! A reader and a small evaluator for the Scheme that machines.scm files
//! contain (spec guix-offload.md §4).
//!
//! The reader covers Guile's lexical syntax as it appears in these files:
//!
//! ```text
//! datum   := list | atom | "'" datum | "`" datum | "," datum | ",@" datum
//! list    := "(" datum* ["." datum] ")" | "[" … "]"
//! atom    := string | number | boolean | character | keyword | symbol
//! string  := '"' (char | "\" escape)* '"'   ; \\ \" \a \b \f \n \r \t \v \0 \xHH \<newline>
//! number  := integer | decimal | rational   ; 42 -7 2. .5 1e3 -0.25 1/2 #x1F #e1.5 #i1/3
//! boolean := #t | #f | #true | #false
//! char    := #\a | #\space | #\newline | #\tab | #\nul | #\xHH …
//! keyword := #:name
//! comment := ";" … end of line | "#|" … "|#" (nested) | "#;" datum | "#!" … "!#"
//! ```
//!
//! Every datum carries its position (1-based line and column). Limits:
//! files of at most [`read::MAX_SOURCE`] bytes, nesting at most
//! [`read::MAX_DEPTH`].

pub mod eval;
pub mod read;

pub use read::{Datum, Kind, Pos, ReadError};

#[cfg(test)]
mod tests;
