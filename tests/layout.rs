//! The module graph of `src/` has no import cycles (hack/import-cycles.py finds them).

#[test]
fn the_module_graph_has_no_import_cycles() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new("python3")
        .arg(format!("{root}/hack/import-cycles.py"))
        .arg(format!("{root}/src"))
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "import cycles in src/:\n{text}");
    assert!(text.contains("0 cycles"), "{text}");
}
