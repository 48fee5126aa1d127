//! Go's formatting where a peer or tool compares our text with Go's byte for byte.

/// Go's `strconv.Quote` (`%q`): double quotes, the backslash escapes Go uses (`\a \b \f \n \r
/// \t \v`, `\xNN` for other ASCII controls, `\uNNNN` for other control characters), printable
/// characters kept as they are. Used for service-account token cache keys (MetaManager) and
/// Helm's `quote` (keadm's chart renderer).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn quotes_as_go() {
        assert_eq!(super::quote("a\"b\\c\n\t é\u{7}\u{1}\u{85}"), r#""a\"b\\c\n\t é\a\x01\u0085""#);
    }
}
