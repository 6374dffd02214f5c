//! ARCHITECTURE.md and README's Layout name files and folders of the
//! repository: every one of them must exist, so the maps stay true as the
//! code moves.

use std::path::Path;

/// The repository-relative paths a Markdown text names: every token in
/// backticks or in a code block that starts with one of the top-level
/// folders or files of the repository.
fn named_paths(text: &str) -> Vec<String> {
    const ROOTS: [&str; 10] = [
        "src/",
        "kernels/",
        "crates/",
        "tests/",
        "benches/",
        "examples/",
        "scripts/",
        "fuzz/",
        "build.rs",
        ".ci/",
    ];
    let mut paths: Vec<String> = text
        .split(|c: char| c.is_whitespace() || matches!(c, '`' | '(' | ')' | ',' | ';' | '|'))
        .map(|t| t.trim_end_matches(['.', ':']))
        .filter(|t| ROOTS.iter().any(|r| t.starts_with(r)))
        .filter(|t| !t.contains('*') && !t.contains("..."))
        .map(str::to_string)
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

fn check(file: &str, section: Option<&str>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join(file)).expect("the map is readable");
    let text = match section {
        Some(heading) => {
            let start = text
                .find(heading)
                .unwrap_or_else(|| panic!("{file} has no section `{heading}`"));
            let rest = &text[start + heading.len()..];
            &rest[..rest.find("\n## ").unwrap_or(rest.len())]
        }
        None => &text[..],
    };
    let paths = named_paths(text);
    assert!(
        paths.len() >= 10,
        "{file}: only {} paths found: {paths:?}",
        paths.len()
    );
    let missing: Vec<_> = paths.iter().filter(|p| !root.join(p).exists()).collect();
    assert!(
        missing.is_empty(),
        "{file} names paths that do not exist: {missing:?}"
    );
}

#[test]
fn every_path_architecture_md_names_exists() {
    check("ARCHITECTURE.md", None);
}

#[test]
fn every_path_readme_layout_names_exists() {
    check("README.md", Some("## Layout"));
}

#[test]
fn the_path_finder_finds_and_a_missing_path_is_reported() {
    let found = named_paths("see `src/tape.rs`, (kernels/matmul.cu) and src/nope.rs.");
    assert_eq!(found, ["kernels/matmul.cu", "src/nope.rs", "src/tape.rs"]);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(!root.join("src/nope.rs").exists());
}
