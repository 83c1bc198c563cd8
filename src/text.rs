//! Showing untrusted text in messages.

/// `s` as a message may quote it: at most `max` characters, the rest cut
/// and counted (`abc… (1048576 bytes)`). A status line or an `action-fail`
/// message is one argv string, which Linux caps at 128 KiB; an operator's or
/// a relation's oversized value must not make the message itself fail.
pub fn shown(s: &str, max: usize) -> String {
    match cut(s, max) {
        None => s.to_string(),
        Some(head) => format!("{head}… ({} bytes)", s.len()),
    }
}

/// [`shown`], quoted as `{:?}` quotes: `"abc"… (1048576 bytes)`.
pub fn quoted(s: &str, max: usize) -> String {
    match cut(s, max) {
        None => format!("{s:?}"),
        Some(head) => format!("{head:?}… ({} bytes)", s.len()),
    }
}

/// `s` cut to `max` characters, `…` marking a cut: `abc…`.
pub fn ellipsis(s: &str, max: usize) -> String {
    match cut(s, max) {
        None => s.to_string(),
        Some(head) => format!("{head}…"),
    }
}

/// The first `max` characters of `s` when it has more (`None`: it fits);
/// cut on a character boundary. The one truncation rule of the crate.
pub fn cut(s: &str, max: usize) -> Option<&str> {
    s.char_indices().nth(max).map(|(at, _)| &s[..at])
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
        assert_eq!(ellipsis("abcdef", 3), "abc…");
        assert_eq!(ellipsis("ééé", 3), "ééé");
        assert_eq!(ellipsis("éééé", 3), "ééé…");
        assert_eq!(cut("ab", 2), None);
    }
}
