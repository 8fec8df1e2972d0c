//! The string form of a native key (`QNativeIpcKey::toString`/`fromString`).

use std::fmt;
use std::str::FromStr;

use super::SYSV_PROJECT_ID;
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

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
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

/// Parses the type part of a key string as Qt's `stringToType` does (after `QUrl` has
/// lowercased it): `systemv`, `posix`, `windows`, or `systemv-N` with a decimal `N` from
/// 1 to 255, Qt's System V key whose `ftok` project id is `N` (`systemv-81` is plain
/// `systemv`, 81 being `'Q'`). Anything else is no key type at all.
fn parse_scheme(scheme: &str) -> Scheme {
    match scheme {
        "systemv" => return Scheme::Supported(KeyType::SystemV),
        "posix" => return Scheme::Supported(KeyType::PosixRealtime),
        "windows" => return Scheme::Windows,
        _ => {}
    }
    let id = scheme
        .strip_prefix("systemv-")
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse::<u32>().ok())
        .filter(|id| (1..=0xff).contains(id));
    match id {
        Some(id) if id == SYSV_PROJECT_ID as u32 => Scheme::Supported(KeyType::SystemV),
        Some(id) => Scheme::SystemVWithId(id),
        None => Scheme::Unknown,
    }
}

/// What [`parse_scheme`] found.
enum Scheme {
    Supported(KeyType),
    Windows,
    SystemVWithId(u32),
    Unknown,
}

impl FromStr for NativeIpcKey {
    type Err = Error;

    /// Qt's `QNativeIpcKey::fromString()`; invalid text is a [`SharedMemoryError::KeyError`].
    ///
    /// Qt also accepts `windows:` keys (useless on Linux) and `systemv-N:` keys: System V
    /// keys whose `ftok` project id is `N` instead of Qt's default `'Q'` (81). Both are
    /// rejected with a `KeyError` that says so. Decision for `systemv-N`: not supported.
    /// Supporting it would mean a key type carrying the id (a breaking change of the
    /// public [`KeyType`]), the id in every `ftok` of segments and semaphores, in qshm's
    /// lock-state name (else `systemv-82:/f` and `systemv:/f`, different segments, would
    /// share one lock) and in `qshm ls`; Qt itself only makes such keys when asked, and
    /// no legacy or platform-safe key uses them. `systemv-81` is Qt's default id spelled
    /// out, so it is plain `systemv`, as in Qt.
    fn from_str(text: &str) -> Result<NativeIpcKey> {
        let invalid = |why: &str| {
            Error::new(SharedMemoryError::KeyError, "parse key", text)
                .with_detail(format!("not a native key string: {why}"))
        };
        let (scheme, rest) = text.split_once(':').ok_or_else(|| invalid("no type"))?;
        // URL schemes are case-insensitive (QUrl lowercases them)
        let scheme = scheme.to_ascii_lowercase();
        let kind = match parse_scheme(&scheme) {
            Scheme::Supported(kind) => kind,
            Scheme::Windows => return Err(invalid("Qt's \"windows\" keys do not exist on Linux")),
            Scheme::SystemVWithId(id) => {
                let shown = char::from_u32(id)
                    .filter(char::is_ascii_graphic)
                    .map(|c| format!(" ({c:?})"))
                    .unwrap_or_default();
                return Err(invalid(&format!(
                    "{scheme:?} is Qt's System V key type with ftok project id {id}{shown}; \
                     qshm supports only Qt's default System V id {SYSV_PROJECT_ID} ('Q')"
                )));
            }
            Scheme::Unknown => {
                return Err(invalid(&format!(
                    "unknown key type {scheme:?}: expected \"systemv\" or \"posix\""
                )));
            }
        };
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let (mut path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        if let Some(after) = path.strip_prefix("//") {
            // an authority: it must be empty (no host, user or port)
            let end = after.find('/').unwrap_or(after.len());
            if end != 0 {
                return Err(invalid("a host is not allowed"));
            }
            path = &after[end..];
        }
        let native = percent_decode(path).ok_or_else(|| invalid("bad percent-encoding"))?;
        let mut key = NativeIpcKey::new(native, kind);
        for item in query.into_iter().flat_map(|q| q.split('&')) {
            if item.is_empty() {
                continue;
            }
            let (name, value) = item.split_once('=').unwrap_or((item, ""));
            if name != "legacyKey" {
                return Err(invalid("unknown query item"));
            }
            let value = percent_decode(value).ok_or_else(|| invalid("bad percent-encoding"))?;
            // an empty legacy key is no legacy key (the string form never prints one)
            key.legacy = (!value.is_empty()).then_some(value);
        }
        Ok(key)
    }
}
