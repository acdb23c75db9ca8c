//! The binary's shell integration: `topo completions SHELL` loads in a real shell, and
//! `topo man` gives one page per subcommand.

use assert_cmd::Command;

fn topo() -> Command {
    let mut c = Command::cargo_bin("topo").expect("the topo binary");
    c.env_remove("LIBVIRT_DEFAULT_URI").env_remove("NO_COLOR").env("COLUMNS", "100");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The subcommands `topo --help` lists.
fn subcommands() -> Vec<String> {
    let out = topo().arg("--help").output().unwrap();
    let help = text(&out.stdout);
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|s| s != "help")
        .collect()
}

#[test]
fn help_of_the_shell_commands() {
    for sub in ["completions", "man"] {
        let out = topo().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub} --help");
        insta::assert_snapshot!(format!("help_{sub}"), text(&out.stdout));
    }
}

/// The README's recipe: `source <(topo completions bash)` registers a completion for `topo`,
/// and completing `topo pl` offers `plan`.
#[test]
fn bash_completion_loads_in_bash() {
    let bin = assert_cmd::cargo::cargo_bin("topo");
    let script = format!(
        "source <('{bin}' completions bash) && complete -p topo && \
         COMP_WORDS=(topo pl) COMP_CWORD=1 COMP_LINE='topo pl' COMP_POINT=7 && _topo topo pl topo && \
         echo \"candidates: ${{COMPREPLY[*]}}\"",
        bin = bin.display()
    );
    let out = std::process::Command::new("bash").args(["-c", &script]).output().expect("bash runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("complete -o bashdefault -o default -o nosort -F _topo topo"), "{stdout}");
    assert!(stdout.contains("candidates: plan"), "{stdout}");
}

#[test]
fn zsh_and_fish_scripts_name_every_subcommand() {
    let subs = subcommands();
    assert!(subs.len() >= 10, "{subs:?}");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = topo().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = text(&out.stdout);
        for s in &subs {
            assert!(script.contains(s.as_str()), "{shell} lacks {s}");
        }
    }
    let out = topo().args(["completions", "tcsh"]).output().unwrap();
    assert!(!out.status.success(), "an unknown shell is a usage error");
    assert!(text(&out.stderr).contains("tcsh"), "{}", text(&out.stderr));
}

#[test]
fn man_writes_a_page_per_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = topo().args(["man", "--out-dir"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut want = vec!["topo.1".to_owned()];
    want.extend(subcommands().iter().map(|s| format!("topo-{s}.1")));
    want.sort();
    let mut got: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(text(&out.stdout).lines().count(), want.len());
    let page = std::fs::read_to_string(dir.path().join("topo-plan.1")).unwrap();
    assert!(page.starts_with(".ie") && page.contains(".TH topo-plan 1"), "{page}");
    assert!(page.contains("LIBVIRT_DEFAULT_URI"), "the env var of --connect is documented: {page}");
}

#[test]
fn man_prints_one_page_or_names_the_choices() {
    let out = topo().args(["man", "apply"]).output().unwrap();
    assert!(out.status.success());
    assert!(text(&out.stdout).contains(".SH NAME\ntopo\\-apply"), "{}", text(&out.stdout));
    let out = topo().args(["--color", "never", "man", "aply"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no subcommand `aply`"), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("apply"), "{}", text(&out.stderr));
}
