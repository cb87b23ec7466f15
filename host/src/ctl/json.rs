//! `--json` output: the server's JSON indented as `serde_json` would, but
//! with its fields in the server's order (parsing into a `Value` would sort
//! them, and `totals` before `series` reads better than the alphabet).

/// Indent `compact`, which must be valid JSON, two spaces a level.
pub fn pretty(compact: &str) -> String {
    let mut out = String::with_capacity(compact.len() * 2);
    let mut depth = 0usize;
    let mut chars = compact.chars().peekable();
    let mut in_string = false;
    let mut escaped = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                let close = if c == '{' { '}' } else { ']' };
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if chars.peek() == Some(&close) {
                    chars.next();
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

fn newline(out: &mut String, depth: usize) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str("  ");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indents_like_serde_json_and_keeps_the_order() {
        let sorted = r#"{"a":[1,{"b":"x\"}, [y]:","c":null}],"d":{},"e":[],"f":-1.5}"#;
        let value: serde_json::Value = serde_json::from_str(sorted).unwrap();
        assert_eq!(
            pretty(sorted),
            serde_json::to_string_pretty(&value).unwrap()
        );
        let unsorted = r#"{"z":1,"a":2}"#;
        assert_eq!(pretty(unsorted), "{\n  \"z\": 1,\n  \"a\": 2\n}");
        assert_eq!(pretty("\"a\\\\\""), "\"a\\\\\"");
    }
}
