//! Issue 19 end-to-end checks (VM groups): see the module list at the end of tests/e2e.rs.
//! A group of 6 tiny guests (`count: 6`) scaled to 8 and back to 5 on real libvirt: each
//! plan lists only the members added or removed (and their DHCP host entries on the
//! network), apply converges, every NIC is proven by ARP, and the members that stay keep
//! their domain (UUID) and their QEMU process (domain id: not restarted).

use super::*;

const GROUPS: &str = "grp";

/// Lab `grp`: one isolated network and the group `client` of `count` tiny guests.
fn group_lab(count: u32) -> String {
    let g = guest_dir();
    format!(
        "apiVersion: topo/v1\nname: {GROUPS}\nnetworks:\n  lan:\n    mode: isolated\n    subnet: 192.168.183.0/24\n\
         vms:\n  client:\n    count: {count}\n    hypervisor: qemu\n    memory: 128MiB\n    boot: {{ kernel: {g}/vmlinuz, initrd: {g}/initrd.gz, cmdline: console=ttyS0 quiet }}\n    nics: [{{ network: lan }}]\n"
    )
}

/// (UUID, domain id) of every member domain on the host, by libvirt name.
fn members() -> BTreeMap<String, (String, String)> {
    names(&["list", "--all", "--name"])
        .into_iter()
        .filter(|n| n.starts_with(&format!("{GROUPS}-client-")))
        .map(|n| {
            let uuid = virsh_ok(&["domuuid", &n]).trim().to_string();
            let id = virsh_ok(&["domid", &n]).trim().to_string();
            (n, (uuid, id))
        })
        .collect()
}

/// The plan's changes as (address, action).
fn plan_actions(lab: &Path) -> BTreeMap<String, String> {
    changes(&plan_json(lab))
        .into_iter()
        .map(|(a, c)| (a, c["action"].as_str().unwrap_or_default().to_string()))
        .collect()
}

fn want(items: &[(&str, &str)]) -> BTreeMap<String, String> {
    items.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[test]
#[ignore = "needs root and the libvirt sandbox: scripts/e2e.sh"]
fn e2e_group_scaled_6_8_5() {
    let clock = Clock(Instant::now());
    let _sandbox = Sandbox::up();
    assert!(leftovers(GROUPS).is_empty(), "{:?}", leftovers(GROUPS));
    let tmp = tempfile::tempdir().expect("temp dir");
    let lab = write(tmp.path(), "groups.yaml", &group_lab(6));
    clock.step("sandbox up");

    apply(&lab, 6);
    assert_converged(&lab);
    let six = members();
    assert_eq!(six.len(), 6, "{six:?}");
    clock.step("count 6: applied, 6 NICs verified, converged");

    std::fs::write(&lab, group_lab(8)).unwrap();
    assert_eq!(
        plan_actions(&lab),
        want(&[("network.lan", "update"), ("vm.client-7", "create"), ("vm.client-8", "create")]),
        "only the difference"
    );
    apply(&lab, 8);
    assert_converged(&lab);
    let eight = members();
    assert_eq!(eight.len(), 8, "{eight:?}");
    for (name, was) in &six {
        assert_eq!(eight.get(name), Some(was), "{name}: the same domain, not restarted");
    }
    clock.step("count 8: 2 members added, 8 NICs verified, the 6 others untouched, converged");

    std::fs::write(&lab, group_lab(5)).unwrap();
    assert_eq!(
        plan_actions(&lab),
        want(&[
            ("network.lan", "update"),
            ("vm.client-6", "delete"),
            ("vm.client-7", "delete"),
            ("vm.client-8", "delete")
        ]),
        "only the difference"
    );
    apply(&lab, 5);
    assert_converged(&lab);
    let five = members();
    let kept: Vec<String> = five.keys().cloned().collect();
    assert_eq!(kept, (1..=5).map(|i| format!("{GROUPS}-client-{i}")).collect::<Vec<_>>(), "the highest removed");
    for (name, now) in &five {
        assert_eq!(six.get(name), Some(now), "{name}: the same domain, not restarted");
    }
    clock.step("count 5: 3 members removed, 5 NICs verified, the 5 others untouched, converged");

    topo_ok(&["destroy", "-y", path(&lab)]);
    assert!(leftovers(GROUPS).is_empty(), "{:?}", leftovers(GROUPS));
    clock.step("destroyed, nothing left");
}
