//! Parser for `snikket.conf`, following Docker Compose `env_file` rules.
//!
//! `KEY=VALUE` per line; blank lines and lines starting with `#` are ignored; an optional
//! `export ` prefix is allowed; values may be single-quoted (literal), double-quoted (with `\n`,
//! `\t`, `\"` and `\\` escapes) or bare (trailing whitespace and a ` #` comment are dropped).
//! Nothing is expanded: `$HOME` stays `$HOME`. A line with a name but no `=` means "take it from
//! the environment", as Compose does, and contributes nothing here.

use crate::error::EnvFileError;

/// One `KEY=VALUE` assignment and the line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The variable name.
    pub key: String,
    /// The value after quote processing.
    pub value: String,
    /// 1-based line number, for messages.
    pub line: usize,
}

fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

/// Parses the text of an env file, failing on the first malformed line.
pub fn parse(text: &str) -> Result<Vec<Assignment>, EnvFileError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(line);
        let bad = |reason: &str| EnvFileError::BadLine {
            line: line_no,
            reason: reason.to_string(),
        };
        let Some((key, rest)) = line.split_once('=') else {
            let key = line.trim_end();
            if valid_key(key) {
                continue;
            }
            return Err(bad("expected KEY=VALUE"));
        };
        let key = key.trim();
        if !valid_key(key) {
            return Err(bad(
                "the name before '=' must be letters, digits and '_' and not start with a digit",
            ));
        }
        let value = parse_value(rest).map_err(bad)?;
        out.push(Assignment {
            key: key.to_string(),
            value,
            line: line_no,
        });
    }
    Ok(out)
}

fn parse_value(rest: &str) -> Result<String, &'static str> {
    let rest = rest.trim_start_matches([' ', '\t']);
    if let Some(body) = rest.strip_prefix('\'') {
        let end = body.find('\'').ok_or("unterminated single quote")?;
        check_tail(&body[end + 1..])?;
        return Ok(body[..end].to_string());
    }
    if let Some(body) = rest.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    check_tail(&body[i + 1..])?;
                    return Ok(value);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, 't')) => value.push('\t'),
                    Some((_, 'r')) => value.push('\r'),
                    Some((_, other)) => {
                        if other != '"' && other != '\\' {
                            value.push('\\');
                        }
                        value.push(other);
                    }
                    None => return Err("unterminated double quote"),
                },
                other => value.push(other),
            }
        }
        return Err("unterminated double quote");
    }
    // Bare value: a '#' preceded by whitespace starts a comment.
    let mut end = rest.len();
    let bytes = rest.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'#' && i > 0 && (bytes[i - 1] == b' ' || bytes[i - 1] == b'\t') {
            end = i;
            break;
        }
    }
    Ok(rest[..end].trim_end().to_string())
}

fn check_tail(tail: &str) -> Result<(), &'static str> {
    let tail = tail.trim_start();
    if tail.is_empty() || tail.starts_with('#') {
        Ok(())
    } else {
        Err("unexpected text after the closing quote")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(text: &str) -> Vec<(String, String)> {
        parse(text)
            .unwrap()
            .into_iter()
            .map(|a| (a.key, a.value))
            .collect()
    }

    #[test]
    fn plain_lines_comments_and_blanks() {
        let got = kv("# comment\n\nSNIKKET_DOMAIN=chat.example.com\n  SNIKKET_ADMIN_EMAIL = me@example.com  \n");
        assert_eq!(
            got,
            vec![
                ("SNIKKET_DOMAIN".into(), "chat.example.com".into()),
                ("SNIKKET_ADMIN_EMAIL".into(), "me@example.com".into())
            ]
        );
    }

    #[test]
    fn quotes_comments_and_no_expansion() {
        let got = kv("A=\"two words\"\nB='$HOME \\n'\nC=x # note\nD=a#b\nE=$HOME\nexport F=1\nG=\"q\\\"x\\\\\"\nH=");
        assert_eq!(got[0].1, "two words");
        assert_eq!(got[1].1, "$HOME \\n");
        assert_eq!(got[2].1, "x");
        assert_eq!(got[3].1, "a#b");
        assert_eq!(got[4].1, "$HOME");
        assert_eq!(got[5], ("F".into(), "1".into()));
        assert_eq!(got[6].1, "q\"x\\");
        assert_eq!(got[7].1, "");
    }

    #[test]
    fn name_only_line_is_inherited() {
        assert!(kv("SNIKKET_DOMAIN\n").is_empty());
    }

    #[test]
    fn bad_lines_are_named() {
        let err = parse("A=1\n\nthis is not valid\n").unwrap_err();
        assert_eq!(err.to_string(), "line 3: expected KEY=VALUE");
        let err = parse("1ABC=2").unwrap_err();
        assert!(err.to_string().starts_with("line 1: the name"), "{err}");
        let err = parse("A=\"open").unwrap_err();
        assert_eq!(err.to_string(), "line 1: unterminated double quote");
        let err = parse("A='x' y").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1: unexpected text after the closing quote"
        );
    }
}
