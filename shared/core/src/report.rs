//! Reporting an error with its causes in one line, for the binaries.

use std::error::Error;

/// The error and its causes, `: `-separated, skipping causes already
/// spelled out in the message above them (many messages name their cause).
pub fn error_chain(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("opening {0}: {1}")]
    struct Outer(&'static str, #[source] std::io::Error);

    #[test]
    fn causes_already_said_are_not_repeated() {
        let e = Outer("x", std::io::Error::other("gone"));
        assert_eq!(error_chain(&e), "opening x: gone");
    }
}
