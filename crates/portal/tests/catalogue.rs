//! The message catalogue is complete: every text a page shows goes through the catalogue, and
//! `translations/messages.pot` lists exactly the messages the code uses.
//!
//! After changing texts, regenerate the template with
//! `UPDATE_POT=1 cargo test -p snikket-portal --test catalogue`.

use polib::catalog::Catalog;
use polib::message::Message;
use polib::metadata::CatalogMetadata;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A message: its id and, for plural messages, the plural id.
type Key = (String, Option<String>);

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(crate_dir().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|x| x.to_str()) == Some(ext))
        .collect();
    out.sort();
    out
}

/// The string literal at the start of `s` (after blanks), unescaped, and the rest after it.
fn literal(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start();
    let body = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &body[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// The messages of `text`: literals after each of `markers`; `ngettext` takes two.
fn extract(text: &str, markers: &[&str], found: &mut BTreeMap<Key, BTreeSet<String>>, file: &str) {
    for marker in markers {
        let mut rest = text;
        while let Some(i) = rest.find(marker) {
            let before = rest[..i].chars().next_back();
            rest = &rest[i + marker.len()..];
            // `_(` must not be the end of a longer name (`n_(` is its own marker).
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let Some((id, after)) = literal(rest) else {
                continue;
            };
            let plural = if *marker == "ngettext(" {
                after
                    .trim_start()
                    .strip_prefix(',')
                    .and_then(literal)
                    .map(|(p, _)| p)
            } else {
                None
            };
            found
                .entry((id, plural))
                .or_default()
                .insert(file.to_string());
        }
    }
}

/// Every message the portal uses, with the files using it.
fn used_messages() -> BTreeMap<Key, BTreeSet<String>> {
    let mut found = BTreeMap::new();
    for path in files("templates", "html") {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        let name = format!("templates/{}", name(&path));
        extract(&text, &["_(", "ngettext("], &mut found, &name);
    }
    for path in files("src", "rs") {
        // The translation machinery's own tests use made-up messages.
        if name(&path) == "i18n.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        let name = format!("src/{}", name(&path));
        extract(
            &text,
            &["n_(", "gettext(", "gettext_with(", "ngettext("],
            &mut found,
            &name,
        );
    }
    found
}

fn name(p: &Path) -> String {
    p.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string()
}

fn pot_path() -> PathBuf {
    crate_dir().join("translations/messages.pot")
}

fn write_pot(used: &BTreeMap<Key, BTreeSet<String>>) {
    let mut meta = CatalogMetadata::new();
    meta.project_id_version = "snikket-portal".into();
    meta.mime_version = "1.0".into();
    meta.content_type = "text/plain; charset=UTF-8".into();
    meta.content_transfer_encoding = "8bit".into();
    meta.plural_rules.nplurals = 2;
    meta.plural_rules.expr = "(n != 1)".into();
    let mut cat = Catalog::new(meta);
    for ((id, plural), sources) in used {
        let source = sources.iter().cloned().collect::<Vec<_>>().join(" ");
        let m = match plural {
            None => Message::build_singular()
                .with_source(source)
                .with_msgid(id.clone())
                .with_msgstr(String::new())
                .done(),
            Some(p) => Message::build_plural()
                .with_source(source)
                .with_msgid(id.clone())
                .with_msgid_plural(p.clone())
                .with_msgstr_plural(vec![String::new(), String::new()])
                .done(),
        };
        cat.append_or_update(m);
    }
    polib::po_file::write_to_file(&cat, &pot_path())
        .unwrap_or_else(|e| panic!("writing the pot: {e}"));
}

fn pot_messages() -> BTreeSet<Key> {
    let cat = polib::po_file::parse(&pot_path()).unwrap_or_else(|e| panic!("reading the pot: {e}"));
    cat.messages()
        .map(|m| {
            (
                m.msgid().to_string(),
                m.msgid_plural().ok().map(str::to_string),
            )
        })
        .collect()
}

#[test]
fn the_pot_lists_every_message_in_use() {
    let used = used_messages();
    assert!(used.len() > 200, "only {} messages found", used.len());
    if std::env::var_os("UPDATE_POT").is_some() {
        write_pot(&used);
    }
    let in_pot = pot_messages();
    let in_code: BTreeSet<Key> = used.keys().cloned().collect();
    let missing: Vec<_> = in_code.difference(&in_pot).collect();
    let stale: Vec<_> = in_pot.difference(&in_code).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "translations/messages.pot is out of date (regenerate it with UPDATE_POT=1 cargo test -p snikket-portal --test catalogue)\nmissing: {missing:#?}\nstale: {stale:#?}"
    );
}

/// Text a page would show in English whatever the language: anything with letters outside
/// template tags, and translatable attributes written out literally.
fn untranslated(template: &str) -> Vec<String> {
    let mut s = template.to_string();
    for (open, close) in [("{{", "}}"), ("{%", "%}"), ("{#", "#}"), ("<!--", "-->")] {
        while let Some(i) = s.find(open) {
            let Some(j) = s[i..].find(close) else { break };
            s.replace_range(i..i + j + close.len(), " ");
        }
    }
    let mut found = Vec::new();
    let mut rest = s.as_str();
    while let Some(i) = rest.find('<') {
        found.push(rest[..i].to_string());
        let Some(j) = rest[i..].find('>') else { break };
        let tag = &rest[i..i + j];
        for attr in [
            "placeholder=\"",
            "title=\"",
            "aria-label=\"",
            "alt=\"",
            "data-label=\"",
        ] {
            if let Some(k) = tag.find(attr) {
                let value = tag[k + attr.len()..].split('"').next().unwrap_or_default();
                found.push(value.to_string());
            }
        }
        rest = &rest[i + j + 1..];
    }
    found.push(rest.to_string());
    found
        .into_iter()
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|t| t.chars().any(|c| c.is_alphabetic()))
        .collect()
}

#[test]
fn templates_show_no_text_outside_the_catalogue() {
    let mut problems = Vec::new();
    for path in files("templates", "html") {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        for t in untranslated(&text) {
            problems.push(format!("{}: {t:?}", name(&path)));
        }
    }
    assert!(
        problems.is_empty(),
        "text not marked for translation:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_lint_sees_plain_text_and_attributes() {
    assert_eq!(
        untranslated(
            r#"<p>Hello {{ _("x") }}</p><input placeholder="Name" aria-label="{{ _("y") }}">{% if a %}·{% endif %}"#
        ),
        ["Hello", "Name"]
    );
}
