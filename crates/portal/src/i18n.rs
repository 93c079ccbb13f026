//! Translations: gettext catalogues compiled into the binary, one per language, chosen per request
//! from `Accept-Language` among `SNIKKET_WEB_LANGUAGES`.
//!
//! Message ids are the English text, so English needs no catalogue and a missing translation shows
//! the English text. Placeholders are written `%(name)s`, as in Snikket's own catalogues.
//! In templates, `_("…", name=value)` and `ngettext("one", "many", n)` return HTML: the catalogue
//! text is trusted markup, the values are escaped unless they are already safe.

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind, State};
use std::collections::HashMap;
use std::sync::Arc;

use crate::plural::Plural;

// `CATALOGUES: &[(&str, &str)]`: language tag and PO text of `translations/*.po`, from build.rs.
include!(concat!(env!("OUT_DIR"), "/catalogues.rs"));

/// The languages the portal speaks, in the configured order.
pub(crate) struct I18n {
    langs: Vec<Lang>,
}

struct Lang {
    /// The tag as configured and as the catalogue file is named (`zh_Hans_CN`).
    tag: String,
    /// BCP 47 form for `lang=` and `Content-Language` (`zh-Hans-CN`).
    bcp47: String,
    /// `None` for English.
    catalog: Option<Catalog>,
}

/// One language's translations.
struct Catalog {
    singular: HashMap<String, String>,
    plural: HashMap<String, Vec<String>>,
    rule: Plural,
    nplurals: usize,
}

impl Catalog {
    /// The translated messages of a PO file (untranslated and fuzzy ones are left out).
    fn parse(po: &str) -> Result<Self, String> {
        let options = polib::po_file::POParseOptions {
            message_body_only: false,
            translated_only: true,
            unsafe_utf8_decode: false,
        };
        let cat = polib::po_file::parse_from_reader_with_option(po.as_bytes(), &options)
            .map_err(|e| e.to_string())?;
        let rules = &cat.metadata.plural_rules;
        let rule = Plural::parse(&rules.expr).map_err(|e| e.to_string())?;
        let mut out = Catalog {
            singular: HashMap::new(),
            plural: HashMap::new(),
            rule,
            nplurals: rules.nplurals.max(1),
        };
        for m in cat.messages() {
            if m.is_fuzzy() || m.msgctxt().is_some_and(|c| !c.is_empty()) {
                continue;
            }
            if m.is_plural() {
                if let Ok(forms) = m.msgstr_plural() {
                    out.plural.insert(m.msgid().to_string(), forms.clone());
                }
            } else if let Ok(text) = m.msgstr() {
                if !text.is_empty() && !m.msgid().is_empty() {
                    out.singular.insert(m.msgid().to_string(), text.to_string());
                }
            }
        }
        Ok(out)
    }

    fn gettext<'a>(&'a self, msgid: &'a str) -> &'a str {
        self.singular.get(msgid).map_or(msgid, String::as_str)
    }

    fn ngettext<'a>(&'a self, singular: &'a str, plural: &'a str, n: u64) -> &'a str {
        let idx = self.rule.index(n).min(self.nplurals - 1);
        self.plural
            .get(singular)
            .and_then(|forms| forms.get(idx))
            .filter(|t| !t.is_empty())
            .map_or(if n == 1 { singular } else { plural }, String::as_str)
    }
}

/// The set of messages of one request.
#[derive(Clone)]
pub(crate) struct Tr {
    i18n: Arc<I18n>,
    idx: usize,
}

impl I18n {
    /// The configured languages that have a catalogue (English always does), in the configured
    /// order; English alone when none of them has one.
    pub(crate) fn new(configured: &[String]) -> Arc<Self> {
        Self::with_catalogues(configured, CATALOGUES)
    }

    /// As [`I18n::new`], from the given compiled catalogues.
    pub(crate) fn with_catalogues(configured: &[String], catalogues: &[(&str, &str)]) -> Arc<Self> {
        let mut langs = Vec::new();
        let mut missing = Vec::new();
        for tag in configured {
            if langs.iter().any(|l: &Lang| l.tag == *tag) {
                continue;
            }
            let bcp47 = tag.replace('_', "-");
            if bcp47.eq_ignore_ascii_case("en") {
                langs.push(Lang {
                    tag: tag.clone(),
                    bcp47,
                    catalog: None,
                });
                continue;
            }
            let Some((_, po)) = catalogues.iter().find(|(t, _)| t == tag) else {
                missing.push(tag.as_str());
                continue;
            };
            match Catalog::parse(po) {
                Ok(c) => langs.push(Lang {
                    tag: tag.clone(),
                    bcp47,
                    catalog: Some(c),
                }),
                Err(e) => {
                    tracing::warn!(language = %tag, error = %e, "translation catalogue unreadable");
                    missing.push(tag.as_str());
                }
            }
        }
        if !missing.is_empty() {
            tracing::info!(languages = ?missing, "no translation for these languages yet; they get English");
        }
        if langs.is_empty() {
            langs.push(Lang {
                tag: "en".into(),
                bcp47: "en".into(),
                catalog: None,
            });
        }
        Arc::new(I18n { langs })
    }

    /// The best language for an `Accept-Language` header (RFC 4647 lookup, by quality); the first
    /// configured one when nothing matches.
    pub(crate) fn negotiate(self: &Arc<Self>, accept_language: Option<&str>) -> Tr {
        let idx = accept_language.map(|h| self.pick(h)).unwrap_or_default();
        Tr {
            i18n: self.clone(),
            idx,
        }
    }

    fn pick(&self, header: &str) -> usize {
        let mut wanted: Vec<(u16, usize, String)> = header
            .split(',')
            .enumerate()
            .filter_map(|(pos, item)| {
                let mut parts = item.split(';');
                let tag = parts.next()?.trim().replace('_', "-").to_ascii_lowercase();
                let q = parts
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .find_map(quality)
                    .unwrap_or(1000);
                (!tag.is_empty() && q > 0).then_some((q, pos, tag))
            })
            .collect();
        wanted.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, _, tag) in &wanted {
            if tag == "*" {
                return 0;
            }
            // Lookup: the full tag, then with subtags cut off from the end ("de-ch" → "de").
            let mut range = tag.as_str();
            loop {
                if let Some(i) = self.position(|l| l.eq_ignore_ascii_case(range)) {
                    return i;
                }
                // An offered language more specific than the range ("zh" → "zh-hans-cn").
                if let Some(i) = self.position(|l| {
                    l.len() > range.len()
                        && l.to_ascii_lowercase().starts_with(&format!("{range}-"))
                }) {
                    return i;
                }
                match range.rfind('-') {
                    Some(cut) => range = &range[..cut],
                    None => break,
                }
            }
        }
        0
    }

    fn position(&self, f: impl Fn(&str) -> bool) -> Option<usize> {
        self.langs.iter().position(|l| f(&l.bcp47))
    }

    /// The languages in use, as configured (`zh_Hans_CN`).
    #[cfg(test)]
    pub(crate) fn tags(&self) -> impl Iterator<Item = &str> {
        self.langs.iter().map(|l| l.tag.as_str())
    }
}

/// `q=0.5` in thousandths; `None` when malformed.
fn quality(v: &str) -> Option<u16> {
    let q: f32 = v.trim().parse().ok()?;
    (0.0..=1.0)
        .contains(&q)
        .then(|| (q * 1000.0).round() as u16)
}

impl Tr {
    fn lang(&self) -> &Lang {
        // `idx` comes from `position` over the same list, which is never empty.
        &self.i18n.langs[self.idx.min(self.i18n.langs.len() - 1)]
    }

    /// The chosen language as configured (`zh_Hans_CN`); templates get it as `lang`.
    pub(crate) fn tag(&self) -> &str {
        &self.lang().tag
    }

    /// BCP 47 tag of the chosen language, for `<html lang>` and `Content-Language`.
    pub(crate) fn bcp47(&self) -> &str {
        &self.lang().bcp47
    }

    /// The translation of `msgid`.
    pub(crate) fn gettext<'a>(&'a self, msgid: &'a str) -> &'a str {
        match &self.lang().catalog {
            Some(c) => c.gettext(msgid),
            None => msgid,
        }
    }

    /// The translation of `msgid` with its `%(name)s` placeholders filled in.
    pub(crate) fn gettext_with(&self, msgid: &str, args: &[(&str, &str)]) -> String {
        fill(self.gettext(msgid), |name| {
            args.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    /// The plural form for `n` of the message, with `%(num)s` replaced by `n`.
    pub(crate) fn ngettext(&self, singular: &str, plural: &str, n: u64) -> String {
        fill(self.plural_form(singular, plural, n), |name| {
            (name == "num").then(|| n.to_string())
        })
    }

    /// The plural form for `n` of the message, placeholders left as they are.
    fn plural_form<'a>(&'a self, singular: &'a str, plural: &'a str, n: u64) -> &'a str {
        match &self.lang().catalog {
            Some(c) => c.ngettext(singular, plural, n),
            None if n == 1 => singular,
            None => plural,
        }
    }
}

/// `text` with each `%(name)s` replaced by `value(name)` (left as it is when `None`) and `%%` by `%`.
fn fill(text: &str, mut value: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('%') {
            out.push('%');
            rest = r;
        } else if let Some((name, r)) = after
            .strip_prefix('(')
            .and_then(|a| a.split_once(")s"))
            .filter(|(name, _)| is_name(name))
        {
            match value(name) {
                Some(v) => out.push_str(&v),
                None => {
                    out.push_str("%(");
                    out.push_str(name);
                    out.push_str(")s");
                }
            }
            rest = r;
        } else {
            out.push('%');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The placeholder names of `text`.
fn placeholders(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    fill(text, |name| {
        names.push(name.to_string());
        None
    });
    names
}

/// Marks English text that is translated where it is shown (by the `t` filter or
/// [`Tr::gettext`]), so the catalogue extraction finds it.
pub(crate) const fn n_(text: &'static str) -> &'static str {
    text
}

/// Adds `_`, `ngettext` and the `t` filter to `env`; templates must set `lang` (the configured
/// tag). `t` translates plain text made in Rust (marked with [`n_`]) and leaves it to be escaped.
pub(crate) fn install(env: &mut Environment<'static>, i18n: &Arc<I18n>) {
    let i = i18n.clone();
    env.add_filter("t", move |state: &State, text: String| -> String {
        for_state(&i, state).gettext(&text).to_string()
    });
    let i = i18n.clone();
    env.add_function(
        "_",
        move |state: &State, msgid: String, kwargs: Kwargs| -> Result<Value, Error> {
            let tr = for_state(&i, state);
            render(tr.gettext(&msgid), &msgid, &kwargs, None)
        },
    );
    let i = i18n.clone();
    env.add_function(
        "ngettext",
        move |state: &State,
              singular: String,
              plural: String,
              n: i64,
              kwargs: Kwargs|
              -> Result<Value, Error> {
            let tr = for_state(&i, state);
            let n = u64::try_from(n).unwrap_or(0);
            render(
                tr.plural_form(&singular, &plural, n),
                &plural,
                &kwargs,
                Some(n),
            )
        },
    );
}

fn for_state(i18n: &Arc<I18n>, state: &State) -> Tr {
    let lang = state.lookup("lang");
    let idx = lang
        .as_ref()
        .and_then(Value::as_str)
        .and_then(|l| i18n.langs.iter().position(|x| x.tag == l))
        .unwrap_or(0);
    Tr {
        i18n: i18n.clone(),
        idx,
    }
}

/// `text` as safe HTML with the placeholders of `msgid` filled from `kwargs` (escaped unless safe).
fn render(text: &str, msgid: &str, kwargs: &Kwargs, num: Option<u64>) -> Result<Value, Error> {
    let mut values: HashMap<String, String> = HashMap::new();
    for name in placeholders(msgid) {
        if values.contains_key(&name) {
            continue;
        }
        let v = match (name.as_str(), num) {
            ("num", Some(n)) if !kwargs.has("num") => n.to_string(),
            _ => {
                let v: Value = kwargs.get(&name).map_err(|_| {
                    Error::new(
                        ErrorKind::MissingArgument,
                        format!("message {msgid:?} needs a value for {name}"),
                    )
                })?;
                if v.is_safe() {
                    v.to_string()
                } else {
                    minijinja::HtmlEscape(&v.to_string()).to_string()
                }
            }
        };
        values.insert(name, v);
    }
    kwargs.assert_all_used()?;
    Ok(Value::from_safe_string(fill(text, |name| {
        values.get(name).cloned()
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PL: &str = r#"msgid ""
msgstr ""
"Content-Type: text/plain; charset=UTF-8\n"
"Plural-Forms: nplurals=3; plural=(n==1 ? 0 : n%10>=2 && n%10<=4 && (n%100<10 || n%100>=20) ? 1 : 2);\n"

msgid "Log in"
msgstr "Zaloguj się"

msgid "Hello %(name)s"
msgstr "Cześć <b>%(name)s</b>"

msgid "%(num)s day ago"
msgid_plural "%(num)s days ago"
msgstr[0] "%(num)s dzień temu"
msgstr[1] "%(num)s dni temu"
msgstr[2] "%(num)s dni temu (2)"
"#;

    fn langs(list: &str, mo: &str) -> Arc<I18n> {
        let configured: Vec<String> = list.split(' ').map(str::to_string).collect();
        I18n::with_catalogues(&configured, &[("pl", mo), ("zh_Hans_CN", mo), ("de", mo)])
    }

    #[test]
    fn negotiation_follows_quality_and_falls_back() {
        let mo = PL;
        let i = langs("en pl zh_Hans_CN de fr", mo);
        // fr has no catalogue and is dropped.
        assert_eq!(
            i.tags().collect::<Vec<_>>(),
            ["en", "pl", "zh_Hans_CN", "de"]
        );
        let pick = |h: &str| i.negotiate(Some(h)).bcp47().to_string();
        assert_eq!(pick("pl"), "pl");
        assert_eq!(pick("pl-PL,en;q=0.5"), "pl");
        assert_eq!(pick("fr, de;q=0.8, pl;q=0.9"), "pl");
        assert_eq!(pick("de-CH;q=0.2, fr;q=0.9"), "de");
        assert_eq!(pick("zh-CN"), "zh-Hans-CN");
        assert_eq!(pick("zh"), "zh-Hans-CN");
        assert_eq!(pick("pl;q=0, sv"), "en");
        assert_eq!(pick("fr"), "en");
        assert_eq!(pick("*"), "en");
        assert_eq!(pick("pl;q=bogus"), "pl");
        assert_eq!(pick(",,;;q=,"), "en");
        assert_eq!(i.negotiate(None).bcp47(), "en");
        // The first configured language is the fallback.
        let i = langs("de en", mo);
        assert_eq!(i.negotiate(Some("fr")).bcp47(), "de");
        // Nothing usable configured: English.
        let i = langs("fr", mo);
        assert_eq!(i.negotiate(Some("fr")).bcp47(), "en");
    }

    #[test]
    fn messages_and_plural_forms() {
        let mo = PL;
        let i = langs("en pl", mo);
        let pl = i.negotiate(Some("pl"));
        assert_eq!(pl.gettext("Log in"), "Zaloguj się");
        assert_eq!(pl.gettext("Not translated"), "Not translated");
        assert_eq!(
            pl.gettext_with("Hello %(name)s", &[("name", "Ala")]),
            "Cześć <b>Ala</b>"
        );
        let ago = |tr: &Tr, n| tr.ngettext("%(num)s day ago", "%(num)s days ago", n);
        assert_eq!(ago(&pl, 1), "1 dzień temu");
        assert_eq!(ago(&pl, 3), "3 dni temu");
        assert_eq!(ago(&pl, 5), "5 dni temu (2)");
        assert_eq!(ago(&pl, 22), "22 dni temu");
        let en = i.negotiate(Some("en"));
        assert_eq!(ago(&en, 1), "1 day ago");
        assert_eq!(ago(&en, 2), "2 days ago");
    }

    #[test]
    fn placeholders_are_filled_and_escaped_in_templates() {
        let mo = PL;
        let i = langs("en pl", mo);
        let mut env = Environment::new();
        install(&mut env, &i);
        let page = r#"{{ _("Hello %(name)s", name=who) }}|{{ _("Hello %(name)s", name=who|safe) }}|{{ ngettext("%(num)s day ago", "%(num)s days ago", 2) }}"#;
        if let Err(e) = env.add_template("t.html", page) {
            panic!("template: {e}");
        }
        let render = |lang: &str| {
            env.get_template("t.html")
                .and_then(|t| t.render(minijinja::context! { lang => lang, who => "<i>x</i>" }))
                .unwrap_or_else(|e| panic!("render: {e}"))
        };
        assert_eq!(
            render("pl"),
            "Cześć <b>&lt;i&gt;x&lt;&#x2f;i&gt;</b>|Cześć <b><i>x</i></b>|2 dni temu"
        );
        assert_eq!(
            render("en"),
            "Hello &lt;i&gt;x&lt;&#x2f;i&gt;|Hello <i>x</i>|2 days ago"
        );
        // A missing or unknown keyword is a template error, not a silent blank.
        for bad in [r#"{{ _("Hello %(name)s") }}"#, r#"{{ _("Hi", name=1) }}"#] {
            if let Err(e) = env.add_template("bad.html", bad) {
                panic!("template: {e}");
            }
            let r = env
                .get_template("bad.html")
                .and_then(|t| t.render(minijinja::context! { lang => "en" }));
            assert!(r.is_err(), "{bad} rendered");
        }
    }

    /// The HTML tags of `text`, sorted.
    fn tags(text: &str) -> Vec<&str> {
        let mut out: Vec<&str> = text
            .match_indices('<')
            .filter_map(|(i, _)| text[i..].find('>').map(|j| &text[i..=i + j]))
            .collect();
        out.sort_unstable();
        out
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v.dedup();
        v
    }

    #[test]
    fn shipped_catalogues_are_well_formed() {
        for (lang, po) in CATALOGUES {
            let c = Catalog::parse(po).unwrap_or_else(|e| panic!("{lang}: {e}"));
            assert!(c.nplurals >= 1, "{lang}: nplurals");
            assert!(!c.singular.is_empty(), "{lang}: no translations");
            for (id, text) in &c.singular {
                assert_eq!(
                    sorted(placeholders(text)),
                    sorted(placeholders(id)),
                    "{lang}: placeholders of {id:?}"
                );
                assert_eq!(tags(text), tags(id), "{lang}: markup of {id:?}");
            }
            for (id, forms) in &c.plural {
                assert_eq!(forms.len(), c.nplurals, "{lang}: plural forms of {id:?}");
                for f in forms {
                    assert!(
                        placeholders(f).iter().all(|p| p == "num"),
                        "{lang}: placeholders of {id:?}"
                    );
                }
            }
            // The language is offered when configured, and picked for its own tag.
            let i = I18n::new(&["en".to_string(), (*lang).to_string()]);
            assert_eq!(i.negotiate(Some(&lang.replace('_', "-"))).tag(), *lang);
        }
    }

    #[test]
    fn fill_leaves_unknown_and_malformed_placeholders() {
        assert_eq!(
            fill("100%% sure, %(x)s, %(y)s, %(bad name)s, 5%", |n| (n == "x")
                .then(|| "X".into())),
            "100% sure, X, %(y)s, %(bad name)s, 5%"
        );
    }
}
