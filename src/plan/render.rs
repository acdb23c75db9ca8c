//! The human plan, Terraform style: `+` create, `~` update, `-/+` replace, `-` delete.

use std::fmt::Write as _;

use super::fields::Field;
use super::{Action, Change, NicTap, Plan, Reason};
use crate::lab::model::nic_label;

/// Terminal colours, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Plain,
    Color,
}

/// The plan's palette (ANSI SGR through `anstyle`): what is added green, removed red,
/// updated yellow, replaced magenta; headlines bold.
const ADDED: anstyle::Style = anstyle::AnsiColor::Green.on_default();
const REMOVED: anstyle::Style = anstyle::AnsiColor::Red.on_default();
const UPDATED: anstyle::Style = anstyle::AnsiColor::Yellow.on_default();
const REPLACED: anstyle::Style = anstyle::AnsiColor::Magenta.on_default();
const BOLD: anstyle::Style = anstyle::Style::new().bold();

impl Style {
    /// `s` in `paint` (its escape, the text, the reset), or as it is when plain.
    fn paint(self, paint: anstyle::Style, s: &str) -> String {
        match self {
            Style::Plain => s.to_string(),
            Style::Color => format!("{paint}{s}{paint:#}"),
        }
    }
}

fn symbol(a: Action) -> (&'static str, anstyle::Style) {
    match a {
        Action::Create => ("  +", ADDED),
        Action::Update => ("  ~", UPDATED),
        Action::Replace => ("-/+", REPLACED),
        Action::Delete => ("  -", REMOVED),
        Action::NoOp => ("   ", anstyle::Style::new()),
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

/// Fields whose value is a list of kernel parameters: an update is shown as a diff of the
/// parameters, one per line, rather than two long strings.
const PARAMETER_LISTS: &[Field] = &[Field::BootCmdline];

/// Unchanged lines shown around each changed one in a long text's diff; the rest are
/// counted in a `# (N unchanged lines hidden)` line, as Terraform does.
const CONTEXT_LINES: usize = 3;

/// The value of `f` as lines to show as a diff: `(before, after)` texts with one item per
/// line, or `None` for a value shown on one line. Multi-line values (user-data, a kernel
/// command line written as a YAML block) are split at newlines; an update of a parameter
/// list ([`PARAMETER_LISTS`]) at whitespace. A value that does not exist on one side is the
/// empty text, so a creation shows every line as added.
fn text_lines(f: &super::FieldChange) -> Option<(String, String)> {
    let multi = |v: &Option<String>| v.as_deref().is_some_and(|s| s.contains('\n'));
    if multi(&f.before) || multi(&f.after) {
        let text =
            |v: &Option<String>| v.as_deref().map(|s| s.trim_end_matches('\n').to_owned() + "\n").unwrap_or_default();
        return differ((text(&f.before), text(&f.after)));
    }
    match (&f.before, &f.after) {
        (Some(b), Some(a)) if PARAMETER_LISTS.contains(&f.path) => {
            let words = |s: &str| s.split_whitespace().map(|w| format!("{w}\n")).collect::<String>();
            differ((words(b), words(a)))
        }
        _ => None,
    }
}

/// The pair when its texts differ: values that differ only where the split ignores
/// (spacing between parameters, a final newline) are shown on one line, where the
/// difference is visible.
fn differ(pair: (String, String)) -> Option<(String, String)> {
    (pair.0 != pair.1).then_some(pair)
}

/// Writes the line diff of `before` -> `after` (both newline-terminated lines) with `-`,
/// `+` and unchanged lines, hiding unchanged runs farther than [`CONTEXT_LINES`] from a change.
fn render_lines(out: &mut String, (before, after): &(String, String), style: Style) {
    let diff = similar::TextDiff::from_lines(before.as_str(), after.as_str());
    // Old lines shown or counted as hidden so far.
    let mut done = 0;
    for group in diff.grouped_ops(CONTEXT_LINES) {
        let hidden = hidden_before(&group, done);
        if hidden > 0 {
            let _ = writeln!(out, "            # ({hidden} unchanged line{} hidden)", plural(hidden));
        }
        for op in &group {
            for change in diff.iter_changes(op) {
                let line = change.value().trim_end_matches('\n');
                let _ = match change.tag() {
                    similar::ChangeTag::Delete => writeln!(out, "          {} {line}", style.paint(REMOVED, "-")),
                    similar::ChangeTag::Insert => writeln!(out, "          {} {line}", style.paint(ADDED, "+")),
                    similar::ChangeTag::Equal => writeln!(out, "            {line}"),
                };
            }
        }
        done = group.last().map_or(done, |op| op.old_range().end);
    }
    let rest = before.lines().count().saturating_sub(done);
    if rest > 0 {
        let _ = writeln!(out, "            # ({rest} unchanged line{} hidden)", plural(rest));
    }
}

/// Unchanged old lines between the end of the previous group (`shown_until`) and `group`.
fn hidden_before(group: &[similar::DiffOp], shown_until: usize) -> usize {
    group.first().map(|op| op.old_range().start.saturating_sub(shown_until)).unwrap_or(0)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// One line for the human plan: why the change is planned (after `because`).
pub fn reason(r: &Reason) -> String {
    match r {
        Reason::NotOnHost => "it is in the lab file but not on the host".into(),
        Reason::NotInLabFile => "it is owned by this lab but no longer in the lab file".into(),
        Reason::LabFileChanged => "the lab file changed".into(),
        Reason::Drift => "changed outside topo since the last apply (drift)".into(),
        Reason::RequiresReplace { fields } => format!("{} cannot change in place", join(fields)),
        Reason::NotActive => "the network is defined but not active".into(),
        Reason::NotRunning => "the VM is defined but not running".into(),
        Reason::RequiresRestart { fields } => {
            let verb = if fields.len() == 1 { "takes" } else { "take" };
            format!("{} {verb} effect after a restart; the VM will be restarted", join(fields))
        }
        Reason::Replugged { fields } => format!(
            "{} cannot change on a running NIC; the NIC is unplugged and plugged in again (the guest sees its link \
             go and come back), no restart",
            join(fields)
        ),
        Reason::DestroyRequested => "topo destroy removes everything the lab owns".into(),
        Reason::StopRequested => "the lab file says `state: stopped`; the VM will be shut down".into(),
        Reason::Paused => "the VM is paused; it will be resumed".into(),
        Reason::Orphaned => "it is tagged as this lab's and no domain uses it (orphaned)".into(),
        Reason::InterruptedUpload => {
            "an interrupted seed upload left it (it may be truncated; seeds get their own name only when whole)".into()
        }
        Reason::PoolNeeded => {
            "a VM disk needs the overlay pool that all labs share, and it is missing or not active (topo never deletes it)"
                .into()
        }
        Reason::NetworkRenewed => "the network it is a port of gets a new bridge".into(),
        Reason::WireEndRenewed => "a VM it joins is started, or its NIC plugged: the taps are new".into(),
        Reason::Released => {
            "the lab file now declares it `external: true`: topo stops owning it and leaves it as it is".into()
        }
        Reason::Netem { nics } => {
            let verb = if nics.len() == 1 { "differs" } else { "differ" };
            format!(
                "the delay, jitter or loss on {} {verb} from the lab file; set in place on the tap (tc netem), no restart",
                listed(nics, netem_nic)
            )
        }
        Reason::UndefinedOutsideTopo => {
            "undefined outside topo (running, transient): its config is defined again, in place, so it is not lost when it stops"
                .into()
        }
        Reason::DeletedOutsideTopo { volumes } => {
            let verb = if volumes.len() == 1 { "was" } else { "were" };
            let what = if volumes.iter().all(|v| crate::guest::is_seed_volume(v.as_str())) {
                "the seed is uploaded again with the same content, in place (cloud-init does not run again)"
            } else {
                "the VM's disk is lost, so the VM is replaced"
            };
            let volumes: Vec<&str> = volumes.iter().map(|v| v.as_str()).collect();
            format!("{} {verb} deleted outside topo; {what}", volumes.join(", "))
        }
        Reason::Snapshots { names } => {
            let (n, them) = if names.len() == 1 { ("snapshot", "its") } else { ("snapshots", "their") };
            format!(
                "the VM has {n} {}: {them} metadata is removed first (libvirt will not undefine a VM with snapshots), and {them} data goes with the VM's disk",
                names.join(", ")
            )
        }
        Reason::Unplugged { nics } => {
            let (verb, whose) = if nics.len() == 1 { ("is", "its") } else { ("are", "their") };
            format!(
                "{} {verb} off {whose} network's bridge (the network was restarted under the running VM); plugged in again",
                listed(nics, unplugged_nic)
            )
        }
        Reason::Adopted => {
            "an older topo tagged it without the lab file; its tag now records this lab file and prefix, in place".into()
        }
        Reason::TakenOver { from } => {
            format!("--take-over: it was applied from {from}; its tag now names this lab file, in place")
        }
    }
}

/// An unplugged NIC as the plan names it, here and in its JSON: `eth0 (52:54:00:12:34:56,
/// tap vnet3)`.
pub(super) fn unplugged_nic(n: &NicTap) -> String {
    format!("{} ({}, tap {})", nic_label(n.index), n.mac, n.tap)
}

/// A NIC with other netem settings as the plan names it, here and in its JSON: `eth0 (tap
/// vnet3)`.
pub(super) fn netem_nic(n: &NicTap) -> String {
    format!("{} (tap {})", nic_label(n.index), n.tap)
}

/// `nics` named by `name`, comma-separated.
fn listed(nics: &[NicTap], name: fn(&NicTap) -> String) -> String {
    nics.iter().map(name).collect::<Vec<_>>().join(", ")
}

/// Fields' paths, comma-separated.
fn join(fields: &[Field]) -> String {
    fields.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(", ")
}

/// Renders the plan. `file` names the lab file in the no-change line.
pub fn render(plan: &Plan, file: &str, style: Style) -> String {
    let mut out = String::new();
    let all = plan.all_changes();
    let changes: Vec<(Option<&crate::lab::model::HostName>, &Change)> =
        all.into_iter().filter(|(_, c)| c.action != Action::NoOp).collect();
    let targets: Vec<String> = plan.targets.iter().map(ToString::to_string).collect();
    let partial = || {
        style.paint(
            UPDATED,
            &format!(
                "Partial plan (--target {}): the rest of lab {} is left as it is, whatever {file} says.",
                targets.join(", --target "),
                plan.lab
            ),
        )
    };
    if changes.is_empty() {
        if targets.is_empty() {
            let _ = writeln!(out, "No changes. Lab {} matches {file}.", plan.lab);
        } else {
            let _ = writeln!(out, "No changes for the targets.\n{}", partial());
        }
        return out;
    }
    if !targets.is_empty() {
        let _ = writeln!(out, "{}\n", partial());
    }
    if plan.hosts.is_empty() {
        let _ = writeln!(out, "topo will perform these actions on lab {}:\n", plan.lab);
    } else {
        let names: Vec<String> = plan.hosts.keys().map(ToString::to_string).collect();
        let _ =
            writeln!(out, "topo will perform these actions on lab {}, across hosts {}:\n", plan.lab, names.join(", "));
    }
    let mut shown_host = None;
    for (host, c) in changes {
        if let Some(h) = host
            && shown_host != Some(h)
        {
            let _ = writeln!(out, "{}\n", style.paint(BOLD, &format!("On host {h}:")));
            shown_host = Some(h);
        }
        let (sym, color) = symbol(c.action);
        let _ = writeln!(out, "  {}", style.paint(BOLD, &headline(c)));
        for r in &c.reasons {
            let _ = writeln!(out, "  #   because {}", reason(r));
        }
        let (kind, name) = (c.address.kind(), c.address.name());
        let _ = writeln!(out, "{} {kind} {name:?} {{", style.paint(color, sym));
        let width = c.fields.iter().map(|f| f.path.as_str().len()).max().unwrap_or(0);
        for f in &c.fields {
            let (mark, mark_color) = match (&f.before, &f.after) {
                (None, Some(_)) => ("+", ADDED),
                (Some(_), None) => ("-", REMOVED),
                _ => ("~", UPDATED),
            };
            let note = if f.forces_replacement {
                style.paint(REMOVED, " # forces replacement")
            } else if f.restarts {
                style.paint(UPDATED, " # restarts the VM")
            } else {
                String::new()
            };
            let mark = style.paint(mark_color, mark);
            if let Some(lines) = text_lines(f) {
                // Terraform's heredoc form: the value's lines, each marked as kept, removed or added.
                let _ = writeln!(out, "      {mark} {:<width$} = <<-EOT{note}", f.path);
                render_lines(&mut out, &lines, style);
                let _ = writeln!(out, "        EOT");
                continue;
            }
            let value = match (&f.before, &f.after) {
                (None, Some(_)) => quote(&f.after),
                (Some(_), None) => quote(&f.before),
                _ => format!("{} -> {}", quote(&f.before), quote(&f.after)),
            };
            let _ = writeln!(out, "      {mark} {:<width$} = {value}{note}", f.path);
        }
        let _ = writeln!(out, "    }}");
        if !c.blast_radius.is_empty() {
            let header = match c.action {
                Action::Replace => "blast radius: restarting the network detaches these running NICs:",
                Action::Delete => "blast radius: deleting the network leaves these NICs without a network:",
                _ => "these running NICs lost their link when the network stopped:",
            };
            let _ = writeln!(out, "    # {header}");
            for d in &c.blast_radius {
                let then = match (c.action, d.reattached, d.owned) {
                    (Action::Delete, _, true) => "this lab's VM",
                    (Action::Delete, _, false) => "NOT owned by this lab",
                    (_, true, _) => "re-attached by topo",
                    (_, false, true) => "NOT re-attached: this lab's, but not in the lab file",
                    (_, false, false) => "NOT re-attached: the domain is not owned by this lab",
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
        style.paint(BOLD, "Plan:"),
        s.create,
        s.update,
        s.replace,
        s.delete
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::FieldChange;

    fn field(path: &str, before: Option<&str>, after: Option<&str>) -> FieldChange {
        FieldChange {
            path: path.parse().expect("a field"),
            before: before.map(str::to_owned),
            after: after.map(str::to_owned),
            forces_replacement: false,
            restarts: true,
        }
    }

    fn diff(f: &FieldChange) -> Option<String> {
        let lines = text_lines(f)?;
        let mut out = String::new();
        render_lines(&mut out, &lines, Style::Plain);
        Some(out)
    }

    #[test]
    fn a_kernel_command_line_update_is_a_diff_of_its_parameters() {
        let f = field("boot.cmdline", Some("console=ttyS0 quiet"), Some("console=ttyS0  loglevel=7 ip=dhcp"));
        insta::assert_snapshot!(diff(&f).unwrap(), @r"
                    console=ttyS0
                  - quiet
                  + loglevel=7
                  + ip=dhcp
        ");
        // Created, deleted, or different only in spacing: one line, where the change shows.
        assert!(diff(&field("boot.cmdline", None, Some("console=ttyS0 quiet"))).is_none());
        assert!(diff(&field("boot.cmdline", Some("a b"), None)).is_none());
        assert!(diff(&field("boot.cmdline", Some("a b"), Some("a  b"))).is_none());
        assert!(diff(&field("memory", Some("128 MiB"), Some("256 MiB"))).is_none(), "only parameter lists");
    }

    #[test]
    fn multi_line_text_is_a_line_diff_with_long_unchanged_runs_hidden() {
        let before: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        let after = before.replace("line 3\n", "line three\n").replace("line 18\n", "");
        let f = field("cloud_init.user_data", Some(&before), Some(&after));
        insta::assert_snapshot!(diff(&f).unwrap(), @r"
                    line 1
                    line 2
                  - line 3
                  + line three
                    line 4
                    line 5
                    line 6
                    # (8 unchanged lines hidden)
                    line 15
                    line 16
                    line 17
                  - line 18
                    line 19
                    line 20
        ");
        // A creation lists every line as added; a final newline alone is no difference.
        insta::assert_snapshot!(diff(&field("cloud_init.x", None, Some("a\nb"))).unwrap(), @r"
                  + a
                  + b
        ");
        assert!(diff(&field("cloud_init.x", Some("a\nb"), Some("a\nb\n"))).is_none());
    }

    #[test]
    fn heredoc_in_the_plan() {
        let f = field("boot.cmdline", Some("console=ttyS0 quiet"), Some("console=ttyS0"));
        let before: String = (1..=12).map(|i| format!("l{i}\n")).collect();
        let g = field("cloud_init.user-data", Some(&before), Some(&before.replace("l12\n", "l12\nl13\n")));
        let change = crate::plan::Change {
            // Invariant: a valid address literal.
            address: "vm.a".parse().expect("an address"),
            libvirt_name: "lab-a".into(),
            action: Action::Update,
            reasons: vec![crate::plan::Reason::LabFileChanged],
            fields: vec![f, g],
            blast_radius: vec![],
            after: vec![],
            ops: vec![],
        };
        let plan = crate::plan::Plan {
            lab: "lab".into(),
            changes: vec![change],
            targets: vec![],
            warnings: vec![],
            hosts: Default::default(),
        };
        insta::assert_snapshot!(render(&plan, "lab.yaml", Style::Plain));
        // In colour: the same text with SGR codes around the marks (bold 1, red 31, green 32,
        // yellow 33; reset 0), the escapes topo wrote by hand before anstyle.
        let coloured = render(&plan, "lab.yaml", Style::Color);
        assert_eq!(anstream::adapter::strip_str(&coloured).to_string(), render(&plan, "lab.yaml", Style::Plain));
        for want in [
            "  \x1b[1m# vm.a (lab-a) will be updated in place\x1b[0m\n",
            "\x1b[33m  ~\x1b[0m vm \"a\" {\n",
            "      \x1b[33m~\x1b[0m boot.cmdline         = <<-EOT\x1b[33m # restarts the VM\x1b[0m\n",
            "          \x1b[31m-\x1b[0m quiet\n",
            "          \x1b[32m+\x1b[0m l13\n",
            "\x1b[1mPlan:\x1b[0m 0 to add",
        ] {
            assert!(coloured.contains(want), "{want:?} in\n{coloured}");
        }
    }
}
