//! Property tests for the configuration parser: whatever text an operator
//! (or an editor accident) puts in the file, `Config::from_toml` followed by
//! `validate` answers `Ok` or errors that each name a field and say what is
//! wrong — never a panic, never an empty error.

use proptest::prelude::*;
use stavka::config::{Config, ConfigErrors};

/// The README's example configuration, which the docs promise is valid.
fn readme_example() -> &'static str {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("```toml\n[listen]")
        .expect("README has the example configuration")
        + "```toml\n".len();
    let len = readme[start..].find("```").expect("the example ends");
    &readme[start..start + len]
}

/// Parse and validate, as `stavka --config` and `check-config` do.
fn load(text: &str) -> Result<Config, ConfigErrors> {
    let config = Config::from_toml(text)?;
    config.validate()?;
    Ok(config)
}

/// An error must point somewhere and say something.
fn check_errors(text: &str) -> Result<(), TestCaseError> {
    if let Err(errors) = load(text) {
        prop_assert!(
            !errors.0.is_empty(),
            "an error with no problems for {text:?}"
        );
        for e in &errors.0 {
            prop_assert!(!e.path.is_empty(), "no field path: {e:?} for {text:?}");
            prop_assert!(!e.message.is_empty(), "no message: {e:?} for {text:?}");
        }
        // A problem the TOML grammar finds has no field to name: it says
        // where in the file it is instead.
        for e in errors.0.iter().filter(|e| e.path == "(file)") {
            prop_assert!(
                e.message.contains("(line "),
                "no location: {e:?} for {text:?}"
            );
        }
        let shown = errors.to_string();
        prop_assert!(shown.contains(&errors.0[0].path));
    }
    Ok(())
}

/// Values that reach every deserializer with something it must reject or
/// bound: huge and negative numbers, absurd durations and sizes, wrong
/// types, odd strings.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        "-?[0-9]{1,40}",
        "-?[0-9]{1,30}\\.[0-9]{0,5}(e-?[0-9]{1,4})?",
        "\"-?[0-9]{0,30}(ns|ms|s|m|h|d|w|y|years|KiB|MiB|GiB|TiB|PiB|EiB|kb|B|)\"",
        "\"[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}:[0-9]{0,7}\"",
        "\"[^\"\\\\\n]{0,24}\"",
        Just("true".to_owned()),
        Just("\"\"".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("nan".to_owned()),
        Just("inf".to_owned()),
        Just("1979-05-27T07:32:00Z".to_owned()),
        "\\[(\"[a-z.*]{0,8}\", ?){0,4}\\]",
        "\\{ ?([a-z_]{1,10} = \"[a-z0-9.:]{0,12}\", ?){0,3}\\}",
    ]
}

/// One edit to the example file.
#[derive(Debug, Clone)]
enum Edit {
    /// Remove line `n` (modulo the line count).
    Delete(usize),
    /// Repeat line `n` (a duplicate key or table).
    Duplicate(usize),
    /// Give the key on line `n` this value.
    Revalue(usize, String),
    /// Cut the file after this many characters.
    Truncate(usize),
    /// Put this text at this character position.
    Insert(usize, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::Delete),
        any::<usize>().prop_map(Edit::Duplicate),
        (any::<usize>(), value()).prop_map(|(n, v)| Edit::Revalue(n, v)),
        any::<usize>().prop_map(Edit::Truncate),
        (
            any::<usize>(),
            "[\\[\\]{}=\"#,.\n a-z0-9\u{0}-\u{10ffff}]{1,6}"
        )
            .prop_map(|(at, text)| Edit::Insert(at, text)),
    ]
}

fn apply(text: &str, edit: &Edit) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let n = lines.len();
    match edit {
        Edit::Delete(i) => {
            lines.remove(i % n);
        }
        Edit::Duplicate(i) => {
            let line = lines[i % n].clone();
            lines.insert(i % n, line);
        }
        Edit::Revalue(i, value) => {
            let line = &mut lines[i % n];
            if let Some(eq) = line.find(" = ") {
                line.truncate(eq + 3);
                line.push_str(value);
            }
        }
        Edit::Truncate(at) => {
            let chars: String = text.chars().take(at % (text.len() + 1)).collect();
            return chars;
        }
        Edit::Insert(at, insert) => {
            let mut chars: Vec<char> = text.chars().collect();
            let at = at % (chars.len() + 1);
            chars.splice(at..at, insert.chars());
            return chars.into_iter().collect();
        }
    }
    lines.join("\n")
}

#[test]
fn the_readme_example_is_valid() {
    load(readme_example()).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any text at all, including control characters and multi-byte
    /// characters where a parser reports a position.
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}|[\u{0}-\u{10ffff}]{0,80}") {
        check_errors(&text)?;
    }

    /// Text shaped like TOML over stavka's section and field names, so it
    /// gets past the TOML grammar into the typed fields and `validate`.
    #[test]
    fn toml_shaped_text_never_panics(
        tables in proptest::collection::vec(
            (
                prop_oneof![
                    Just("[listen]"), Just("[server]"), Just("[origin]"), Just("[cache]"),
                    Just("[store]"), Just("[log]"), Just("[admin]"), Just("[policy]"),
                    Just("[[site]]"), Just("[site.origin]"), Just("[nope]"),
                ],
                proptest::collection::vec(
                    (
                        prop_oneof![
                            "[a-z_]{1,12}",
                            Just("proxy".to_owned()), Just("admin".to_owned()),
                            Just("threads".to_owned()), Just("name".to_owned()),
                            Just("hosts".to_owned()), Just("origin".to_owned()),
                            Just("address".to_owned()), Just("disk_bytes".to_owned()),
                            Just("memory_bytes".to_owned()), Just("lock_timeout".to_owned()),
                            Just("deadline".to_owned()), Just("memory".to_owned()),
                            Just("instances".to_owned()), Just("default".to_owned()),
                            Just("policy".to_owned()), Just("token".to_owned()),
                            Just("heuristic_max_ttl".to_owned()), Just("write_concurrency".to_owned()),
                        ],
                        value(),
                    ),
                    0..5,
                ),
            ),
            0..6,
        ),
    ) {
        let mut text = String::new();
        for (table, fields) in &tables {
            text.push_str(table);
            text.push('\n');
            for (key, value) in fields {
                text.push_str(&format!("{key} = {value}\n"));
            }
        }
        check_errors(&text)?;
    }

    /// The README's example with a few edits: deleted, duplicated and
    /// re-valued lines, truncation, inserted characters.
    #[test]
    fn edited_readme_example_never_panics(edits in proptest::collection::vec(edit(), 1..4)) {
        let mut text = readme_example().to_owned();
        for edit in &edits {
            text = apply(&text, edit);
        }
        check_errors(&text)?;
    }
}
