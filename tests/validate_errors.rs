//! Every invalid fixture fails validation with the problem it was written for, and its
//! rendered diagnostic (file:line:col, label, help) is pinned by an insta snapshot.

use std::path::{Path, PathBuf};

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme};
use topo::lab::source::SourceFile;
use topo::lab::validate::{self, ValidateError};

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new("tests/fixtures").join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixture folder")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn render(err: &ValidateError) -> String {
    let mut out = String::new();
    GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .render_report(&mut out, err)
        .expect("render");
    out
}

/// `# expect: code code ...` on the first line of each invalid fixture.
fn expected_codes(text: &str) -> Vec<String> {
    let first = text.lines().next().unwrap_or_default();
    let codes = first.strip_prefix("# expect:").expect("invalid fixtures start with `# expect: <codes>`");
    codes.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn invalid_fixtures_report_their_problem() {
    let files = fixtures("invalid");
    assert!(files.len() >= 30, "expected one fixture per rule, found {}", files.len());
    for path in files {
        let source = SourceFile::read(&path).expect("readable fixture");
        let stem = path.file_stem().and_then(|s| s.to_str()).expect("utf-8 name").to_owned();
        let err = match validate::load(&source) {
            Ok(lab) => panic!("{stem}: expected problems, got {}", lab.summary()),
            Err(e) => e,
        };
        let codes = err.codes();
        for want in expected_codes(&source.text) {
            assert!(codes.contains(&want.as_str()), "{stem}: expected {want}, got {codes:?}");
        }
        for p in &err.problems {
            assert!(p.help.is_some(), "{stem}: problem without help: {p}");
            let labels: Vec<_> = p.labels().expect("every problem has a label").collect();
            assert!(!labels.is_empty(), "{stem}: problem without label: {p}");
            for l in labels {
                assert!(l.offset() + l.len() <= source.text.len(), "{stem}: label outside the file");
            }
        }
        let rendered = render(&err);
        assert!(rendered.contains(&format!("[{}:", path.display())), "{stem}: no file:line:col");
        insta::assert_snapshot!(stem, rendered);
    }
}
