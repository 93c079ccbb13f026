//! Embeds the gettext catalogues in `translations/*.po` into the binary.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=translations");
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("translations");
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("po") {
            continue;
        }
        if let Some(lang) = path.file_stem().and_then(|s| s.to_str()) {
            entries.push((lang.to_string(), path.clone()));
        }
    }
    entries.sort();
    let mut code = String::from("/// The catalogues: language tag and PO text.\n");
    code.push_str("pub(crate) static CATALOGUES: &[(&str, &str)] = &[\n");
    for (lang, path) in &entries {
        writeln!(
            code,
            "    ({lang:?}, include_str!({:?})),",
            path.display().to_string()
        )?;
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("catalogues.rs"), code)?;
    Ok(())
}
