//! The string form of a native key (`QNativeIpcKey::toString`/`fromString`).

use std::fmt;
use std::str::FromStr;

use super::{KeyType, NativeIpcKey};
use crate::error::{Error, Result, SharedMemoryError};

/// Characters that must be percent-encoded in the path of the string form.
fn escape_path_char(c: char) -> bool {
    matches!(c, '%' | '?' | '#') || c.is_ascii_control()
}

/// Characters that must be percent-encoded in the `legacyKey` query value (as Qt's
/// `QUrlQuery` does: `+`, `?`, `/`, spaces and non-ASCII stay as they are).
fn escape_query_char(c: char) -> bool {
    matches!(c, '%' | '#' | '&' | '=') || c.is_ascii_control()
}

fn percent_encode(s: &str, escape: fn(char) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut buf = [0u8; 4];
    for c in s.chars() {
        if escape(c) {
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Percent-decoding as Qt's `QUrl` does it in tolerant mode, then as UTF-8: `%XX` with
/// two hex digits is the byte `XX`; a `%` without them is itself (`%zz`, `%2` at the end).
/// The bytes are read as UTF-8, each byte of an invalid or cut-off sequence becoming one
/// U+FFFD, as `QString::fromUtf8` does (`%E2%80` is two of them; Rust's `from_utf8_lossy`
/// would make one). Checked against real Qt 6.11 (PyQt6) by the unit tests.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    utf8_replacing_each_bad_byte(&decoded)
}

/// UTF-8 to text, each byte that does not start a whole valid sequence replaced by
/// U+FFFD (Qt's `QString::fromUtf8`).
fn utf8_replacing_each_bad_byte(mut bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    while !bytes.is_empty() {
        match std::str::from_utf8(bytes) {
            Ok(text) => {
                out.push_str(text);
                break;
            }
            Err(e) => {
                let (good, bad) = bytes.split_at(e.valid_up_to());
                // valid up to here by construction
                out.push_str(std::str::from_utf8(good).unwrap_or_default());
                out.push(char::REPLACEMENT_CHARACTER);
                bytes = &bad[1..];
            }
        }
    }
    out
}

impl fmt::Display for NativeIpcKey {
    /// Qt's `QNativeIpcKey::toString()`: `type:percent-encoded-native[?legacyKey=...]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut path = percent_encode(&self.native, escape_path_char);
        if path.starts_with("//") {
            // keep it a URL path, not an authority
            path.replace_range(0..2, "/%2F");
        }
        write!(f, "{}:{path}", self.kind)?;
        if let Some(legacy) = self.legacy.as_deref().filter(|l| !l.is_empty()) {
            write!(f, "?legacyKey={}", percent_encode(legacy, escape_query_char))?;
        }
        Ok(())
    }
}

impl FromStr for NativeIpcKey {
    type Err = Error;

    /// Qt's `QNativeIpcKey::fromString()`; what Qt reads as an invalid key is a
    /// [`SharedMemoryError::KeyError`].
    ///
    /// Read as Qt's `QUrl` (tolerant mode) and `QUrlQuery` read it: the type is the
    /// scheme, case-insensitive (`systemv`, `posix`, `systemv-N` for the System V type of
    /// `ftok` project id `N`, 1 to 255; `systemv-81` is `systemv`); the native key is the
    /// path, percent-decoded as Qt's `QUrl` decodes it (only valid `%XX` escapes; `posix:/a%zz` is `/a%zz`, as in
    /// Qt); an empty authority (`posix:///x`, `posix://@:/x`) is allowed, a host, user or
    /// port is not; the fragment is ignored; the query holds only `legacyKey` items (the
    /// last one counts), and an empty item is an unknown one (`?&legacyKey=y` is refused,
    /// as in Qt, while one `&` at the very end is nothing). Qt's `windows:` keys are
    /// refused: they do not exist on Linux.
    fn from_str(text: &str) -> Result<NativeIpcKey> {
        let invalid = |why: &str| {
            Error::new(SharedMemoryError::KeyError, "parse key", text)
                .with_detail(format!("not a native key string: {why}"))
        };
        let (scheme, rest) = text.split_once(':').ok_or_else(|| invalid("no type"))?;
        // URL schemes are case-insensitive (QUrl lowercases them)
        let scheme = scheme.to_ascii_lowercase();
        let kind = match KeyType::from_scheme(&scheme) {
            Some(Ok(kind)) => kind,
            Some(Err(())) => return Err(invalid("Qt's \"windows\" keys do not exist on Linux")),
            None => {
                return Err(invalid(&format!(
                    "unknown key type {scheme:?}: expected \"systemv\", \"posix\" or \"systemv-N\" \
                     (N: an ftok project id, 1 to 255)"
                )));
            }
        };
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let (mut path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        if let Some(after) = path.strip_prefix("//") {
            // an authority: no host, user or port (an empty user info or port is none)
            let end = after.find('/').unwrap_or(after.len());
            let authority = &after[..end];
            let host_port = match authority.rfind('@') {
                Some(0) => &authority[1..],
                Some(_) => return Err(invalid("a user is not allowed")),
                None => authority,
            };
            if !host_port.is_empty() && host_port != ":" {
                return Err(invalid("a host or port is not allowed"));
            }
            path = &after[end..];
        }
        let mut key = NativeIpcKey::new(percent_decode(path), kind);
        let query = query.unwrap_or_default();
        // QUrlQuery: items split at '&', a last empty one (a trailing '&') is none
        let items = query.strip_suffix('&').unwrap_or(query);
        for item in items.split('&').filter(|_| !query.is_empty()) {
            let (name, value) = item.split_once('=').unwrap_or((item, ""));
            if percent_decode(name) != "legacyKey" {
                return Err(invalid(&format!(
                    "unknown query item {name:?} (only legacyKey is allowed)"
                )));
            }
            let value = percent_decode(value);
            // an empty legacy key is no legacy key (the string form never prints one)
            key.legacy = (!value.is_empty()).then_some(value);
        }
        Ok(key)
    }
}
