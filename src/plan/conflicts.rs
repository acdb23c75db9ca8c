//! Refusals before anything is touched: conflicts of the lab with the host, another instance
//! of the lab, and network changes that cut off domains the lab does not own.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::change::{Action, Plan, PlanError};
use super::network::starts_network;
use super::vm::wanted_netem;
use crate::diag::{Code, Problem};
use crate::host::observed::{DomainState, Observed, ObservedMode, ObservedNetwork, Ownership};
use crate::lab::address::Address;
use crate::lab::model::{Lab, MacAddr, ManagedNetwork, Network, NetworkKind, Verify};
use crate::lab::ownership::OwnerTag;
use crate::plan::{paths, target};

/// Refuses a destroy of `lab` when another instance of it made objects on the host
/// ([`other_instances`]; `plan` refuses the same in its conflicts). `uri` is for messages.
pub fn check_instances(lab: &Lab, observed: &Observed, uri: &str) -> Result<(), PlanError> {
    refused(lab, uri, other_instances(lab, observed))
}

/// [`PlanError::Refused`] with `problems` (located in `lab`'s file), or `Ok` when there are none.
pub(super) fn refused(lab: &Lab, uri: &str, problems: Vec<Problem>) -> Result<(), PlanError> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(PlanError::Refused {
        lab: lab.name.to_string(),
        uri: uri.to_string(),
        src: Arc::new(lab.source.named_source()),
        problems,
    })
}

/// The checks every plan passes before apply or destroy executes it, whether it is the plan
/// shown, the plan made again under the host lock (`apply -y` after the host changed), or a
/// saved plan: one function, so that no path skips one.
///
/// - for apply (`direction` [`Direction::Apply`](target::Direction::Apply)): every conflict
///   of the lab with the host ([`PlanError::Refused`], the refusals of [`plan`](super::plan)), observed in
///   `observed`;
/// - for destroy: no object of another instance of this lab is on the host, unless
///   `--take-over` ([`check_instances`]);
/// - for both: no network deletion or replacement cuts off a domain this lab does not own,
///   unless `disconnect_foreign` ([`PlanError::CutsForeign`], see [`check_foreign`]).
///
/// `uri` is for messages.
///
/// # Errors
/// The first check that fails.
pub fn check_executable(
    lab: &Lab,
    observed: &Observed,
    plan: &Plan,
    uri: &str,
    direction: target::Direction,
    disconnect_foreign: bool,
) -> Result<(), PlanError> {
    match direction {
        target::Direction::Apply => check_conflicts(lab, observed, uri)?,
        // Another instance's objects are refused for destroy too (apply's conflicts
        // include them).
        target::Direction::Destroy => check_instances(lab, observed, uri)?,
    }
    check_foreign(plan, uri, disconnect_foreign)
}

/// [`PlanError::Refused`] with every conflict of `lab` with the host (`find_conflicts`).
pub(super) fn check_conflicts(lab: &Lab, observed: &Observed, uri: &str) -> Result<(), PlanError> {
    refused(lab, uri, find_conflicts(lab, observed))
}

/// Refuses `plan` when it deletes or replaces a network that a domain this lab does not own
/// is on: a deletion leaves every such domain without its network (running or not), a
/// replacement stops the network under the running ones and topo plugs back only the lab's
/// NICs. topo never cuts off what it does not own unless `insist` (the
/// `--disconnect-foreign` flag). `uri` is for the message. Part of [`check_executable`].
///
/// # Errors
/// [`PlanError::CutsForeign`], naming each network and the domains it cuts off.
pub fn check_foreign(plan: &Plan, uri: &str, insist: bool) -> Result<(), PlanError> {
    if insist {
        return Ok(());
    }
    let mut verbs = BTreeSet::new();
    let networks: Vec<String> = plan
        .changes
        .iter()
        .filter(|c| matches!(c.action, Action::Delete | Action::Replace) && matches!(c.address, Address::Network(_)))
        .filter_map(|c| {
            let mut foreign: Vec<&str> =
                c.blast_radius.iter().filter(|d| !d.owned).map(|d| d.domain.as_str()).collect();
            foreign.dedup();
            if foreign.is_empty() {
                return None;
            }
            verbs.insert(c.action);
            Some(match c.action {
                Action::Replace => format!(
                    "{} ({}) is replaced (stopped and started again) under running {}",
                    c.address,
                    c.libvirt_name,
                    foreign.join(", ")
                ),
                _ => format!("{} ({}): used by {}", c.address, c.libvirt_name, foreign.join(", ")),
            })
        })
        .collect();
    if networks.is_empty() {
        return Ok(());
    }
    let what = if networks.len() == 1 { "a network" } else { "networks" };
    let verb = match (verbs.contains(&Action::Delete), verbs.contains(&Action::Replace)) {
        (true, true) => format!("delete and replace {what}"),
        (false, true) => format!("replace {what}"),
        _ => format!("delete {what}"),
    };
    Err(PlanError::CutsForeign { lab: plan.lab.clone(), uri: uri.to_string(), verb, networks })
}

/// The problems that stop a plan (apply or destroy) of `lab` because another instance of
/// it (the same name and prefix, another lab file) made objects on the host: one per other
/// lab file, at the lab's `name:`, naming the file, when it was last applied and by whom,
/// and its objects. Empty with `--take-over` (`Lab::take_over`): those objects are then
/// this instance's.
pub fn other_instances(lab: &Lab, observed: &Observed) -> Vec<Problem> {
    /// What one other lab file made: its objects, when it last wrote one, who ran it.
    #[derive(Default)]
    struct Holder {
        objects: Vec<String>,
        applied: Option<String>,
        users: BTreeSet<String>,
    }
    let mut by_file: BTreeMap<String, Holder> = BTreeMap::new();
    let tagged = observed
        .networks
        .values()
        .filter(|n| n.ownership(lab) == Ownership::OtherInstance)
        .map(|n| (n.owner.as_ref(), &n.name))
        .chain(
            observed
                .domains
                .values()
                .filter(|d| d.ownership(lab) == Ownership::OtherInstance)
                .map(|d| (d.owner.as_ref(), &d.name)),
        );
    for (tag, name) in tagged {
        let Some(t) = tag else { continue };
        let Some(file) = &t.file else { continue };
        let e = by_file.entry(file.clone()).or_default();
        e.objects.push(format!("{} ({name})", t.resource));
        if t.applied > e.applied {
            e.applied.clone_from(&t.applied);
        }
        e.users.extend(t.user.clone());
    }
    let me = lab.instance();
    by_file
        .into_iter()
        .map(|(file, Holder { objects, applied, users })| {
            let when = applied.map_or_else(|| "at an unknown time".to_string(), |a| format!("last at {a}"));
            let by = if users.is_empty() {
                String::new()
            } else {
                format!(" by {}", users.into_iter().collect::<Vec<_>>().join(", "))
            };
            Problem::at(
                Code::OtherInstance,
                lab.name_span,
                format!(
                    "lab `{}` (prefix `{}`) on the host was applied from another lab file, {file}, {when}{by}; \
                     this is {}. Its objects: {}",
                    me.lab,
                    me.prefix,
                    me.file,
                    objects.join(", ")
                ),
                "the same name and prefix as that lab",
                format!(
                    "nothing was changed. To keep both labs, give this file another `name:` or `prefix:`; to make \
                     this file the owner of that lab (a moved folder, a fresh clone), run again with --take-over \
                     (its objects are re-tagged, not replaced; then this file's plan applies to them); or run \
                     topo from {file}"
                ),
            )
        })
        .collect()
}

/// Everything that stops the plan before anything is touched, all at once.
pub(super) fn find_conflicts(lab: &Lab, observed: &Observed) -> Vec<Problem> {
    let held = other_instances(lab, observed);
    if !held.is_empty() {
        // The same libvirt names are another lab file's: every other check would only
        // repeat this one (names taken, subnets overlapping themselves).
        return held;
    }
    let lacking = super::tools::lacking(lab, observed);
    let mut out: Vec<Problem> = super::tools::refusal(lab, observed, &lacking).into_iter().collect();
    for net in lab.networks.values() {
        out.extend(network_conflicts(lab, net, observed));
    }
    out.extend(macs_taken(lab, observed));
    out.extend(bridge_macs(lab, observed));
    out.extend(paths::conflicts(lab, observed));
    out.extend(vm_names_taken(lab, observed));
    // What the missing tools cause is said once, by their refusal: not again as a machine
    // topo cannot reach (its devices, and so its taps, unread without `ip`; its tunnels
    // unread without `ip` or `bridge`).
    if !super::tools::devices_unread(observed, &lacking) {
        out.extend(netem_unreachable(lab, observed));
    }
    out.extend(kernel_refusals(lab, observed));
    out.extend(
        super::tunnel::conflicts(lab, observed)
            .into_iter()
            .filter(|p| lacking.is_empty() || p.code != Code::TunnelUnreachable),
    );
    out
}

/// Who made an object on the host that the lab does not own, for messages.
fn owner_text(o: Option<&OwnerTag>, name: &str) -> String {
    match o {
        Some(t) if t.name.is_empty() => {
            format!("tagged by topo lab `{}` without the object's name (an older topo): not trusted", t.lab)
        }
        Some(t) if t.name != name => format!("a copy of `{}` of topo lab `{}`, not the lab's own", t.name, t.lab),
        Some(t) => format!("owned by topo lab `{}`", t.lab),
        None => "not created by topo".to_string(),
    }
}

/// The conflicts of lab network `net` with the host: an external network missing, inactive
/// or not as declared; a lab network whose libvirt name another object has, or whose
/// subnet, bridge or route the host already uses.
fn network_conflicts(lab: &Lab, net: &Network, observed: &Observed) -> Vec<Problem> {
    let mut out = Vec::new();
    let on_host = observed.networks.get(net.libvirt_name.as_str());
    match (&net.kind, on_host) {
        (NetworkKind::External, None) => out.push(Problem::at(
            Code::ExternalMissing,
            net.span,
            format!("external network `{}` does not exist on the host", net.libvirt_name),
            "declared external here",
            format!(
                "create and start it first (virsh net-define, net-start {0}), or declare it as a lab network with `mode` and `subnet`",
                net.libvirt_name
            ),
        )),
        (NetworkKind::External, Some(o)) if !o.active => out.push(Problem::at(
            Code::ExternalInactive,
            net.span,
            format!("external network `{}` exists but is not active", net.libvirt_name),
            "declared external here",
            format!("start it with `virsh net-start {}`; topo never changes external networks", net.libvirt_name),
        )),
        (NetworkKind::External, Some(o)) => out.extend(external_conflicts(lab, net, o)),
        (NetworkKind::Managed(_), Some(o)) if o.ownership(lab) != Ownership::ThisLab => {
            out.push(Problem::at(
                Code::NetworkNameTaken,
                net.span,
                format!(
                    "network name `{}` is already taken on the host by a network this lab does not own ({})",
                    net.libvirt_name,
                    owner_text(o.owner.as_ref(), &o.name)
                ),
                "this network would be created as that name",
                "rename the network or set another `prefix:`; to use the existing network, declare it with `external: true`. topo never adopts or overwrites objects it did not create",
            ));
        }
        (NetworkKind::Managed(m), _) => {
            out.extend(host_network_clashes(lab, net, m, observed));
            out.extend(route_taken(net, m, observed));
            out.extend(route6_taken(net, m, observed));
            out.extend(interface_taken(net, m, observed));
        }
    }
    out
}

/// The conflicts of active external network `net`, found on the host as `o`: a declared
/// subnet that is not libvirt's, NICs ARP verification cannot prove.
fn external_conflicts(lab: &Lab, net: &Network, o: &ObservedNetwork) -> Vec<Problem> {
    let mut out = Vec::new();
    // What verification may ask in: libvirt's subnet, else the declared one.
    let libvirt_subnet = o.ip.as_ref().and_then(|ip| {
        let any = ipnetwork::Ipv4Network::new(ip.address, ip.prefix).ok()?;
        ipnetwork::Ipv4Network::new(any.network(), ip.prefix).ok()
    });
    match (libvirt_subnet, net.declared_subnet) {
        (Some(have), Some(declared)) if have != declared => out.push(Problem::at(
            Code::ExternalSubnetMismatch,
            net.span,
            format!(
                "external network `{}` is declared with subnet {declared}, but libvirt reports {have}",
                net.libvirt_name
            ),
            "declared external here",
            format!("write `subnet: {have}`, or remove `subnet:` (libvirt's is used)"),
        )),
        // A network without a host bridge is refused below, with its reason.
        (None, None) if no_host_bridge(o).is_none() => {
            for (vm, nic) in lab.nics().filter(|(_, n)| n.network == net.name && n.verify == Verify::Arp) {
                out.push(Problem::at(
                    Code::ExternalUnprovable,
                    nic.span,
                    format!(
                        "{} of vm `{}` is on external network `{}`, which has no IPv4 address in \
                         libvirt (a bridge to a LAN): its address cannot be proven by ARP without \
                         sweeping a LAN topo knows nothing of",
                        nic.label(),
                        vm.name,
                        net.libvirt_name
                    ),
                    "verified by ARP (`verify: arp`, the default)",
                    format!(
                        "set `verify: none` on this NIC, or declare the LAN's subnet on the network \
                         (`subnet: 192.168.1.0/24` beside `external: true` under `{}`)",
                        net.name
                    ),
                ));
            }
        }
        _ => {}
    }
    out.extend(external_unserved(lab, net, o));
    out
}

/// Lab network `net`'s subnet or bridge that a network on the host the lab does not own
/// already has.
fn host_network_clashes(lab: &Lab, net: &Network, m: &ManagedNetwork, observed: &Observed) -> Vec<Problem> {
    let mut out = Vec::new();
    for other in observed.networks.values() {
        if other.ownership(lab) == Ownership::ThisLab {
            continue; // the lab's own networks are updated, replaced or deleted first
        }
        if let (Some(subnet), Some(ip)) = (m.subnet, &other.ip)
            && let Ok(theirs) = ipnetwork::Ipv4Network::new(ip.address, ip.prefix)
            && subnet.overlaps(theirs)
        {
            out.push(Problem::at(
                Code::HostSubnetOverlap,
                net.span,
                format!(
                    "subnet {subnet} of network `{}` overlaps network `{}` on the host ({}/{}, {})",
                    net.name,
                    other.name,
                    ip.address,
                    ip.prefix,
                    owner_text(other.owner.as_ref(), &other.name)
                ),
                "this network",
                "pick a subnet that no network on the host uses (see `virsh net-list --all` and `virsh net-dumpxml`)",
            ));
        }
        // The same for the IPv6 prefix: the host routes each prefix to one bridge.
        if let (Some(prefix), Some(ip6)) = (m.subnet6, &other.ip6)
            && let Ok(theirs) = ipnetwork::Ipv6Network::new(ip6.address, ip6.prefix)
            && (prefix.contains(theirs.network()) || theirs.contains(prefix.network()))
        {
            out.push(Problem::at(
                Code::HostSubnetOverlap,
                net.span,
                format!(
                    "subnet6 {prefix} of network `{}` overlaps network `{}` on the host ({}/{}, {})",
                    net.name,
                    other.name,
                    ip6.address,
                    ip6.prefix,
                    owner_text(other.owner.as_ref(), &other.name)
                ),
                "this network",
                "pick a /64 that no network on the host uses (see `virsh net-list --all` and `virsh net-dumpxml`)",
            ));
        }
        if let (Some(b), Some(theirs)) = (&m.bridge, &other.bridge)
            && b.as_str() == theirs
        {
            out.push(Problem::at(
                Code::HostBridgeTaken,
                net.span,
                format!(
                    "bridge `{b}` of network `{}` is already used by network `{}` on the host",
                    net.name, other.name
                ),
                "this network",
                "choose another `bridge:` name, or leave it out and libvirt picks a free virbrN",
            ));
        }
    }
    out
}

/// The bridges of every libvirt network on the host (as defined and as running): routes on
/// them are libvirt's own, checked from the networks' XML rather than as host routes.
fn libvirt_bridges(observed: &Observed) -> BTreeSet<&str> {
    observed.networks.values().flat_map(|n| n.live_bridge.iter().chain(n.bridge.iter())).map(String::as_str).collect()
}

/// A route of the host with exactly this subnet (a VPN, docker0, a hand-made
/// bridge): libvirt refuses to start the network (bridge_driver_linux.c
/// `networkCheckRouteCollision`), for a create or a replace alike, and a
/// replace would have stopped the working network first. Routes on libvirt
/// networks' bridges are left out: the lab's own are replaced with them, and
/// other networks' subnets are refused above from their XML.
fn route_taken(net: &Network, m: &ManagedNetwork, observed: &Observed) -> Vec<Problem> {
    let mut out = Vec::new();
    if let (Some(subnet), Some(routes)) = (m.subnet, &observed.host_routes)
        && starts_network(m, net.libvirt_name.as_str(), observed)
    {
        let bridges = libvirt_bridges(observed);
        for r in routes.iter().filter(|r| !bridges.contains(r.device.as_str()) && r.collides(subnet)) {
            out.push(Problem::at(
                Code::HostRouteTaken,
                net.span,
                format!(
                    "subnet {subnet} of network `{}` is already a route of the host, through `{}`: \
                     libvirt refuses to start a network on it (\"Network is already in use by interface {}\")",
                    net.name, r.device, r.device
                ),
                "this network would start on that subnet",
                format!(
                    "pick a subnet that no route of the host uses (see `ip -4 route`), or take `{}` down first",
                    r.device
                ),
            ));
        }
    }
    out
}

/// A route of the host that overlaps the lab network's IPv6 prefix, on a device that is no
/// libvirt network's bridge (a VPN's tun, docker0, the host's own LAN): guests on the
/// prefix would be reached through one or the other by metric. Checked where the network
/// starts (create, replace), as [`route_taken`]. topo's own rule
/// ([`crate::host::observed::HostRoute6::overlaps`]).
fn route6_taken(net: &Network, m: &ManagedNetwork, observed: &Observed) -> Vec<Problem> {
    let mut out = Vec::new();
    if let (Some(prefix), Some(routes)) = (m.subnet6, &observed.host_routes6)
        && starts_network(m, net.libvirt_name.as_str(), observed)
    {
        let bridges = libvirt_bridges(observed);
        for r in routes.iter().filter(|r| !bridges.contains(r.device.as_str()) && r.overlaps(prefix)) {
            out.push(Problem::at(
                Code::HostRouteTaken,
                net.span,
                format!(
                    "subnet6 {prefix} of network `{}` overlaps a route of the host, {}/{} through `{}`",
                    net.name, r.destination, r.prefix, r.device
                ),
                "this network would start on that prefix",
                format!(
                    "pick a /64 that no route of the host uses (see `ip -6 route`), or take `{}` down first",
                    r.device
                ),
            ));
        }
    }
    out
}

/// An interface of that name that no libvirt network has: the kernel refuses
/// a second one (libvirt's virNetDevBridgeCreate fails with EEXIST at start).
fn interface_taken(net: &Network, m: &ManagedNetwork, observed: &Observed) -> Option<Problem> {
    if let (Some(b), Some(ifaces)) = (&m.bridge, &observed.host_interfaces)
        && ifaces.contains(b.as_str())
        && !observed
            .networks
            .values()
            .any(|o| o.bridge.as_deref() == Some(b.as_str()) || o.live_bridge.as_deref() == Some(b.as_str()))
    {
        return Some(Problem::at(
            Code::HostInterfaceTaken,
            net.span,
            format!(
                "bridge `{b}` of network `{}` already exists on the host as an interface that is no libvirt network's",
                net.name
            ),
            "this network's bridge",
            "choose another `bridge:` name (see `ip link`), or leave it out and libvirt picks a free virbrN",
        ));
    }
    None
}

/// A MAC that a guest outside the lab already has on the same network: two guests with
/// one MAC on one bridge break each other's traffic and DHCP (dnsmasq keys leases and
/// reservations by MAC). Checked where topo would bring the MAC onto the network (a NIC
/// the lab's domain does not have yet); a copy made later is the copier's conflict.
fn macs_taken(lab: &Lab, observed: &Observed) -> Vec<Problem> {
    let mut out = Vec::new();
    for vm in lab.vms.values() {
        let ours = observed.domains.get(vm.libvirt_name.as_str()).filter(|d| d.ownership(lab) == Ownership::ThisLab);
        for nic in &vm.nics {
            let Some(net) = lab.networks.get(&nic.network) else { continue };
            let present = ours.is_some_and(|d| {
                d.interfaces
                    .iter()
                    .any(|i| i.mac == Some(nic.mac) && i.network.as_deref() == Some(net.libvirt_name.as_str()))
            });
            if present {
                continue;
            }
            let bridge =
                observed.networks.get(net.libvirt_name.as_str()).and_then(|o| o.bridge_now().map(str::to_owned));
            let holder = observed.domains.values().filter(|d| d.ownership(lab) != Ownership::ThisLab).find(|d| {
                d.interfaces.iter().any(|i| {
                    i.mac == Some(nic.mac)
                        && (i.network.as_deref() == Some(net.libvirt_name.as_str())
                            || (i.bridge.is_some() && i.bridge == bridge))
                })
            });
            if let Some(d) = holder {
                let help = if nic.mac_derived {
                    "set another `mac:` on this NIC (derived MACs can collide with hand-picked ones)"
                } else {
                    "choose another `mac:` for this NIC, or remove it to get a derived one"
                };
                out.push(Problem::at(
                    Code::HostMacTaken,
                    nic.span,
                    format!(
                        "{}.{}: MAC {} is already used on network `{}` by domain `{}` ({})",
                        vm.name,
                        nic.label(),
                        nic.mac,
                        net.libvirt_name,
                        d.name,
                        owner_text(d.owner.as_ref(), &d.name)
                    ),
                    "this NIC",
                    help,
                ));
            }
        }
    }
    out
}

/// A NIC whose MAC is its network's bridge's own: the bridge holds its own address as a
/// local forwarding entry, so frames to that MAC are passed up to the host and never
/// forwarded to the guest's port (Linux net/bridge/br_input.c `br_handle_frame_finish`,
/// a local `dst`; the host's own frames to it are dropped, br_device.c `br_dev_xmit` ->
/// br_forward.c with no port), and the guest's frames carry the bridge's address as
/// source (net/bridge/br_fdb.c `br_fdb_update`: "received packet on ... with own
/// address as source address"): no DHCP reply or ARP reply ever reaches the guest.
/// Lab networks topo creates get a derived bridge MAC that validation keeps apart from
/// every NIC's (`bridge_mac` in validate); external networks and lab networks made by an
/// older topo have libvirt's random one (52:54:00:.., generated at define), known only
/// once the network exists: checked here, for lab and external networks alike.
fn bridge_macs(lab: &Lab, observed: &Observed) -> Vec<Problem> {
    let mut out = Vec::new();
    for vm in lab.vms.values() {
        for nic in &vm.nics {
            let Some(net) = lab.networks.get(&nic.network) else { continue };
            let Some(o) = observed.networks.get(net.libvirt_name.as_str()) else { continue };
            let bridge = o.live_bridge.as_ref().or(o.bridge.as_ref());
            let held = if o.mac == Some(nic.mac) {
                Some(format!(
                    "the MAC of the bridge of network `{0}` on the host (`<mac address>` in `virsh net-dumpxml {0}`)",
                    net.libvirt_name
                ))
            } else {
                bridge.filter(|b| observed.bridge_macs.get(*b).is_some_and(|m| m.contains(&nic.mac))).map(|b| {
                    format!(
                        "an address that bridge `{b}` of network `{}` holds as its own on the host (the bridge's or one of its ports', /sys/class/net)",
                        net.libvirt_name
                    )
                })
            };
            if let Some(held) = held {
                let help = if nic.mac_derived {
                    "set `mac:` on this NIC to another address (a derived MAC collided with one of the bridge's)"
                } else {
                    "choose another `mac:` for this NIC, or remove it to get a derived one"
                };
                out.push(Problem::at(
                    Code::HostBridgeMac,
                    nic.span,
                    format!(
                        "{}.{}: MAC {} is {held}: the bridge keeps frames to its own addresses for the host, so the guest would get no DHCP or ARP reply",
                        vm.name,
                        nic.label(),
                        nic.mac,
                    ),
                    "this NIC",
                    help,
                ));
            }
        }
    }
    out
}

/// Lab VMs whose libvirt name a domain the lab does not own already has.
fn vm_names_taken(lab: &Lab, observed: &Observed) -> Vec<Problem> {
    let mut out = Vec::new();
    for vm in lab.vms.values() {
        if let Some(o) = observed.domains.get(vm.libvirt_name.as_str())
            && o.ownership(lab) != Ownership::ThisLab
        {
            out.push(Problem::at(
                Code::VmNameTaken,
                vm.span,
                format!(
                    "VM name `{}` is already taken on the host by a domain this lab does not own ({})",
                    vm.libvirt_name,
                    owner_text(o.owner.as_ref(), &o.name)
                ),
                "this VM would be created as that name",
                "rename the VM or set another `prefix:`; topo never adopts or overwrites objects it did not create",
            ));
        }
    }
    out
}

/// netem is set with tc on the VM's tap, a device of the libvirt host: topo must run
/// there, in the daemon's network namespace. (`rate:` goes through libvirt: any URI.)
fn netem_unreachable(lab: &Lab, observed: &Observed) -> Vec<Problem> {
    let mut out = Vec::new();
    for vm in lab.vms.values() {
        let running = observed
            .domains
            .get(vm.libvirt_name.as_str())
            .filter(|d| d.ownership(lab) == Ownership::ThisLab && d.state == DomainState::Running);
        for nic in vm.nics.iter().filter(|n| wanted_netem(n).is_some()) {
            let span = nic.netem_span.unwrap_or(nic.span);
            let who = format!("{}.{}", vm.name, nic.label());
            if observed.host_interfaces.is_none() {
                out.push(Problem::at(
                    Code::NetemUnreachable,
                    span,
                    format!(
                        "{who}: delay, jitter and loss are set with tc on the VM's tap, which is on the libvirt host, \
                         and the URI names another host (or the test driver, which has no taps)"
                    ),
                    "netem needs the tap on this machine",
                    "run topo on the libvirt host itself (e.g. qemu:///system), or remove `delay`, `jitter` and `loss`; \
                     `rate:` works on every URI (libvirt's <bandwidth>)",
                ));
            } else if running.is_some_and(|d| d.links.is_none()) {
                out.push(Problem::at(
                    Code::NetemUnreachable,
                    span,
                    format!(
                        "{who}: the VM's taps are not visible from here (topo runs in another network namespace than \
                         libvirtd), so their netem settings can be neither read nor set"
                    ),
                    "netem needs the tap",
                    "run topo in the daemon's network namespace (`ip netns exec NS topo ...`)",
                ));
            }
        }
    }
    out
}

/// NICs whose `delay`/`jitter`/`loss` (netem) or `rate` (libvirt's `<bandwidth>`: htb, sfq,
/// fw, ingress, u32, police) need what the host kernel was built without: the kernel would
/// refuse them at apply ("Specified qdisc kind is unknown"), after the network and other VMs
/// were made. Only where the kernel is known (a local host with a readable config).
pub(super) fn kernel_refusals(lab: &Lab, observed: &Observed) -> Vec<Problem> {
    use crate::host::kernel::KernelFeature;
    let Some(kernel) = &observed.kernel else { return Vec::new() };
    let mut out = Vec::new();
    for vm in lab.vms.values() {
        for nic in &vm.nics {
            let who = format!("{}.{}", vm.name, nic.label());
            let mut refuse = |need: &[KernelFeature], span: Option<miette::SourceSpan>, what: &str, key: &str| {
                let lacks = kernel.lacks(need);
                if lacks.is_empty() {
                    return;
                }
                let names: Vec<String> = lacks.iter().map(|f| f.to_string()).collect();
                let modules: Vec<&str> = lacks.iter().map(|f| f.module()).collect();
                out.push(Problem::at(
                    Code::KernelLacksQdisc,
                    span.unwrap_or(nic.span),
                    format!(
                        "{who}: the host kernel was built without {} (read from {}), which {what} needs: the kernel \
                         would refuse it at apply",
                        names.join(", "),
                        kernel.source
                    ),
                    "the kernel cannot do this",
                    format!(
                        "run a kernel built with these (=y, or =m and then `modprobe -a {}`), or remove `{key}` from the lab file",
                        modules.join(" ")
                    ),
                ));
            };
            if wanted_netem(nic).is_some() {
                refuse(
                    &KernelFeature::NETEM,
                    nic.netem_span,
                    "netem on the VM's tap (`delay`, `jitter`, `loss`)",
                    "delay`/`jitter`/`loss",
                );
            }
            if nic.impairment.rate.is_some() {
                refuse(
                    &KernelFeature::RATE,
                    nic.rate_span,
                    "libvirt's <bandwidth> for `rate` (htb, sfq and a fw filter; ingress, u32 and police)",
                    "rate",
                );
            }
        }
    }
    out
}

/// Why ARP verification cannot prove the NICs on external network `o`, when it cannot:
/// `None` when it can (a bridge on this host and a DHCP server libvirt runs or the LAN's).
///
/// - libvirt's `<forward>` modes `private`, `vepa`, `passthrough` and `bridge` without a
///   `<bridge name>` put each guest on a macvtap device over a host NIC (libvirt
///   src/network/bridge_driver.c `networkAllocatePort`, `VIR_DOMAIN_NET_TYPE_DIRECT`), and
///   `hostdev` hands the guest a PCI function: no host bridge carries the guest's frames,
///   and a macvtap guest cannot reach its host through the lower device at all (macvtap
///   sends the lower device's traffic out, never up to the host's own stack).
/// - an `<ip>` without `<dhcp>`: libvirt's dnsmasq serves no addresses (bridge_driver.c
///   `networkDnsmasqConfContents` writes `dhcp-range` only from `<range>`, `dhcp-host` only
///   from `<host>`), so a NIC whose MAC has no `<host>` entry gets none.
pub(super) fn unprovable_on(o: &ObservedNetwork, mac: MacAddr) -> Option<String> {
    if let Some(why) = no_host_bridge(o) {
        return Some(why);
    }
    let ip = o.ip.as_ref()?;
    (ip.dhcp_range.is_none() && !ip.hosts.iter().any(|h| h.mac == mac)).then(|| {
        format!(
            "has an IPv4 address in libvirt ({}/{}) but no DHCP range{}: libvirt's dnsmasq gives this NIC no address",
            ip.address,
            ip.prefix,
            if ip.hosts.is_empty() { "" } else { " and no `<host>` entry for this NIC's MAC" }
        )
    })
}

/// Why no bridge on this host carries the frames of guests on network `o` (its forward
/// mode; see [`unprovable_on`]), `None` for a bridge.
pub(super) fn no_host_bridge(o: &ObservedNetwork) -> Option<String> {
    const CANNOT: &str = "no host bridge carries the guest's frames, and a macvtap guest cannot reach its own host";
    match &o.mode {
        ObservedMode::Other(m) if matches!(m.as_str(), "private" | "vepa" | "passthrough") => {
            Some(format!("forwards by macvtap (`<forward mode='{m}'>`): {CANNOT}"))
        }
        ObservedMode::Other(m) if m == "bridge" && o.bridge.is_none() => Some(format!(
            "forwards by macvtap (`<forward mode='bridge'>` over a host interface, with no `<bridge name>`): {CANNOT}"
        )),
        ObservedMode::Other(m) if m == "hostdev" => Some(
            "hands each guest a host PCI device (`<forward mode='hostdev'>`): no host bridge carries the guest's frames"
                .into(),
        ),
        _ => None,
    }
}

/// Refusals for the NICs with `verify: arp` on external network `net` (found on the host as
/// `o`) that verification could only fail, 120 s after apply ([`unprovable_on`]): said at
/// plan time, at the NIC, with the fix (`verify: none`; the NIC's address is then the
/// guest's business and `topo verify` lists it as skipped).
pub(super) fn external_unserved(lab: &Lab, net: &Network, o: &ObservedNetwork) -> Vec<Problem> {
    lab.nics()
        .filter(|(_, n)| n.network == net.name && n.verify == Verify::Arp)
        .filter_map(|(vm, nic)| {
            let why = unprovable_on(o, nic.mac)?;
            Some(Problem::at(
                Code::ExternalUnprovable,
                nic.span,
                format!(
                    "{} of vm `{}` is on external network `{}`, which {why}: ARP verification could not prove its address",
                    nic.label(),
                    vm.name,
                    net.libvirt_name
                ),
                "verified by ARP (`verify: arp`, the default)",
                "set `verify: none` on this NIC (configure its address in the guest yourself), or put it on a network \
                 whose bridge and DHCP libvirt runs on this host",
            ))
        })
        .collect()
}
