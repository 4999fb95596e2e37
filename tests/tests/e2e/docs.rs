//! docs/ARCHITECTURE.md's code map stays true: every workspace crate has its section, and every
//! module of each crate is named in that section by its path under `src/` (`session/hello.rs`;
//! a folder module by its folder, `jobs/`). Adding a module without describing it fails here.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The `members = [...]` of the workspace manifest.
fn members(root: &Path) -> Result<Vec<String>> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml"))?;
    let start = manifest.find("members = [").context("workspace members")?;
    let list = &manifest[start + "members = [".len()..];
    let end = list.find(']').context("end of members")?;
    Ok(list[..end]
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_owned())
        .filter(|m| !m.is_empty())
        .collect())
}

/// Module paths under `src/`: `a.rs`, `dir/b.rs`, and `dir/` for a folder module.
fn modules(src: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(src)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if path.is_dir() {
            if name == "bin" {
                continue;
            }
            out.push(format!("{prefix}{name}/"));
            modules(&path, &format!("{prefix}{name}/"), out)?;
        } else if let Some(stem) = name.strip_suffix(".rs")
            && !matches!(stem, "lib" | "main" | "mod")
        {
            out.push(format!("{prefix}{name}"));
        }
    }
    Ok(())
}

/// The text of the `### \`<crate>/\`` section, up to the next `### ` or `## ` heading.
fn section<'a>(doc: &'a str, krate: &str) -> Option<&'a str> {
    let heading = format!("### `{krate}/`");
    let start = doc.find(&heading)? + heading.len();
    let rest = &doc[start..];
    let end = rest
        .match_indices("\n## ")
        .chain(rest.match_indices("\n### "))
        .map(|(i, _)| i)
        .min()
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

#[test]
fn the_code_map_names_every_crate_and_module() -> Result<()> {
    let root = workspace_root();
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md"))?;
    let mut missing = Vec::new();
    for krate in members(&root)? {
        let Some(text) = section(&doc, &krate) else {
            missing.push(format!("section ### `{krate}/`"));
            continue;
        };
        let mut found = Vec::new();
        modules(&root.join(&krate).join("src"), "", &mut found)?;
        for module in found {
            if !text.contains(&module) {
                missing.push(format!("{krate}: {module}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md does not describe:\n  {}",
        missing.join("\n  ")
    );
    Ok(())
}
