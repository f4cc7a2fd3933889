//! Surgical edits of a JSON5 document (OpenClaw's `openclaw.json`): set one value at a
//! key path and leave every other byte — comments, key order, quoting, spacing — as it
//! was. It scans only enough to find spans; the caller checks the result with `json5`.

use serde_json::Value;

/// A value of the document and where it lies (byte offsets, end exclusive).
#[derive(Debug)]
enum Node {
    Object {
        open: usize,
        close: usize,
        members: Vec<Member>,
    },
    Other {
        start: usize,
        end: usize,
    },
}

impl Node {
    fn end(&self) -> usize {
        match self {
            Node::Object { close, .. } => close + 1,
            Node::Other { end, .. } => *end,
        }
    }

    fn start(&self) -> usize {
        match self {
            Node::Object { open, .. } => *open,
            Node::Other { start, .. } => *start,
        }
    }
}

#[derive(Debug)]
struct Member {
    key: String,
    quoted: bool,
    key_start: usize,
    value: Node,
    /// Where the comma after the value is, when there is one.
    comma: Option<usize>,
}

/// How the document writes keys and object ends, so an insertion looks like its
/// neighbours.
#[derive(Debug, Clone, Copy)]
struct Style {
    quote_keys: bool,
    trailing_commas: bool,
}

struct Scanner<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn err(&self, what: &str) -> String {
        let line = self.s[..self.pos].matches('\n').count() + 1;
        format!("line {line}: {what}")
    }

    fn skip(&mut self) -> Result<(), String> {
        loop {
            let rest = &self.s[self.pos..];
            if rest.starts_with("//") {
                self.pos += rest.find('\n').unwrap_or(rest.len());
            } else if let Some(body) = rest.strip_prefix("/*") {
                let end = body
                    .find("*/")
                    .ok_or_else(|| self.err("a `/*` comment is never closed"))?;
                self.pos += end + 4;
            } else if let Some(c) = self
                .peek()
                .filter(|c| c.is_whitespace() || *c == '\u{feff}')
            {
                self.pos += c.len_utf8();
            } else {
                return Ok(());
            }
        }
    }

    fn value(&mut self) -> Result<Node, String> {
        self.skip()?;
        match self.peek() {
            Some('{') => self.object(),
            Some('[') => self.array(),
            Some('"' | '\'') => {
                let start = self.pos;
                self.string()?;
                Ok(Node::Other {
                    start,
                    end: self.pos,
                })
            }
            Some(_) => self.primitive(),
            None => Err(self.err("a value is missing")),
        }
    }

    fn object(&mut self) -> Result<Node, String> {
        let open = self.pos;
        self.pos += 1;
        let mut members = Vec::new();
        loop {
            self.skip()?;
            match self.peek() {
                Some('}') => {
                    let close = self.pos;
                    self.pos += 1;
                    return Ok(Node::Object {
                        open,
                        close,
                        members,
                    });
                }
                None => return Err(self.err("an object is never closed")),
                _ => {}
            }
            let key_start = self.pos;
            let (key, quoted) = match self.peek() {
                Some('"' | '\'') => (self.string()?, true),
                _ => (self.identifier()?, false),
            };
            self.skip()?;
            if self.peek() != Some(':') {
                return Err(self.err(&format!("`:` expected after the key `{key}`")));
            }
            self.pos += 1;
            let value = self.value()?;
            self.skip()?;
            let comma = match self.peek() {
                Some(',') => {
                    self.pos += 1;
                    Some(self.pos - 1)
                }
                Some('}') => None,
                _ => return Err(self.err("`,` or `}` expected")),
            };
            members.push(Member {
                key,
                quoted,
                key_start,
                value,
                comma,
            });
        }
    }

    fn array(&mut self) -> Result<Node, String> {
        let start = self.pos;
        self.pos += 1;
        loop {
            self.skip()?;
            if self.peek() == Some(']') {
                self.pos += 1;
                return Ok(Node::Other {
                    start,
                    end: self.pos,
                });
            }
            self.value()?;
            self.skip()?;
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(']') => {}
                _ => return Err(self.err("`,` or `]` expected")),
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let quote = self.peek().unwrap_or('"');
        self.pos += 1;
        let mut out = String::new();
        loop {
            let c = self
                .peek()
                .ok_or_else(|| self.err("a string is never closed"))?;
            self.pos += c.len_utf8();
            if c == quote {
                return Ok(out);
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let e = self
                .peek()
                .ok_or_else(|| self.err("a string is never closed"))?;
            self.pos += e.len_utf8();
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                '0' => out.push('\0'),
                'u' => {
                    let hex = self.s.get(self.pos..self.pos + 4).unwrap_or("");
                    let code = u32::from_str_radix(hex, 16)
                        .map_err(|_| self.err("a `\\u` escape needs four hex digits"))?;
                    out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                    self.pos += 4;
                }
                // A line continuation: the newline is not part of the string.
                '\n' => {}
                other => out.push(other),
            }
        }
    }

    fn identifier(&mut self) -> Result<String, String> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_alphanumeric() || c == '_' || c == '$' {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
        if start == self.pos {
            return Err(self.err("a key is missing"));
        }
        Ok(self.s[start..self.pos].to_string())
    }

    fn primitive(&mut self) -> Result<Node, String> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            let rest = &self.s[self.pos..];
            if matches!(c, ',' | '}' | ']' | ':' | '{' | '[')
                || c.is_whitespace()
                || rest.starts_with("//")
                || rest.starts_with("/*")
            {
                break;
            }
            self.pos += c.len_utf8();
        }
        if start == self.pos {
            return Err(self.err("a value is missing"));
        }
        Ok(Node::Other {
            start,
            end: self.pos,
        })
    }
}

fn parse(text: &str) -> Result<Node, String> {
    let mut s = Scanner { s: text, pos: 0 };
    let root = s.value()?;
    s.skip()?;
    if s.pos != text.len() {
        return Err(s.err("text after the end of the document"));
    }
    if !matches!(root, Node::Object { .. }) {
        return Err("the document is not an object".into());
    }
    Ok(root)
}

/// The document with `value` at `path` (keys from the root), created along the way
/// where missing; everything else as it was. An empty document becomes a new one.
pub fn set(text: &str, path: &[&str], value: &Value) -> Result<String, String> {
    if text.trim().is_empty() {
        let style = Style {
            quote_keys: false,
            trailing_commas: true,
        };
        return Ok(render(&nest(path, value), "", "  ", style) + "\n");
    }
    let root = parse(text)?;
    let style = style_of(&root, text);
    let unit = indent_unit(&root, text);
    let mut node = &root;
    for (i, key) in path.iter().enumerate() {
        let Node::Object { members, .. } = node else {
            unreachable!("only objects are descended into")
        };
        // JSON5 lets a key repeat; the last one wins, so that is the one to change.
        let Some(m) = members.iter().rev().find(|m| m.key == *key) else {
            return Ok(insert(
                text,
                node,
                key,
                &nest(&path[i + 1..], value),
                style,
                &unit,
            ));
        };
        let rest = &path[i + 1..];
        if rest.is_empty() || !matches!(m.value, Node::Object { .. }) {
            let indent = line_indent(text, m.key_start);
            let rendered = render(&nest(rest, value), indent, &unit, style);
            let (start, end) = (m.value.start(), m.value.end());
            return Ok(format!("{}{rendered}{}", &text[..start], &text[end..]));
        }
        node = &m.value;
    }
    unreachable!("the path is never empty")
}

/// `{ "a": { "b": value } }` for the path `a.b`.
fn nest(path: &[&str], value: &Value) -> Value {
    path.iter().rev().fold(value.clone(), |v, k| {
        let mut m = serde_json::Map::new();
        m.insert((*k).to_string(), v);
        Value::Object(m)
    })
}

/// Adds the member `key: value` at the end of `object`.
fn insert(text: &str, object: &Node, key: &str, value: &Value, style: Style, unit: &str) -> String {
    let Node::Object {
        open,
        close,
        members,
    } = object
    else {
        unreachable!("members are inserted into objects only")
    };
    let (open, close) = (*open, *close);
    let outer = line_indent(text, open);
    let key = render_key(key, style);
    let Some(last) = members.last() else {
        let inner = format!("{outer}{unit}");
        let member = format!("{key}: {}", render(value, &inner, unit, style));
        let comma = if style.trailing_commas { "," } else { "" };
        let interior = &text[open + 1..close];
        return if interior.trim().is_empty() {
            format!(
                "{}\n{inner}{member}{comma}\n{outer}{}",
                &text[..=open],
                &text[close..]
            )
        } else {
            // Only comments inside: keep them, add the member after them.
            let body = interior.trim_end();
            format!(
                "{}{body}\n{inner}{member}{comma}\n{outer}{}",
                &text[..=open],
                &text[close..]
            )
        };
    };
    // An object written on one line stays on one line.
    if !text[open..close].contains('\n') {
        let member = format!("{key}: {}", render_inline(value, style));
        let at = last.comma.map_or(last.value.end(), |c| c + 1);
        let lead = if last.comma.is_some() { " " } else { ", " };
        return format!("{}{lead}{member}{}", &text[..at], &text[at..]);
    }
    let indent = line_indent(text, last.key_start).to_string();
    let member = format!("{key}: {}", render(value, &indent, unit, style));
    let trailing = last.comma.is_some();
    // After the last member and its comma, and past a comment on the same line, so
    // the comment stays with the member it describes.
    let mut at = last.comma.map_or(last.value.end(), |c| c + 1);
    let rest = &text[at..];
    let line_end = rest.find('\n').unwrap_or(rest.len());
    let tail = rest[..line_end].trim();
    if tail.is_empty() || tail.starts_with("//") || (tail.starts_with("/*") && tail.ends_with("*/"))
    {
        at += line_end;
    }
    let comma = if trailing { "," } else { "" };
    let mut out = String::with_capacity(text.len() + member.len() + 16);
    if trailing {
        out.push_str(&text[..at]);
    } else {
        let end = last.value.end();
        out.push_str(&text[..end]);
        out.push(',');
        out.push_str(&text[end..at]);
    }
    out.push_str(&format!("\n{indent}{member}{comma}"));
    out.push_str(&text[at..]);
    out
}

fn style_of(root: &Node, text: &str) -> Style {
    let mut quoted = 0;
    let mut bare = 0;
    let mut trailing = false;
    fn walk(n: &Node, text: &str, quoted: &mut i32, bare: &mut i32, trailing: &mut bool) {
        if let Node::Object { members, close, .. } = n {
            if let Some(last) = members.last()
                && last.comma.is_some()
                && text[last.value.end()..*close].contains('\n')
            {
                *trailing = true;
            }
            for m in members {
                if m.quoted {
                    *quoted += 1;
                } else {
                    *bare += 1;
                }
                walk(&m.value, text, quoted, bare, trailing);
            }
        }
    }
    walk(root, text, &mut quoted, &mut bare, &mut trailing);
    Style {
        quote_keys: quoted > bare,
        trailing_commas: trailing,
    }
}

/// One level of indentation as the document writes it (two spaces when it does not say).
fn indent_unit(root: &Node, text: &str) -> String {
    if let Node::Object { members, open, .. } = root
        && let Some(first) = members.first()
    {
        let outer = line_indent(text, *open);
        let inner = line_indent(text, first.key_start);
        if text[*open..first.key_start].contains('\n')
            && let Some(unit) = inner.strip_prefix(outer)
            && !unit.is_empty()
        {
            return unit.to_string();
        }
    }
    "  ".into()
}

/// The whitespace that starts the line holding `pos`.
fn line_indent(text: &str, pos: usize) -> &str {
    let start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let line = &text[start..];
    let n = line.len() - line.trim_start_matches([' ', '\t']).len();
    &line[..n]
}

fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

fn render_key(key: &str, style: Style) -> String {
    if !style.quote_keys && is_identifier(key) {
        key.to_string()
    } else {
        Value::String(key.to_string()).to_string()
    }
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Object(_) | Value::Array(_))
}

/// `value` written as the document would write it, starting at `indent`.
fn render(value: &Value, indent: &str, unit: &str, style: Style) -> String {
    let inner = format!("{indent}{unit}");
    let comma = if style.trailing_commas { "," } else { "" };
    match value {
        Value::Object(m) if m.is_empty() => "{}".into(),
        // A small flat object reads best on one line (`cost: { input: 0, output: 0 }`).
        Value::Object(m)
            if m.values().all(is_scalar) && render_inline(value, style).len() <= 60 =>
        {
            render_inline(value, style)
        }
        Value::Object(m) => {
            let items: Vec<String> = m
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{inner}{}: {}",
                        render_key(k, style),
                        render(v, &inner, unit, style)
                    )
                })
                .collect();
            format!("{{\n{}{comma}\n{indent}}}", items.join(",\n"))
        }
        Value::Array(a) if a.iter().all(is_scalar) => render_inline(value, style),
        Value::Array(a) => {
            let items: Vec<String> = a
                .iter()
                .map(|v| format!("{inner}{}", render(v, &inner, unit, style)))
                .collect();
            format!("[\n{}{comma}\n{indent}]", items.join(",\n"))
        }
        scalar => scalar.to_string(),
    }
}

/// `value` on one line.
fn render_inline(value: &Value, style: Style) -> String {
    match value {
        Value::Object(m) if m.is_empty() => "{}".into(),
        Value::Object(m) => {
            let items: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}: {}", render_key(k, style), render_inline(v, style)))
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(|v| render_inline(v, style)).collect();
            format!("[{}]", items.join(", "))
        }
        scalar => scalar.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(text: &str) -> Value {
        json5::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// Sets the value and checks the result parses to the original with the value set.
    fn check(text: &str, path: &[&str], value: Value) -> String {
        let out = set(text, path, &value).unwrap();
        let mut want = if text.trim().is_empty() {
            json!({})
        } else {
            parsed(text)
        };
        let mut at = &mut want;
        for k in &path[..path.len() - 1] {
            if !at.get(*k).is_some_and(Value::is_object) {
                at[*k] = json!({});
            }
            at = at.get_mut(*k).unwrap();
        }
        at[path[path.len() - 1]] = value;
        assert_eq!(parsed(&out), want, "{out}");
        out
    }

    #[test]
    fn an_empty_file_gets_a_new_document() {
        let out = check("", &["models", "providers", "x"], json!({"a": 1}));
        assert!(out.starts_with("{\n  models: {\n    providers: {"), "{out}");
    }

    #[test]
    fn comments_and_other_keys_stay_where_they_were() {
        let text = "// my settings\n{\n  // the agent\n  agents: { defaults: { workspace: \"~/w\" } }, // inline\n  /* models */\n  models: {\n    providers: {\n      other: { baseUrl: 'http://x/v1' }, // keep me\n    },\n  },\n}\n";
        let value = json!({"api": "a", "models": [{"id": "x"}]});
        let out = check(text, &["models", "providers", "orchestra"], value);
        assert!(out.contains("// my settings"), "{out}");
        assert!(out.contains("other: { baseUrl: 'http://x/v1' }, // keep me\n      orchestra: {\n        api: \"a\",\n        models: [\n          { id: \"x\" },\n        ],\n      },\n"), "{out}");
    }

    #[test]
    fn a_value_already_there_is_replaced_in_place() {
        let text = "{\n  \"models\": {\n    \"providers\": {\n      \"orchestra\": {\"api\": \"old\"},\n      \"b\": 2\n    }\n  }\n}\n";
        let out = check(
            text,
            &["models", "providers", "orchestra"],
            json!({"api": "new"}),
        );
        assert!(
            out.contains("\"orchestra\": { \"api\": \"new\" },\n      \"b\": 2"),
            "{out}"
        );
    }

    #[test]
    fn a_member_without_a_trailing_comma_gets_one() {
        let text = "{\n  \"a\": 1 // one\n}";
        let out = check(text, &["b", "c"], json!("x"));
        assert_eq!(out, "{\n  \"a\": 1, // one\n  \"b\": { \"c\": \"x\" }\n}");
    }

    #[test]
    fn one_line_objects_and_empty_objects_take_members() {
        check("{a: {}}", &["a", "b"], json!(1));
        check("{a: {x: 1}}", &["a", "b"], json!([1, 2]));
        check("{a: {x: 1,}}", &["a", "b"], json!({"c": true}));
        check(
            "{\n  a: {\n    // nothing yet\n  },\n}",
            &["a", "b"],
            json!(1),
        );
        check("{}", &["a"], json!(1));
    }

    #[test]
    fn a_scalar_on_the_path_becomes_an_object() {
        check(
            "{agents: 'x'}",
            &["agents", "defaults", "model"],
            json!("m"),
        );
    }

    #[test]
    fn json5_syntax_is_scanned() {
        let text = "{\n\tunquoted: +0x1F, 'single': 'it\\'s', trail: [1, 2,], n: .5,\n\t\"s\": \"a // not a comment\",\n}\n";
        let out = check(text, &["new"], json!(null));
        assert!(out.contains("\n\tnew: null,\n}"), "{out}");
    }

    #[test]
    fn broken_documents_are_refused() {
        assert!(set("{a: 1", &["b"], &json!(1)).is_err());
        assert!(set("[1]", &["b"], &json!(1)).is_err());
        assert!(set("{a: /* open", &["b"], &json!(1)).is_err());
    }
}
