//! The crate's shape, checked: stages import only downward (no loops),
//! `main.rs` stays a thin CLI, and no file or function grows past what a
//! reader can hold. Reads the sources as text; no server needed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The stages: each may import neutral modules, never the stages named
/// here. `pipeline` wires them all and nothing but the binary imports it.
const FORBIDDEN: &[(&str, &[&str])] = &[
    ("encode", &["source", "sink", "checkpoint", "pipeline"]),
    ("source", &["encode", "sink", "checkpoint", "pipeline"]),
    ("sink", &["source", "checkpoint", "pipeline"]),
    ("checkpoint", &["source", "sink", "encode", "pipeline"]),
];
const STAGES: &[&str] = &["encode", "source", "sink", "checkpoint", "pipeline"];

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 80;
const MAX_MAIN_LINES: usize = 199;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module a file of `src/` belongs to (`sink` for
/// `src/sink/mongo/writer.rs`, `retry` for `src/retry.rs`).
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(src()).expect("under src/");
    let first = rel.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

/// Every `crate::x` a file names, with the line.
fn crate_references(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push((i + 1, name));
        }
        // `use crate::{a, b}` groups.
        if let Some(at) = code.find("crate::{") {
            let group = &code[at + "crate::{".len()..];
            for name in group.split([',', '}']) {
                let name = name.trim().split("::").next().unwrap_or("").to_string();
                if !name.is_empty() {
                    out.push((i + 1, name));
                }
            }
        }
    }
    out
}

/// Functions longer than the limit: `fn` at some indentation to the `}`
/// at the same indentation.
fn long_functions(text: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let sig = trimmed
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub(super) ")
            .trim_start_matches("pub ")
            .trim_start_matches("async ")
            .trim_start_matches("const ");
        let Some(name) = sig.strip_prefix("fn ") else {
            continue;
        };
        if line.trim_end().ends_with(';') {
            continue;
        }
        let close = format!("{indent}}}");
        let end = lines[i..]
            .iter()
            .position(|l| *l == close)
            .map_or(1, |n| n + 1);
        if end > MAX_FN_LINES {
            let name: String = name
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push((i + 1, name, end));
        }
    }
    out
}

#[test]
fn stages_import_only_downward() {
    let forbidden: BTreeMap<&str, &[&str]> = FORBIDDEN.iter().copied().collect();
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let mut loops = Vec::new();
    for file in &files {
        let module = module_of(file);
        if module == "lib" || module == "main" || module == "pipeline" {
            continue;
        }
        // A neutral module may import no stage at all.
        let banned: Vec<&str> = match forbidden.get(module.as_str()) {
            Some(list) => list.to_vec(),
            None if STAGES.contains(&module.as_str()) => vec![],
            None => STAGES.to_vec(),
        };
        let text = std::fs::read_to_string(file).expect("readable");
        for (line, name) in crate_references(&text) {
            if banned.contains(&name.as_str()) {
                loops.push(format!(
                    "{}:{line}: {module} uses crate::{name}",
                    file.display()
                ));
            }
        }
    }
    assert!(
        loops.is_empty(),
        "imports against the layout:\n{}",
        loops.join("\n")
    );
}

#[test]
fn the_checker_sees_a_loop() {
    // The same scan on a file that breaks the rules must find it.
    let text = "use crate::source::SourceBatch;\nuse crate::{error::Result, sink};\n";
    let names: Vec<String> = crate_references(text).into_iter().map(|(_, n)| n).collect();
    assert!(names.contains(&"source".to_string()), "{names:?}");
    assert!(names.contains(&"sink".to_string()), "{names:?}");
    let long = format!("fn f() {{\n{}}}\n", "    let x = 1;\n".repeat(MAX_FN_LINES));
    assert_eq!(long_functions(&long).len(), 1);
}

#[test]
fn files_and_functions_stay_small() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let mut over = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable");
        let lines = text.lines().count();
        let limit = match module_of(file).as_str() {
            "main" => MAX_MAIN_LINES,
            _ => MAX_FILE_LINES,
        };
        if lines > limit {
            over.push(format!(
                "{}: {lines} lines (at most {limit})",
                file.display()
            ));
        }
        for (line, name, n) in long_functions(&text) {
            over.push(format!(
                "{}:{line}: fn {name} has {n} lines (at most {MAX_FN_LINES})",
                file.display()
            ));
        }
    }
    assert!(over.is_empty(), "too large:\n{}", over.join("\n"));
}

/// The files of `tests/` (`tests/x.rs`) that no test target runs: with
/// `autotests = false`, a file is run only as a `[[test]]` of Cargo.toml or
/// as a `mod` of tests/integration.rs, and a new file that is neither
/// would silently never run.
fn unrun_test_files(files: &[String], cargo_toml: &str, integration: &str) -> Vec<String> {
    files
        .iter()
        .filter(|name| {
            let target = format!("path = \"tests/{name}.rs\"");
            let module = format!("mod {name};");
            !cargo_toml.contains(&target) && !integration.lines().any(|l| l.trim() == module)
        })
        .cloned()
        .collect()
}

#[test]
fn every_test_file_is_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).expect("readable");
    let files: Vec<String> = std::fs::read_dir(root.join("tests"))
        .expect("tests/ is readable")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(files.len() > 20, "{files:?}");
    let (cargo, integration) = (read("Cargo.toml"), read("tests/integration.rs"));
    let unrun = unrun_test_files(&files, &cargo, &integration);
    assert!(
        unrun.is_empty(),
        "tests/ files no target runs (add `mod NAME;` to tests/integration.rs): {unrun:?}"
    );
    // And the check sees a file that is neither.
    let stray = vec!["stray".to_string(), "resume".to_string()];
    assert_eq!(unrun_test_files(&stray, &cargo, &integration), ["stray"]);
}
