//! The human plan, Terraform style: `+` create, `~` update, `-/+` replace, `-` delete.

use std::fmt::Write as _;

use super::{Action, Change, Plan};

/// Terminal colours, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Plain,
    Color,
}

impl Style {
    fn paint(self, code: &str, s: &str) -> String {
        match self {
            Style::Plain => s.to_string(),
            Style::Color => format!("\x1b[{code}m{s}\x1b[0m"),
        }
    }
}

fn symbol(a: Action) -> (&'static str, &'static str) {
    match a {
        Action::Create => ("  +", "32"),
        Action::Update => ("  ~", "33"),
        Action::Replace => ("-/+", "35"),
        Action::Delete => ("  -", "31"),
        Action::NoOp => ("   ", "0"),
    }
}

fn headline(c: &Change) -> String {
    let what = match c.action {
        Action::Create => "will be created",
        Action::Update => "will be updated in place",
        Action::Replace => "must be replaced",
        Action::Delete => "will be destroyed",
        Action::NoOp => "is up to date",
    };
    format!("# {} ({}) {what}", c.address, c.libvirt_name)
}

fn quote(v: &Option<String>) -> String {
    match v {
        Some(s) => format!("{s:?}"),
        None => "(none)".into(),
    }
}

/// Renders the plan. `file` names the lab file in the no-change line.
pub fn render(plan: &Plan, file: &str, style: Style) -> String {
    let mut out = String::new();
    let changes: Vec<&Change> = plan.changes.iter().filter(|c| c.action != Action::NoOp).collect();
    if changes.is_empty() {
        let _ = writeln!(out, "No changes. Lab {} matches {file}.", plan.lab);
        return out;
    }
    let _ = writeln!(out, "topo will perform these actions on lab {}:\n", plan.lab);
    for c in changes {
        let (sym, color) = symbol(c.action);
        let _ = writeln!(out, "  {}", style.paint("1", &headline(c)));
        for r in &c.reasons {
            let _ = writeln!(out, "  #   because {}", r.describe());
        }
        let (kind, name) = (c.address.kind(), c.address.name());
        let _ = writeln!(out, "{} {kind} {name:?} {{", style.paint(color, sym));
        let width = c.fields.iter().map(|f| f.path.len()).max().unwrap_or(0);
        for f in &c.fields {
            let (mark, value) = match (&f.before, &f.after) {
                (None, Some(_)) => ("+", quote(&f.after)),
                (Some(_), None) => ("-", quote(&f.before)),
                _ => ("~", format!("{} -> {}", quote(&f.before), quote(&f.after))),
            };
            let mark_color = match mark {
                "+" => "32",
                "-" => "31",
                _ => "33",
            };
            let note = if f.forces_replacement {
                style.paint("31", " # forces replacement")
            } else if f.restarts {
                style.paint("33", " # restarts the VM")
            } else {
                String::new()
            };
            let _ = writeln!(out, "      {} {:<width$} = {value}{note}", style.paint(mark_color, mark), f.path);
        }
        let _ = writeln!(out, "    }}");
        if !c.blast_radius.is_empty() {
            let header = match c.action {
                Action::Replace => "blast radius: restarting the network detaches these running NICs:",
                _ => "these running NICs lost their link when the network stopped:",
            };
            let _ = writeln!(out, "    # {header}");
            for d in &c.blast_radius {
                let then = if d.reattached {
                    "re-attached by topo"
                } else {
                    "NOT re-attached: the domain is not owned by this lab"
                };
                let _ = writeln!(out, "    #   {} {} ({then})", d.domain, d.mac);
            }
        }
        out.push('\n');
    }
    let s = plan.summary();
    let _ = writeln!(
        out,
        "{} {} to add, {} to change, {} to replace, {} to destroy.",
        style.paint("1", "Plan:"),
        s.create,
        s.update,
        s.replace,
        s.delete
    );
    out
}
