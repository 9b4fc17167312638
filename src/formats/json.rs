//! A JSON scanner for the shapes exports come in: it checks the text's syntax and hands back
//! slices of it — an object's members, an array's elements — without building values
//! (docs/ARCHITECTURE.md, "Input formats as components"). It is the fast path in front of
//! serde_json: it accepts only valid JSON, and where it gives up (invalid text, or anything it
//! leaves to serde_json: very deep nesting, a key with escapes it does not decode, a number at
//! the top of a file) the caller asks serde_json, which then decides and words the error.
//! For text both accept, both give the same members in the same order.

use std::borrow::Cow;

/// serde_json's own nesting limit is 128; deeper text is left to it.
const MAX_DEPTH: u32 = 100;

/// Per byte inside a string: 1 for a byte that ends the plain run (`"`, `\`, a control
/// character), 0 otherwise.
static STOP: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = 1;
        i += 1;
    }
    t[b'"' as usize] = 1;
    t[b'\\' as usize] = 1;
    t
};

/// The length of the plain run at the start of `rest` (up to a quote, a backslash or a control
/// character), eight bytes at a time: a byte of a word is flagged when it equals `"` or `\`, or
/// is below 0x20 (the classic "has zero byte" bit trick; a borrow can only flag bytes after the
/// first true one, so the first flag is exact). `None` when the text ends first.
fn plain_run(rest: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(word) = rest.get(i..i + 8) {
        let x = u64::from_le_bytes(word.try_into().ok()?);
        let quote = x ^ (ONES * b'"' as u64);
        let backslash = x ^ (ONES * b'\\' as u64);
        let flags = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(ONES * 0x20) & !x);
        let flags = flags & HIGH;
        if flags != 0 {
            return Some(i + (flags.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    rest[i..]
        .iter()
        .position(|&c| STOP[c as usize] != 0)
        .map(|p| i + p)
}

struct Scan<'a> {
    b: &'a [u8],
    pos: usize,
    depth: u32,
}

impl<'a> Scan<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.pos += 1)
    }

    /// A string starting at `pos` (the opening quote). Returns the content's range and whether
    /// it has escapes.
    fn string(&mut self) -> Option<(usize, usize, bool)> {
        self.eat(b'"')?;
        let start = self.pos;
        let mut escaped = false;
        loop {
            self.pos += plain_run(self.b.get(self.pos..)?)?;
            match self.b[self.pos] {
                b'"' => {
                    self.pos += 1;
                    return Some((start, self.pos - 1, escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.pos += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.pos += 1,
                        b'u' => {
                            let hex = self.b.get(self.pos + 1..self.pos + 5)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.pos += 5;
                        }
                        _ => return None,
                    }
                }
                // A control character must be escaped.
                _ => return None,
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.eat(b'.').is_some() && self.digits() == 0 {
            return None;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        (self.b.get(self.pos..self.pos + word.len())? == word).then(|| self.pos += word.len())
    }

    /// One value starting at `pos` (after whitespace), checked and skipped.
    fn value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' => self.nested(b'{', b'}', |s| {
                s.string()?;
                s.ws();
                s.eat(b':')?;
                s.ws();
                s.value()
            }),
            b'[' => self.nested(b'[', b']', Scan::value),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    /// A `{…}` or `[…]` whose items `item` reads, separated by commas.
    fn nested(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        self.eat(open)?;
        self.ws();
        if self.eat(close).is_none() {
            loop {
                item(self)?;
                self.ws();
                match self.peek()? {
                    b',' => {
                        self.pos += 1;
                        self.ws();
                    }
                    c if c == close => {
                        self.pos += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        Some(())
    }

    /// A key: borrowed; one with escapes is left to serde_json (`None`) unless it decodes
    /// plainly (no `\u`).
    fn key(&mut self, text: &'a str) -> Option<Cow<'a, str>> {
        let (s, e, escaped) = self.string()?;
        if !escaped {
            return Some(Cow::Borrowed(&text[s..e]));
        }
        let raw = &text[s..e];
        if raw.contains("\\u") {
            return None;
        }
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            out.push(match chars.next()? {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                'b' => '\u{8}',
                'f' => '\u{c}',
                c => c,
            });
        }
        Some(Cow::Owned(out))
    }

    /// A member's key and the colon after it, up to its value.
    fn member_key(&mut self, text: &'a str) -> Option<Cow<'a, str>> {
        let k = self.key(text)?;
        self.ws();
        self.eat(b':')?;
        self.ws();
        Some(k)
    }

    /// The array at `pos`, its elements' text collected.
    fn items(&mut self, text: &'a str) -> Option<Vec<&'a str>> {
        let mut items = Vec::new();
        self.nested(b'[', b']', |s| {
            let start = s.pos;
            s.value()?;
            items.push(&text[start..s.pos]);
            Some(())
        })?;
        Some(items)
    }

    /// Only whitespace is left.
    fn end(&mut self) -> Option<()> {
        self.ws();
        (self.pos == self.b.len()).then_some(())
    }
}

fn scan(text: &str) -> Scan<'_> {
    let mut s = Scan {
        b: text.as_bytes(),
        pos: 0,
        depth: 0,
    };
    s.ws();
    s
}

/// The members of the object `text` is (keys decoded, values as their exact text), in order,
/// repeated keys included; `None` when it is not an object or the scanner leaves it to
/// serde_json.
pub fn members(text: &str) -> Option<Vec<(Cow<'_, str>, &str)>> {
    let mut s = scan(text);
    let mut out = Vec::with_capacity(16);
    s.nested(b'{', b'}', |s| {
        let k = s.member_key(text)?;
        let start = s.pos;
        s.value()?;
        out.push((k, &text[start..s.pos]));
        Some(())
    })?;
    s.end()?;
    Some(out)
}

/// A top-level member's value as a file's envelope holds it.
#[derive(Debug, PartialEq)]
pub enum Top<'a> {
    /// An array, split into its elements' text while the file is read (one pass).
    Items(Vec<&'a str>),
    Object,
    /// A string, `true`, `false` or `null`.
    Scalar,
}

/// The members of a file's top-level object, arrays split into their elements; `None` as for
/// [`members`] (and for a number directly under the top, whose range serde_json checks).
pub fn envelope(text: &str) -> Option<Vec<(Cow<'_, str>, Top<'_>)>> {
    let mut s = scan(text);
    let mut out = Vec::new();
    s.nested(b'{', b'}', |s| {
        let k = s.member_key(text)?;
        let v = match s.peek()? {
            b'[' => Top::Items(s.items(text)?),
            b'{' => s.value().map(|()| Top::Object)?,
            b'"' | b't' | b'f' | b'n' => s.value().map(|()| Top::Scalar)?,
            _ => return None,
        };
        out.push((k, v));
        Some(())
    })?;
    s.end()?;
    Some(out)
}

/// The elements of the array `text` is, as their exact text; `None` when it is not an array or
/// the scanner leaves it to serde_json.
pub fn elements(text: &str) -> Option<Vec<&str>> {
    let mut s = scan(text);
    let out = s.items(text)?;
    s.end()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    /// What serde_json makes of an object: its members as text, or an error.
    fn serde_members(text: &str) -> Option<Vec<(String, String)>> {
        // In order, repeated keys included (a map would merge them).
        struct Ordered(Vec<(String, String)>);
        impl<'de> serde::Deserialize<'de> for Ordered {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = Ordered;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("an object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut m: A,
                    ) -> Result<Ordered, A::Error> {
                        let mut out = Vec::new();
                        while let Some(k) = m.next_key::<String>()? {
                            let v: &RawValue = m.next_value()?;
                            out.push((k, v.get().to_string()));
                        }
                        Ok(Ordered(out))
                    }
                }
                d.deserialize_map(V)
            }
        }
        serde_json::from_str::<Ordered>(text).ok().map(|o| o.0)
    }

    fn ours(text: &str) -> Option<Vec<(String, String)>> {
        members(text).map(|m| {
            m.into_iter()
                .map(|(k, v)| (k.into_owned(), v.to_string()))
                .collect()
        })
    }

    #[test]
    fn members_are_what_serde_json_reads() {
        let cases = [
            r#"{"a":1,"b":"x","c":[1,2,{"d":null}],"e":{"f":true,"g":false}}"#,
            r#" { "a" : -0.5e+10 , "b" : "\"q\" \u00e6 \\ \/ \n" , "a" : 2 } "#,
            r#"{}"#,
            r#"{"k\"ey":1, "t\tab": [ ] , "n": {}}"#,
            r#"{"sourcedId":"u1","userIds":[{"type":"Feide","identifier":"x@y.no"}],"metadata":{"skolenummer":"46591"}}"#,
            r#"{"æøå":"Ærlig Øystein Åsen","num":12345678901234567890123}"#,
        ];
        for c in cases {
            assert_eq!(ours(c), serde_members(c), "{c}");
            assert!(ours(c).is_some(), "{c}");
        }
    }

    #[test]
    fn what_serde_json_refuses_the_scanner_refuses() {
        let bad = [
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":-}"#,
            r#"{"a":+1}"#,
            r#"{"a":"x\qy"}"#,
            r#"{"a":"\u12G4"}"#,
            "{\"a\":\"line\nbreak\"}",
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{"a":1,}"#,
            r#"{"a":[1,]}"#,
            r#"{"a" 1}"#,
            r#"{"a":1} x"#,
            r#"{"a":1"#,
            r#"{"a":"unterminated}"#,
            r#"{a:1}"#,
            r#"[1,2]"#,
            "",
            "   ",
            r#"{"a":[1 2]}"#,
            r#"{"a":{"b":1,,"c":2}}"#,
            r#"{"a":NaN}"#,
            r#"{"a":Infinity}"#,
        ];
        for b in bad {
            assert_eq!(ours(b), None, "{b:?}");
            assert_eq!(serde_members(b), None, "serde accepts {b:?}");
        }
        // Deep nesting is left to serde_json (which has a limit of its own).
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(150), "]".repeat(150));
        assert_eq!(ours(&deep), None);
    }

    #[test]
    fn elements_are_the_items_of_an_array() {
        assert_eq!(
            elements(r#" [ {"a":1} , "x", 2, [3], null ] "#),
            Some(vec![r#"{"a":1}"#, r#""x""#, "2", "[3]", "null"])
        );
        assert_eq!(elements("[]"), Some(vec![]));
        assert_eq!(elements(r#"{"a":1}"#), None);
        assert_eq!(elements("[1,]"), None);
    }

    #[test]
    fn plain_runs_stop_where_a_byte_loop_stops() {
        let texts: [&[u8]; 6] = [
            b"abcdefghijklmnop\"rest",
            b"0123456\\x",
            "\u{e6}\u{f8}\u{e5} and more text here\u{1}".as_bytes(),
            b"short\"",
            b"no end at all in this text",
            b"\"",
        ];
        for t in texts {
            for start in 0..t.len() {
                let rest = &t[start..];
                let slow = rest.iter().position(|&c| STOP[c as usize] != 0);
                assert_eq!(plain_run(rest), slow, "{:?}", String::from_utf8_lossy(rest));
            }
        }
    }

    #[test]
    fn an_envelope_splits_its_arrays() {
        let e = envelope(r#"{"users":[{"a":1},{"b":[2]}],"user":{"c":3},"x":"s","n":null,"e":[]}"#)
            .unwrap();
        let keys: Vec<&str> = e.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["users", "user", "x", "n", "e"]);
        assert_eq!(e[0].1, Top::Items(vec![r#"{"a":1}"#, r#"{"b":[2]}"#]));
        assert_eq!(e[1].1, Top::Object);
        assert_eq!(e[2].1, Top::Scalar);
        assert_eq!(e[4].1, Top::Items(vec![]));
        // A number under the top is left to serde_json, as is anything invalid.
        assert_eq!(envelope(r#"{"n":1}"#), None);
        assert_eq!(envelope(r#"{"users":[{"a":1},]}"#), None);
        assert_eq!(envelope(r#"{"users":[{"a":1}]"#), None);
    }

    #[test]
    fn random_texts_never_disagree_with_serde_json() {
        // Mutations of a record: the scanner either reads what serde_json reads or gives up.
        let base = r#"{"sourcedId":"u-1","givenName":"Kari \"K\"","grades":["10"],"n":-1.5e3,"m":{"x":[true,false,null]}}"#;
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"{}[]\":,\\u0123456789.eE+-tfnrlsa \n\x01";
        for _ in 0..20_000 {
            let mut b = base.as_bytes().to_vec();
            for _ in 0..1 + next() % 3 {
                let i = (next() % b.len() as u64) as usize;
                match next() % 3 {
                    0 => b[i] = alphabet[(next() % alphabet.len() as u64) as usize],
                    1 => {
                        b.remove(i);
                    }
                    _ => b.insert(i, alphabet[(next() % alphabet.len() as u64) as usize]),
                }
            }
            let Ok(text) = std::str::from_utf8(&b) else {
                continue;
            };
            if let Some(m) = ours(text) {
                assert_eq!(Some(m), serde_members(text), "{text}");
            }
        }
    }
}
