//! Commands shown to users ("continue with: ..."), each word quoted for a POSIX shell
//! where it needs it, so that the line can be pasted as it is.

use std::ffi::OsStr;

/// `word` as a shell reads it back: as it is when it holds only safe characters, else in
/// single quotes.
pub fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:=,+@%".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::quote;
    use std::ffi::OsStr;

    #[test]
    fn words_are_quoted_only_when_needed() {
        assert_eq!(quote(OsStr::new("runs/alexnet-1")), "runs/alexnet-1");
        assert_eq!(quote(OsStr::new("my runs/a")), "'my runs/a'");
        assert_eq!(quote(OsStr::new("it's")), r"'it'\''s'");
        assert_eq!(quote(OsStr::new("")), "''");
    }
}
