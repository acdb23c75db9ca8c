//! The lab's inventory: every VM, the address topo has proven on each NIC, and the login
//! user, written as an ssh_config, a hosts file, an Ansible inventory or JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::host::runner::SshTarget;
use crate::lab::model::Lab;
use crate::verify::{Family, NicState, VerifyReport};

/// One NIC in the inventory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InvNic {
    /// `eth0`, `eth1`, ...
    pub nic: String,
    /// The network's name in the lab file.
    pub network: String,
    pub mac: String,
    /// The address topo proved by ARP (or, on a remote host, the one libvirt reports);
    /// `None` when there is none.
    pub address: Option<Ipv4Addr>,
    /// The IPv6 address topo proved by NDP (its SLAAC address on a network with `subnet6`);
    /// `None` when there is none.
    pub address6: Option<Ipv6Addr>,
    /// `verified`, `reported`, `skipped` (`verify: none`), `stopped` (the VM is `state:
    /// stopped`) or `unproven`.
    pub state: &'static str,
    /// The ssh `ProxyJump` that reaches `address` (the libvirt host whose network carries
    /// it, when topo reaches that host over ssh); set by [`Inventory::jump_through`].
    #[serde(skip)]
    pub proxy_jump: Option<String>,
}

/// One VM in the inventory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InvHost {
    /// The VM's name in the lab file (the ssh host alias).
    pub name: String,
    /// The libvirt host that runs it, in a lab across hosts (its name under `hosts:`);
    /// `None` (and absent from the JSON) in a lab on one host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The guest's hostname (cloud-init), or the VM name.
    pub hostname: String,
    /// The login user topo created; `None` when cloud-init is off for the VM.
    pub user: Option<String>,
    /// The address to log in on: the first NIC (in `nics` order) with a proven address.
    pub address: Option<Ipv4Addr>,
    pub nics: Vec<InvNic>,
    /// The name its host key is pinned under (`known_hosts::alias`); set by
    /// [`Inventory::pin_host_keys`].
    #[serde(skip)]
    pub host_key_alias: Option<String>,
    /// The known_hosts file its key is pinned in (`known_hosts::prepare`: one per lab and
    /// libvirt host); set with the alias by [`Inventory::pin_host_keys`].
    #[serde(skip)]
    pub known_hosts: Option<PathBuf>,
    /// The ssh `ProxyJump` (`[user@]host[:port]`) that reaches its login address
    /// ([`InvHost::address`]): the libvirt host whose network carries it, when topo reaches
    /// that host over ssh ([`jump_host`]); set by [`Inventory::jump_through`].
    #[serde(skip)]
    pub proxy_jump: Option<String>,
}

/// Every VM of a lab, sorted by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Inventory {
    pub lab: String,
    pub hosts: Vec<InvHost>,
}

/// The ssh jump host that reaches the VMs of the libvirt host at `uri`: `[user@]host[:port]`
/// of a URI whose transport is ssh (`driver+ssh://`, `+libssh`, `+libssh2`; read by
/// [`SshTarget::from_uri`]), which the user's ssh config and agent already reach (libvirt
/// runs that same ssh). `None` for a local or non-ssh URI: the VMs' networks are then this
/// machine's, or unknown.
pub fn jump_host(uri: &str) -> Option<String> {
    SshTarget::from_uri(uri).map(|t| t.authority())
}

impl Inventory {
    /// Builds the inventory from the lab and a verification report (NICs missing from the
    /// report count as unproven).
    pub fn new(lab: &Lab, report: &VerifyReport) -> Self {
        let hosts = lab
            .vms
            .values()
            .map(|vm| {
                let nics: Vec<InvNic> = vm
                    .nics
                    .iter()
                    .map(|nic| {
                        let outcome = |family: Family| {
                            report
                                .nics
                                .iter()
                                .find(|o| {
                                    o.target.vm == vm.name && o.target.mac == nic.mac && o.target.family == family
                                })
                                .map(|o| &o.state)
                        };
                        let v6 = outcome(Family::Ipv6);
                        let address6 = match v6 {
                            Some(NicState::Verified { ip: IpAddr::V6(ip), .. }) => Some(*ip),
                            _ => None,
                        };
                        // The IPv4 outcome says the state; an IPv6-only NIC's own says it.
                        let (address, state) = match outcome(Family::Ipv4).or(v6) {
                            Some(NicState::Verified { ip: IpAddr::V4(ip), .. }) => (Some(*ip), "verified"),
                            Some(NicState::Verified { ip: IpAddr::V6(_), .. }) => (None, "verified"),
                            Some(NicState::Reported { ip, .. }) => (Some(*ip), "reported"),
                            Some(NicState::Skipped) => (None, "skipped"),
                            Some(NicState::Stopped) => (None, "stopped"),
                            Some(
                                NicState::WaitingForLease
                                | NicState::LeasedNoReply { .. }
                                | NicState::Soliciting { .. }
                                | NicState::Unproven
                                | NicState::Failed { .. },
                            )
                            | None => (None, "unproven"),
                        };
                        InvNic {
                            nic: nic.label(),
                            network: nic.network.to_string(),
                            mac: nic.mac.to_string(),
                            address,
                            address6,
                            state,
                            proxy_jump: None,
                        }
                    })
                    .collect();
                let ci = vm.cloud_init.as_ref();
                InvHost {
                    name: vm.name.to_string(),
                    host: lab.is_multi_host().then(|| vm.host.to_string()),
                    hostname: ci.map_or_else(|| vm.name.to_string(), |c| c.hostname.clone()),
                    user: ci.map(|c| c.user.clone()),
                    address: nics.iter().find_map(|n| n.address),
                    nics,
                    host_key_alias: None,
                    known_hosts: None,
                    proxy_jump: None,
                }
            })
            .collect();
        Inventory { lab: lab.name.to_string(), hosts }
    }

    /// Pins host keys: ssh is told to keep them in `known_hosts` (the lab's file for one
    /// libvirt host, `known_hosts::prepare`) under each VM's alias from `aliases` (VM name ->
    /// alias, `known_hosts::alias`), accepting a key on first contact and refusing a changed
    /// one. VMs not in `aliases` are left as they are (in a lab across hosts each host's VMs
    /// are pinned in that host's file, one call per host).
    pub fn pin_host_keys(&mut self, known_hosts: PathBuf, aliases: &BTreeMap<String, String>) {
        for h in &mut self.hosts {
            if let Some(alias) = aliases.get(&h.name) {
                h.host_key_alias = Some(alias.clone());
                h.known_hosts = Some(known_hosts.clone());
            }
        }
    }

    /// Makes ssh reach each address through the jump host `jump` gives for it: `jump(vm,
    /// Some(nic))` for each NIC's address, `jump(vm, None)` for a VM without a proven
    /// address; a VM's login address goes the way of its NIC. `ProxyJump` in every format,
    /// `None` for an address reached directly.
    pub fn jump_through(&mut self, jump: impl Fn(&InvHost, Option<&InvNic>) -> Option<String>) {
        for h in &mut self.hosts {
            let vm = h.clone();
            for n in &mut h.nics {
                n.proxy_jump = jump(&vm, Some(n));
            }
            h.proxy_jump = match h.nics.iter().find(|n| n.address.is_some() && n.address == h.address) {
                Some(n) => n.proxy_jump.clone(),
                None => jump(&vm, None),
            };
        }
    }

    /// The libvirt host (its name under `hosts:`) that reaches `nic`'s address of VM `vm` on
    /// a network of its own: the host that serves the NIC's network (in a lab across hosts a
    /// stretched network has an address on its serving host's bridge only; elsewhere it is a
    /// bare bridge the host cannot route from), the VM's own host for an external network or
    /// without a NIC. `None` in a lab on one host.
    pub fn reached_from(lab: &Lab, vm: &InvHost, nic: Option<&InvNic>) -> Option<String> {
        let own = vm.host.clone()?;
        let served = nic
            .and_then(|n| lab.networks.values().find(|net| net.name.as_str() == n.network))
            .filter(|net| matches!(net.kind, crate::lab::model::NetworkKind::Managed(_)))
            .map(|net| net.host.to_string());
        Some(served.unwrap_or(own))
    }

    /// The ssh options for `host`: those of `known_hosts::ssh_options` once its key is pinned
    /// ([`Inventory::pin_host_keys`]); else only `LogLevel ERROR`, leaving host keys to
    /// ssh's own defaults (`~/.ssh/known_hosts`, ask on first contact), never unchecked.
    /// With a `jump` (the address's [`InvNic::proxy_jump`]), also `ProxyJump` through it.
    fn ssh_options(&self, host: &InvHost, jump: Option<&String>) -> Vec<(&'static str, String)> {
        let mut options = match (&host.known_hosts, &host.host_key_alias) {
            (Some(file), Some(alias)) => crate::verify::known_hosts::ssh_options(file, alias),
            _ => vec![("LogLevel", "ERROR".into())],
        };
        options.extend(jump.cloned().map(|j| ("ProxyJump", j)));
        options
    }

    /// The host named `vm`, if the lab has it.
    pub fn host(&self, vm: &str) -> Option<&InvHost> {
        self.hosts.iter().find(|h| h.name == vm)
    }

    /// An ssh_config(5) file: `Host VM` on its login address, and `Host VM-ethN` for every
    /// NIC with a proven address, each with the user and the host-key options
    /// ([`Inventory::pin_host_keys`]: every entry of a VM checks its key under the VM's one
    /// alias, whichever address it reaches it on). VMs without a proven address are listed
    /// as comments.
    pub fn ssh_config(&self) -> String {
        let mut s = format!("# topo inventory of lab {}: ssh -F <this file> VM\n", self.lab);
        let entry = |s: &mut String, h: &InvHost, alias: &str, ip: Ipv4Addr, jump: Option<&String>| {
            let _ = writeln!(s, "\nHost {alias}\n  HostName {ip}");
            if let Some(u) = &h.user {
                let _ = writeln!(s, "  User {u}");
            }
            for (k, v) in self.ssh_options(h, jump) {
                let _ = writeln!(s, "  {k} {v}");
            }
        };
        for h in &self.hosts {
            match h.address {
                Some(ip) => entry(&mut s, h, &h.name, ip, h.proxy_jump.as_ref()),
                None => {
                    let _ = writeln!(s, "\n# {}: no proven address", h.name);
                }
            }
            for n in &h.nics {
                if let Some(ip) = n.address {
                    entry(&mut s, h, &format!("{}-{}", h.name, n.nic), ip, n.proxy_jump.as_ref());
                }
            }
        }
        s
    }

    /// hosts(5) lines: `ADDRESS VM-ethN` for every proven NIC, with the VM name (and its
    /// hostname, when it differs) added on its login address.
    pub fn hosts(&self) -> String {
        let mut s = format!("# topo inventory of lab {}\n", self.lab);
        for h in &self.hosts {
            for n in &h.nics {
                let Some(ip) = n.address else { continue };
                let mut names = vec![format!("{}-{}", h.name, n.nic)];
                if h.address == Some(ip) {
                    names.insert(0, h.name.clone());
                    if h.hostname != h.name {
                        names.insert(1, h.hostname.clone());
                    }
                }
                let _ = writeln!(s, "{ip}\t{}", names.join(" "));
            }
        }
        s
    }

    /// An Ansible YAML inventory: every VM under `all.hosts` with `ansible_host`,
    /// `ansible_user` and ssh options, its NICs as `topo_nics`, and one group per network.
    pub fn ansible(&self) -> Result<String, crate::guest::GuestError> {
        let mut hosts = Map::new();
        let mut groups: std::collections::BTreeMap<&str, Map<String, Value>> = Default::default();
        for h in &self.hosts {
            let mut vars = Map::new();
            if let Some(ip) = h.address {
                vars.insert("ansible_host".into(), json!(ip.to_string()));
            }
            if let Some(u) = &h.user {
                vars.insert("ansible_user".into(), json!(u));
            }
            if let Some(host) = &h.host {
                vars.insert("topo_host".into(), json!(host));
            }
            let common: Vec<String> =
                self.ssh_options(h, h.proxy_jump.as_ref()).iter().map(|(k, v)| format!("-o {k}={v}")).collect();
            vars.insert("ansible_ssh_common_args".into(), json!(common.join(" ")));
            let nics: Map<String, Value> = h
                .nics
                .iter()
                .map(|n| {
                    (
                        n.nic.clone(),
                        json!({
                            "network": n.network,
                            "mac": n.mac,
                            "address": n.address.map(|a| a.to_string()),
                            "address6": n.address6.map(|a| a.to_string()),
                        }),
                    )
                })
                .collect();
            vars.insert("topo_nics".into(), Value::Object(nics));
            hosts.insert(h.name.clone(), Value::Object(vars));
            for n in &h.nics {
                groups.entry(&n.network).or_default().insert(h.name.clone(), json!({}));
            }
        }
        let children: Map<String, Value> =
            groups.into_iter().map(|(g, members)| (g.to_string(), json!({ "hosts": members }))).collect();
        let doc = json!({ "all": { "hosts": hosts, "children": children } });
        crate::guest::to_yaml("ansible inventory", &doc)
    }

    /// The inventory as versioned JSON (`format_version` "1").
    pub fn json(&self) -> String {
        let v = json!({ "format_version": "1", "lab": self.lab, "hosts": self.hosts });
        // Invariant: plain data always serialises.
        serde_json::to_string_pretty(&v).expect("inventory JSON serialises")
    }

    /// The `ssh` arguments that log in to `host` on `address`: the host-key options
    /// ([`Inventory::pin_host_keys`]),
    /// `ConnectionAttempts=180` (ssh retries once a second, so up to three minutes: a guest
    /// answers ARP before its sshd listens, and at first boot cloud-init makes the host keys
    /// before sshd starts, which under software emulation on a busy host took more than a
    /// minute), then `-l user` when the VM has one, then the address.
    pub fn ssh_args(&self, host: &InvHost, address: Ipv4Addr) -> Vec<String> {
        let mut args = Vec::new();
        let jump = host
            .nics
            .iter()
            .find(|n| n.address == Some(address))
            .map_or(host.proxy_jump.as_ref(), |n| n.proxy_jump.as_ref());
        for (k, v) in self.ssh_options(host, jump).into_iter().chain([("ConnectionAttempts", "180".to_string())]) {
            args.push("-o".into());
            args.push(format!("{k}={v}"));
        }
        if let Some(u) = &host.user {
            args.push("-l".into());
            args.push(u.clone());
        }
        args.push(address.to_string());
        args
    }
}
