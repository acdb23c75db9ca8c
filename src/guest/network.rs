//! network-config version 2 for one VM: one `ethernets` entry per NIC, matched by MAC.

use serde_json::{Map, Value, json};

use super::GuestError;
use crate::lab::ipv6::slaac_address;
use crate::lab::model::{Lab, ManagedNetwork, NetworkKind, NetworkMode, Nic, Vm};

/// How the guest configures one NIC.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Addressing<'a> {
    /// The network serves this NIC by DHCP (an external network, or a lab network with a
    /// DHCP range; a NIC's `ip:` there is a reservation the DHCP server hands out).
    Dhcp { default_route: bool },
    /// A lab network without DHCP, and the NIC has `ip:`: configured statically.
    Static { nic: &'a Nic, net: &'a ManagedNetwork },
    /// Nothing assigns an address (no subnet, or no DHCP and no `ip:`): link up only.
    LinkOnly,
}

fn addressing<'a>(lab: &'a Lab, vm: &Vm, nic: &'a Nic) -> Result<Addressing<'a>, GuestError> {
    let net = lab
        .networks
        .get(&nic.network)
        .ok_or_else(|| GuestError::UnknownNetwork { vm: vm.name.to_string(), network: nic.network.to_string() })?;
    Ok(match &net.kind {
        // topo assumes an external network serves DHCP with a default route (libvirt's
        // `default` does).
        NetworkKind::External => Addressing::Dhcp { default_route: true },
        // On a host that holds a stretched network without serving it, the guest is told
        // what the serving host gives (DHCP across the tunnel), not what the bare bridge here has.
        NetworkKind::Managed(m) => match lab.served.get(&nic.network).unwrap_or(m) {
            // libvirt's dnsmasq offers no router on an isolated network.
            m if m.dhcp.is_some() => Addressing::Dhcp { default_route: m.mode != NetworkMode::Isolated },
            m if nic.ip.is_some() && m.subnet.is_some() => Addressing::Static { nic, net: m },
            _ => Addressing::LinkOnly,
        },
    })
}

/// The NIC's SLAAC address with its prefix length (`fd00:10::5054:ff:fe12:3456/64`), where its
/// network is a lab network with an IPv6 prefix.
fn address6(lab: &Lab, nic: &Nic) -> Option<String> {
    match lab.networks.get(&nic.network).map(|n| &n.kind) {
        Some(NetworkKind::Managed(m)) => m.subnet6.map(|p| format!("{}/{}", slaac_address(p, nic.mac), p.prefix())),
        _ => None,
    }
}

/// The metric of the default route of a VM's first NIC that gets one by DHCP, when several
/// do (see [`network_config`]); the next get 100 more each. 100 is networkd's and
/// NetworkManager's own metric for a wired link's DHCP routes.
pub const ROUTE_METRIC: u32 = 100;

/// The network-config (version 2) of `vm`, as data.
///
/// Each NIC becomes `ethernets.ethN` with `match: {macaddress}` and `set-name: ethN` (the
/// guest's name for it is topo's label, whatever the image's naming scheme), then:
/// - `dhcp4: true` where the network serves the NIC by DHCP;
/// - `addresses: [ip/prefix]` where the network has no DHCP and the NIC has `ip:`, with
///   `nameservers` = the network's gateway (libvirt's dnsmasq answers DNS on every network
///   with an address) and `gateway4` = the gateway on the first such NIC of a forwarding
///   network (nat, routed, open), unless a DHCP NIC already brings a default route: two
///   default routes would make ifupdown fail the second interface;
/// - `dhcp4: false` where nothing assigns an address: netplan's renderers bring such a link
///   up with no address; Debian's eni renderer leaves it down (`iface ethN inet manual`
///   without `auto`), to be configured in the guest (docs/guests.md);
/// - and, beside any of these, where the NIC's network has a `subnet6`: its SLAAC address
///   (the prefix and the modified EUI-64 of its MAC) in `addresses`, and `accept-ra: true`
///   for the routes of libvirt's router advertisements (docs/addressing.md, section IPv6).
///   The address is written rather than left to SLAAC because cloud-init's eni renderer
///   (Debian's) renders a NIC with no IPv4 method as `iface ethN inet manual` without
///   `auto`, so ifupdown never brings the link up and SLAAC never runs (eni.py
///   `_render_iface`, cloud-init 22.4; seen on the Debian 12 image, tests/e2e/ipv6.rs); a
///   written address is `iface ethN inet6 static` with `auto`, and every renderer writes it
///   whatever the guest's `addr_gen_mode` (NetworkManager's stable-privacy would give another
///   address by SLAAC). It is the very address SLAAC forms, so the kernel's SLAAC on the same
///   prefix adds nothing. IPv4 is configured as without it.
///
/// When two or more NICs get a default route by DHCP (external networks, lab networks other
/// than `isolated`), each installs one and the guest would use whichever came up first. So
/// each such NIC gets `dhcp4-overrides: {route-metric: M}`: [`ROUTE_METRIC`] for the first in
/// `nics` order (the VM's default route), [`ROUTE_METRIC`] + 100 for the next, and so on.
/// `route-metric` is the one DHCP override cloud-init carries to every renderer: its v2
/// reader keeps only `route-metric` of `dhcp4-overrides` (cloudinit/net/network_state.py
/// `_v2_to_v1_ipcfg`, cloud-init 22.4 as in Debian 12; `use-routes: false` would be dropped
/// silently), the eni renderer writes it as the `metric` of `iface ethN inet dhcp` (eni.py
/// `_iface_add_subnet`), which ifupdown passes to dhclient for the routes it adds, and netplan
/// sets it as networkd's `RouteMetric`. The other NICs' default routes stay, as fallbacks
/// the kernel uses only while the first one's link is down.
pub fn network_config(lab: &Lab, vm: &Vm) -> Result<Value, GuestError> {
    let modes: Vec<Addressing<'_>> = vm.nics.iter().map(|n| addressing(lab, vm, n)).collect::<Result<_, _>>()?;
    let routed = modes.iter().filter(|a| matches!(a, Addressing::Dhcp { default_route: true })).count();
    let mut route_taken = routed > 0;
    let mut metric = ROUTE_METRIC;
    let mut ethernets = Map::new();
    for (nic, mode) in vm.nics.iter().zip(&modes) {
        let mut e = Map::new();
        e.insert("match".into(), json!({ "macaddress": nic.mac.to_string() }));
        e.insert("set-name".into(), json!(nic.label()));
        match mode {
            Addressing::Dhcp { default_route } => {
                e.insert("dhcp4".into(), json!(true));
                if *default_route && routed > 1 {
                    e.insert("dhcp4-overrides".into(), json!({ "route-metric": metric }));
                    metric += 100;
                }
            }
            Addressing::Static { nic, net } => {
                e.insert("dhcp4".into(), json!(false));
                // Static needs `ip` and `subnet` (checked in `addressing`).
                let prefix = net.subnet.map_or(32, |s| s.prefix());
                let ip = nic.ip.map(|ip| format!("{ip}/{prefix}")).unwrap_or_default();
                e.insert("addresses".into(), json!([ip]));
                if let Some(gw) = net.gateway {
                    if !route_taken && net.mode != NetworkMode::Isolated {
                        e.insert("gateway4".into(), json!(gw.to_string()));
                        route_taken = true;
                    }
                    e.insert("nameservers".into(), json!({ "addresses": [gw.to_string()] }));
                }
            }
            Addressing::LinkOnly => {
                e.insert("dhcp4".into(), json!(false));
            }
        }
        if let Some(a6) = address6(lab, nic) {
            match e.get_mut("addresses").and_then(Value::as_array_mut) {
                Some(list) => list.push(json!(a6)),
                None => {
                    e.insert("addresses".into(), json!([a6]));
                }
            }
            e.insert("accept-ra".into(), json!(true));
        }
        ethernets.insert(nic.label(), Value::Object(e));
    }
    // A wire end: its address in the wire's /31, nothing else (no gateway, no DNS, no RAs:
    // a cable to one peer).
    for (w, k) in lab.wire_ends(&vm.name) {
        let end = &w.ends[k];
        let label = crate::lab::model::nic_label(end.index);
        ethernets.insert(
            label.clone(),
            json!({
                "match": { "macaddress": end.mac.to_string() },
                "set-name": label,
                "dhcp4": false,
                "addresses": [format!("{}/{}", end.ip, w.subnet.prefix())],
            }),
        );
    }
    Ok(json!({ "version": 2, "ethernets": ethernets }))
}
