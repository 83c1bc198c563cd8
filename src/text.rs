//! Showing untrusted text in messages.

/// `s` as a message may quote it: at most `max` characters, the rest cut
/// and counted (`abc… (1048576 bytes)`). A status line or an `action-fail`
/// message is one argv string, which Linux caps at 128 KiB; an operator's or
/// a relation's oversized value must not make the message itself fail.
pub fn shown(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((cut, _)) => format!("{}… ({} bytes)", &s[..cut], s.len()),
    }
}

/// [`shown`], quoted as `{:?}` quotes: `"abc"… (1048576 bytes)`.
pub fn quoted(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &s[..cut], s.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_long_text_is_cut_and_counted() {
        assert_eq!(shown("node1.maas", 10), "node1.maas");
        assert_eq!(shown("", 3), "");
        assert_eq!(shown("abcdef", 3), "abc… (6 bytes)");
        // Cut on a character boundary.
        assert_eq!(shown("ééé", 2), "éé… (6 bytes)");
        let big = "x".repeat(1 << 20);
        assert_eq!(shown(&big, 4), "xxxx… (1048576 bytes)");
        assert_eq!(quoted(&big, 4), "\"xxxx\"… (1048576 bytes)");
        assert_eq!(quoted("a\"b", 4), "\"a\\\"b\"");
    }
}
