//! VM groups (`count:` on a VM entry): the members' names, what the model records of a group,
//! and `--target vm.GROUP` for the whole group (docs/lab-file.md, "VM groups").
//!
//! The entry `client` with `count: 3` is the three VMs `client-1`, `client-2`, `client-3`,
//! each a VM of its own everywhere after validation (plan, apply, status, verify, inventory,
//! ssh, console): its derived MACs and addresses follow from its name as any VM's do. The
//! spec keeps the entry with its spans; validation expands it (`validate::vm`), so every
//! problem points at the group's lines.

use miette::SourceSpan;

use crate::lab::address::Address;
use crate::lab::names::{MAX_RESOURCE_NAME, NameError, VmName};

/// Largest `count:`: three digits of suffix. A guard rail like `MAX_MEMORY` (a `count: 1000`
/// written for `100`); libvirt sets no limit. Members' derived MACs have 24 bits: with 999
/// one-NIC members the chance that two collide is about 3% (birthday bound, n²/2²⁵), which
/// validation reports as `duplicate_mac`; a /24 holds at most 253 derived addresses
/// (`dhcp_too_small` says so), so a group that large needs a larger subnet anyway.
pub const MAX_COUNT: u32 = 999;

/// What the model records of one group: its name (the entry's key), how many members it has,
/// and where it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmGroup {
    /// The entry's key: the members' common stem, and the name `--target vm.NAME` takes for
    /// the whole group. Never also the name of a VM (validation refuses the clash).
    pub name: VmName,
    /// `count:`, 0 to [`MAX_COUNT`]; 0 is a valid "none" (Terraform's `count = 0`).
    pub count: u32,
    /// Where the entry's key is in the lab file.
    pub span: SourceSpan,
}

/// That a VM is member `index` (1-based) of the group `group`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupMember {
    pub group: VmName,
    /// 1 to the group's count.
    pub index: u32,
}

impl VmGroup {
    /// The members' names, `NAME-1` to `NAME-COUNT`, in index order.
    ///
    /// # Errors
    /// [`NameError`] when a member's name breaks the VM name rule: only its length can, as
    /// `NAME` is a valid VM name and `-` and digits are allowed characters
    /// ([`longest_member`] tells validation beforehand).
    pub fn members(&self) -> Result<Vec<VmName>, NameError> {
        (1..=self.count).map(|i| member_name(&self.name, i)).collect()
    }
}

/// The name of member `index` of group `group`: `group-index` (1-based, no leading zeros,
/// so `client-10` follows `client-9` and scaling never renames a member).
///
/// # Errors
/// [`NameError`] when the result breaks the VM name rule (longer than [`MAX_RESOURCE_NAME`]).
pub fn member_name(group: &VmName, index: u32) -> Result<VmName, NameError> {
    VmName::new(&format!("{group}-{index}"))
}

/// The length in characters of the longest member name of `group` with `count` members
/// (`0` when there are none): what must stay within [`MAX_RESOURCE_NAME`].
pub fn longest_member(group: &str, count: u32) -> usize {
    if count == 0 { 0 } else { group.len() + 1 + count.to_string().len() }
}

/// `true` when a group of `count` members named after `group` has only names within the VM
/// name rule's length ([`MAX_RESOURCE_NAME`]).
pub fn fits(group: &str, count: u32) -> bool {
    longest_member(group, count) <= MAX_RESOURCE_NAME
}

/// A `--target vm.GROUP` that names a group with no member.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum GroupTargetError {
    #[error("--target vm.{group}: group `{group}` has no members (count: 0)")]
    #[diagnostic(
        code(topo::plan::target),
        help("give the group a count above 0, or target a removed member by its own name (`vm.{group}-1`)")
    )]
    Empty { group: String },
}

/// `targets` with each `vm.GROUP` (a group of `groups`) replaced by its members `vm.GROUP-1`
/// ... in index order; every other address as given. A group's name is never a VM's, so the
/// replacement is unambiguous. Members scaled away are not in the group any more: target
/// them by name (`vm.client-7`), as `topo destroy --target` does any VM no longer in the file.
///
/// # Errors
/// [`GroupTargetError::Empty`] for a group whose count is 0: it would target nothing, and an
/// empty target list means "everything".
pub fn expand_targets<'g>(
    groups: impl IntoIterator<Item = &'g VmGroup>,
    targets: &[Address],
) -> Result<Vec<Address>, GroupTargetError> {
    let groups: Vec<&VmGroup> = groups.into_iter().collect();
    let mut out = Vec::new();
    for t in targets {
        let group = match t {
            Address::Vm(v) => groups.iter().find(|g| g.name == *v),
            _ => None,
        };
        match group {
            None => out.push(t.clone()),
            Some(g) if g.count == 0 => return Err(GroupTargetError::Empty { group: g.name.to_string() }),
            Some(g) => {
                // Invariant: validation built the group only when every member's name is valid.
                let members = g.members().unwrap_or_default();
                out.extend(members.into_iter().map(Address::Vm));
            }
        }
    }
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, count: u32) -> VmGroup {
        VmGroup { name: VmName::new(name).unwrap(), count, span: (0, 0).into() }
    }

    #[test]
    fn members_are_named_from_one_without_padding() {
        let names: Vec<String> = group("client", 11).members().unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(names.first().map(String::as_str), Some("client-1"));
        assert_eq!(names[8..], ["client-9", "client-10", "client-11"]);
        assert!(group("client", 0).members().unwrap().is_empty());
    }

    /// The VM name rule's 63 characters (libvirt names stay under 100 with a 32-character
    /// prefix; a hostname label is at most 63, RFC 1035 2.3.4).
    #[test]
    fn the_longest_member_name_is_measured() {
        assert_eq!(longest_member("client", 0), 0);
        assert_eq!(longest_member("client", 9), 8);
        assert_eq!(longest_member("client", 10), 9);
        assert_eq!(longest_member("client", MAX_COUNT), 10);
        let stem = "a".repeat(61);
        assert!(fits(&stem, 9) && !fits(&stem, 10));
        assert!(matches!(group(&stem, 10).members(), Err(NameError::TooLong { len: 64, max: 63 })));
    }

    #[test]
    fn a_group_target_is_its_members() {
        let groups = [group("client", 3), group("none", 0)];
        let t = |s: &str| s.parse::<Address>().unwrap();
        let got = expand_targets(&groups, &[t("network.lan"), t("vm.client"), t("vm.web")]).unwrap();
        let got: Vec<String> = got.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["network.lan", "vm.client-1", "vm.client-2", "vm.client-3", "vm.web"]);
        let one = expand_targets(&groups, &[t("vm.client-2")]).unwrap();
        assert_eq!(one, [t("vm.client-2")], "a member by its own name");
        let e = expand_targets(&groups, &[t("vm.none")]).unwrap_err();
        assert_eq!(e.to_string(), "--target vm.none: group `none` has no members (count: 0)");
    }
}
