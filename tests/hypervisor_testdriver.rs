//! One scenario suite run against libvirt's test driver (`test:///default`, in-process) and
//! against `MemoryHypervisor`, plus memory-only tests of the double's strict rejections.
//!
//! Known differences of the test driver are written down in `Driver` and asserted exactly,
//! so a change in either implementation shows up here.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use topo::host::Host;
use topo::host::hypervisor::libvirt::LibvirtHypervisor;
use topo::host::hypervisor::memory::MemoryHypervisor;
use topo::host::hypervisor::{HostOp, HvError, HvErrorKind, Hypervisor};
use topo::host::observed::{DomainState, Lease, ObservedMode, OwnerTag};
use topo::host::xml;
use topo::lab::model::*;
use topo::lab::source::SourceFile;

/// What the backend under test does where libvirt's drivers differ.
struct Driver {
    /// The test driver drops `<dnsmasq:options>` (the QEMU/network driver keeps them).
    keeps_dnsmasq_options: bool,
    /// Device hot-plug (the test driver has no attach/detach).
    hotplug: bool,
    /// DHCP leases (the test driver has none: unsupported).
    leases: bool,
    /// Volume upload over a stream (the test driver has no virStorageVolUpload).
    upload: bool,
    /// A bridge-less network gets `virbrN` at define time (the test driver leaves it unset).
    assigns_bridge: bool,
    /// Stopping an inactive network fails (the test driver's `net-destroy` succeeds twice).
    rejects_stop_of_inactive_network: bool,
    /// A network defined without `<mac address>` gets a generated `52:54:00:..` bridge MAC
    /// (libvirt's network driver, `virNetworkSetBridgeMacAddr`).
    generates_bridge_mac: bool,
    /// Undefining a transient domain fails, "cannot undefine transient domain" (the QEMU
    /// driver, qemuDomainUndefineFlags; the test driver lets it pass).
    rejects_undefine_of_transient: bool,
}

const TEST_DRIVER: Driver = Driver {
    keeps_dnsmasq_options: false,
    hotplug: false,
    leases: false,
    upload: false,
    assigns_bridge: false,
    rejects_stop_of_inactive_network: false,
    generates_bridge_mac: false,
    rejects_undefine_of_transient: false,
};
const MEMORY: Driver = Driver {
    keeps_dnsmasq_options: true,
    hotplug: true,
    leases: true,
    upload: true,
    assigns_bridge: true,
    rejects_stop_of_inactive_network: true,
    generates_bridge_mac: true,
    rejects_undefine_of_transient: true,
};

/// The test driver's `default` network, loaded into the memory double so both start alike.
const DEFAULT_NET: &str = include_str!("fixtures/test-driver-default.xml");

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

fn nic(index: usize, network: &NetworkName, m: MacAddr) -> Nic {
    Nic {
        index,
        network: network.clone(),
        mac: m,
        mac_derived: false,
        ip: None,
        ip_source: topo::lab::model::IpSource::Dynamic,
        verify: Verify::Arp,
        impairment: Default::default(),
        netem_span: None,
        rate_span: None,
        span: (0, 0).into(),
    }
}

/// A lab named `t<tag>` with a managed NAT network `net` (bridge `tb<tag>`), a bridge-less
/// isolated network `iso`, the external `default`, and a VM `vm` on `net` and `default`.
fn lab(tag: &str, third_octet: u8) -> Lab {
    let name = LabName::new(&format!("t{tag}")).unwrap();
    let prefix = format!("t{tag}-");
    let net = NetworkName::new("net").unwrap();
    let iso = NetworkName::new("iso").unwrap();
    let default = NetworkName::new("default").unwrap();
    let res =
        Reservation { mac: mac("52:54:00:77:00:10"), ip: Ipv4Addr::new(10, 77, third_octet, 10), host: "vm".into() };
    let managed = ManagedNetwork {
        mode: NetworkMode::Nat,
        subnet: Some(format!("10.77.{third_octet}.0/24").parse().unwrap()),
        gateway: Some(Ipv4Addr::new(10, 77, third_octet, 1)),
        subnet6: None,
        gateway6: None,
        dhcp: Some(DhcpRange {
            start: Ipv4Addr::new(10, 77, third_octet, 100),
            end: Ipv4Addr::new(10, 77, third_octet, 200),
        }),
        bridge: Some(BridgeName::new(&format!("tb{tag}")).unwrap()),
        autostart: false,
        stp: false,
        dhcp_ping: false,
        mtu: None,
        reservations: [(res.mac, res)].into_iter().collect(),
    };
    let isolated = ManagedNetwork {
        mode: NetworkMode::Isolated,
        subnet: None,
        gateway: None,
        subnet6: None,
        gateway6: None,
        dhcp: None,
        bridge: None,
        autostart: false,
        stp: true,
        dhcp_ping: true,
        mtu: None,
        reservations: BTreeMap::new(),
    };
    let mut networks = BTreeMap::new();
    for (n, kind) in [
        (net.clone(), NetworkKind::Managed(managed)),
        (iso.clone(), NetworkKind::Managed(isolated)),
        (default.clone(), NetworkKind::External),
    ] {
        let libvirt_name = match kind {
            NetworkKind::External => n.to_string(),
            NetworkKind::Managed(_) => format!("{prefix}{n}"),
        };
        networks.insert(
            n.clone(),
            Network {
                name: n,
                libvirt_name: LibvirtName::new(&libvirt_name).unwrap(),
                kind,
                declared_subnet: None,
                host: HostName::default_host(),
                instance_host: HostName::default_host(),
                spans: [HostName::default_host()].into(),
                span: (0, 0).into(),
            },
        );
    }
    let vm_name = VmName::new("vm").unwrap();
    let vm = Vm {
        name: vm_name.clone(),
        libvirt_name: LibvirtName::new(&format!("{prefix}vm")).unwrap(),
        virt_type: VirtType::Qemu,
        memory: ByteSize::from_mib(128),
        vcpus: 1,
        state: topo::lab::model::VmState::Running,
        boot: Some(Boot {
            kernel: PathBuf::from("/nonexistent/vmlinuz"),
            initrd: None,
            cmdline: Some("console=ttyS0 quiet".into()),
            kernel_span: (0, 0).into(),
            initrd_span: None,
        }),
        disk: None,
        nics: vec![nic(0, &net, mac("52:54:00:77:00:10")), nic(1, &default, mac("52:54:00:77:00:11"))],
        cloud_init: None,
        host: HostName::default_host(),
        ready: Vec::new(),
        group: None,
        span: (0, 0).into(),
    };
    Lab {
        name,
        name_span: (0, 0).into(),
        prefix,
        networks,
        vms: [(vm_name, vm)].into_iter().collect(),
        groups: Default::default(),
        hosts: Default::default(),
        source: SourceFile::from_text(Path::new("lab.yaml"), String::new()),
        // The whole owner tag round-trips through libvirt, `&` and quotes escaped.
        stamp: topo::lab::ownership::Stamp {
            applied: Some("2026-12-07T01:02:03Z".into()),
            user: Some("o'brien & co".into()),
        },
        take_over: false,
        served: Default::default(),
        wires: Default::default(),
    }
}

fn net_of<'a>(lab: &'a Lab, n: &str) -> &'a Network {
    &lab.networks[&NetworkName::new(n).unwrap()]
}

/// The network XML as the planner renders it (with its spec hash).
fn network_xml(lab: &Lab, net: &Network) -> Result<xml::Rendered, xml::XmlError> {
    let hash = match &net.kind {
        NetworkKind::Managed(m) => topo::plan::fields::spec_hash(&topo::plan::fields::desired_network(m)),
        NetworkKind::External => String::new(),
    };
    xml::network_xml(lab, net, &hash)
}

/// The domain XML as the planner renders it (with its spec hash).
fn domain_xml(lab: &Lab, vm: &Vm, disk: Option<&str>) -> Result<xml::Rendered, xml::XmlError> {
    xml::domain_xml(lab, vm, disk, &topo::plan::fields::spec_hash(&topo::plan::fields::desired_vm(lab, vm)))
}

fn vm_of(lab: &Lab) -> &Vm {
    &lab.vms[&VmName::new("vm").unwrap()]
}

#[track_caller]
fn assert_kind<T: std::fmt::Debug>(r: Result<T, HvError>, kind: HvErrorKind) -> HvError {
    match r {
        Err(e) if e.kind == kind => e,
        other => panic!("expected {kind:?}, got {other:?}"),
    }
}

fn scenario(hv: &dyn Hypervisor, d: &Driver, tag: &str, octet: u8) {
    let lab = lab(tag, octet);
    let net = net_of(&lab, "net");
    let iso = net_of(&lab, "iso");
    let vm = vm_of(&lab);
    let net_name = net.libvirt_name.as_str();
    let vm_name = vm.libvirt_name.as_str();

    // The pre-existing `default` network is observed as not owned.
    let before = hv.observe_libvirt().unwrap();
    let default = &before.networks["default"];
    assert_eq!(default.owner, None);
    assert!(default.active);
    assert_eq!(default.mode, ObservedMode::Known(NetworkMode::Nat));
    assert!(!before.networks.contains_key(net_name));

    // Define a network rendered from the model; everything round-trips.
    let rn = network_xml(&lab, net).unwrap();
    hv.define_network(&rn.xml).unwrap();
    let o = hv.observe_libvirt().unwrap();
    let n = &o.networks[net_name];
    assert!(!n.active && n.persistent && !n.autostart);
    assert!(n.uuid.is_some());
    assert_eq!(
        n.owner,
        Some(OwnerTag {
            lab: format!("t{tag}"),
            resource: "network.net".into(),
            name: net_name.into(),
            spec_hash: rn.spec_hash.clone(),
            prefix: Some(format!("t{tag}-")),
            file: Some(lab.instance().file),
            applied: Some("2026-12-07T01:02:03Z".into()),
            user: Some("o'brien & co".into()),
        })
    );
    assert_eq!(n.mode, ObservedMode::Known(NetworkMode::Nat));
    assert_eq!(n.bridge.as_deref(), Some(format!("tb{tag}").as_str()));
    assert!(!n.stp);
    // The bridge MAC topo derives is kept as given.
    assert_eq!(n.mac, Some(MacAddr::derived_bridge(&lab.name, &net.name)));
    assert_eq!(n.dhcp_ping, !d.keeps_dnsmasq_options);
    let ip = n.ip.as_ref().unwrap();
    assert_eq!((ip.address, ip.prefix), (Ipv4Addr::new(10, 77, octet, 1), 24));
    assert_eq!(ip.dhcp_range.unwrap().start, Ipv4Addr::new(10, 77, octet, 100));
    assert_eq!(ip.hosts.len(), 1);
    assert_eq!((ip.hosts[0].mac, ip.hosts[0].name.as_deref()), (mac("52:54:00:77:00:10"), Some("vm")));

    // Same name again without the UUID: libvirt refuses.
    assert_kind(hv.define_network(&rn.xml), HvErrorKind::Exists);

    // A bridge-less isolated network.
    let ri = network_xml(&lab, iso).unwrap();
    hv.define_network(&ri.xml).unwrap();
    let o = hv.observe_libvirt().unwrap();
    let i = &o.networks[iso.libvirt_name.as_str()];
    assert_eq!(i.mode, ObservedMode::Known(NetworkMode::Isolated));
    assert_eq!(i.ip, None);
    assert!(i.stp && i.dhcp_ping);
    match &i.bridge {
        Some(b) => assert!(d.assigns_bridge && b.starts_with("virbr"), "{b}"),
        None => assert!(!d.assigns_bridge),
    }
    hv.undefine_network(iso.libvirt_name.as_str()).unwrap();
    // Without `<mac>` (as an older topo wrote it): libvirt's network driver generates one.
    let derived = MacAddr::derived_bridge(&lab.name, &iso.name);
    hv.define_network(&ri.xml.replace(&format!("<mac address=\"{derived}\"/>"), "")).unwrap();
    let generated = hv.observe_libvirt().unwrap().networks[iso.libvirt_name.as_str()].mac;
    match generated {
        Some(m) => assert!(d.generates_bridge_mac && m.octets()[..3] == [0x52, 0x54, 0x00], "{m}"),
        None => assert!(!d.generates_bridge_mac),
    }
    hv.undefine_network(iso.libvirt_name.as_str()).unwrap();

    // Start, autostart.
    hv.start_network(net_name).unwrap();
    assert_kind(hv.start_network(net_name), HvErrorKind::AlreadyActive);
    hv.set_network_autostart(net_name, true).unwrap();
    let n = &hv.observe_libvirt().unwrap().networks[net_name];
    assert!(n.active && n.autostart);

    // DHCP host entries, live and in the config.
    let extra =
        Reservation { mac: mac("52:54:00:77:00:20"), ip: Ipv4Addr::new(10, 77, octet, 20), host: "extra".into() };
    let host = xml::dhcp_host_xml(&extra).unwrap();
    hv.update_dhcp_host(net_name, HostOp::Add, &host).unwrap();
    let hosts = hv.observe_libvirt().unwrap().networks[net_name].ip.clone().unwrap().hosts;
    assert_eq!(hosts.iter().map(|h| h.mac).collect::<Vec<_>>(), vec![mac("52:54:00:77:00:10"), extra.mac]);
    assert_kind(hv.update_dhcp_host(net_name, HostOp::Add, &host), HvErrorKind::Exists);
    hv.update_dhcp_host(net_name, HostOp::Delete, &host).unwrap();
    assert_eq!(hv.observe_libvirt().unwrap().networks[net_name].ip.as_ref().unwrap().hosts.len(), 1);
    assert_kind(hv.update_dhcp_host(net_name, HostOp::Delete, &host), HvErrorKind::NotFound);

    // Leases.
    if d.leases {
        assert_eq!(hv.dhcp_leases(net_name).unwrap(), Vec::<Lease>::new());
    } else {
        assert_kind(hv.dhcp_leases(net_name), HvErrorKind::Unsupported);
    }

    // A domain on the lab network and on `default`.
    let rd = domain_xml(&lab, vm, None).unwrap();
    hv.define_domain(&rd.xml).unwrap();
    let dom = hv.observe_libvirt().unwrap().domains[vm_name].clone();
    assert_eq!(dom.state, DomainState::Shutoff);
    assert_eq!(dom.virt_type, "qemu");
    assert_eq!((dom.memory_kib, dom.vcpus), (128 * 1024, 1));
    assert_eq!(dom.kernel.as_deref(), Some("/nonexistent/vmlinuz"));
    assert_eq!(dom.cmdline.as_deref(), Some("console=ttyS0 quiet"));
    assert!(dom.disks.is_empty());
    let ifs: Vec<_> = dom.interfaces.iter().map(|i| (i.mac, i.network.clone(), i.model.clone())).collect();
    assert_eq!(
        ifs,
        vec![
            (Some(vm.nics[0].mac), Some(net_name.to_owned()), Some("virtio".to_owned())),
            (Some(vm.nics[1].mac), Some("default".to_owned()), Some("virtio".to_owned())),
        ]
    );
    assert_eq!(
        dom.owner,
        Some(OwnerTag {
            lab: format!("t{tag}"),
            resource: "vm.vm".into(),
            name: vm_name.into(),
            spec_hash: rd.spec_hash.clone(),
            prefix: Some(format!("t{tag}-")),
            file: Some(lab.instance().file),
            applied: Some("2026-12-07T01:02:03Z".into()),
            user: Some("o'brien & co".into()),
        })
    );
    assert_kind(hv.define_domain(&rd.xml), HvErrorKind::Exists);

    hv.start_domain(vm_name).unwrap();
    assert_eq!(hv.observe_libvirt().unwrap().domains[vm_name].state, DomainState::Running);
    assert_kind(hv.start_domain(vm_name), HvErrorKind::AlreadyActive);
    // A running domain keeps its settings when its config is redefined.
    let mut bigger = vm.clone();
    bigger.memory = "256MiB".parse().unwrap();
    let uuid = hv.observe_libvirt().unwrap().domains[vm_name].uuid.clone();
    hv.define_domain(&xml::with_uuid(&domain_xml(&lab, &bigger, None).unwrap().xml, uuid.as_deref())).unwrap();
    let dom = hv.observe_libvirt().unwrap().domains[vm_name].clone();
    assert_eq!(dom.memory_kib, 256 * 1024);
    assert_eq!(dom.live.as_ref().map(|l| l.memory_kib), Some(128 * 1024), "live settings: {:?}", dom.live);

    // Hot-plug a third NIC.
    let mut vm3 = vm.clone();
    vm3.nics.push(nic(2, &NetworkName::new("net").unwrap(), mac("52:54:00:77:00:12")));
    let iface = xml::interface_xml(&lab, &vm3, &vm3.nics[2]).unwrap();
    if d.hotplug {
        hv.attach_device(vm_name, &iface).unwrap();
        let ifs = hv.observe_libvirt().unwrap().domains[vm_name].interfaces.clone();
        assert_eq!(ifs.len(), 3);
        assert_eq!(ifs[2].mac, Some(vm3.nics[2].mac));
        assert_kind(hv.attach_device(vm_name, &iface), HvErrorKind::Exists);
        hv.detach_device(vm_name, &iface).unwrap();
        assert_eq!(hv.observe_libvirt().unwrap().domains[vm_name].interfaces.len(), 2);
        assert_kind(hv.detach_device(vm_name, &iface), HvErrorKind::NotFound);
    } else {
        assert_kind(hv.attach_device(vm_name, &iface), HvErrorKind::Unsupported);
        assert_kind(hv.detach_device(vm_name, &iface), HvErrorKind::Unsupported);
    }

    // Undefined while running: transient (running, not persistent, the live XML still
    // carries topo's tag); defining the same name and UUID makes it persistent again and
    // keeps it running (virDomainUndefine / virDomainDefineXML on an active domain).
    assert!(hv.observe_libvirt().unwrap().domains[vm_name].persistent);
    hv.undefine_domain(vm_name).unwrap();
    let dom = hv.observe_libvirt().unwrap().domains[vm_name].clone();
    assert!(!dom.persistent);
    assert_eq!(dom.state, DomainState::Running);
    assert_eq!(dom.owner.as_ref().map(|o| o.name.as_str()), Some(vm_name));
    if d.rejects_undefine_of_transient {
        assert_kind(hv.undefine_domain(vm_name), HvErrorKind::InvalidState);
    } else {
        hv.undefine_domain(vm_name).unwrap();
    }
    hv.define_domain(&xml::with_uuid(&domain_xml(&lab, &bigger, None).unwrap().xml, uuid.as_deref())).unwrap();
    let dom = hv.observe_libvirt().unwrap().domains[vm_name].clone();
    assert!(dom.persistent);
    assert_eq!(dom.state, DomainState::Running);
    // A transient domain is gone once it stops (virDomainDestroy).
    hv.undefine_domain(vm_name).unwrap();
    hv.destroy_domain(vm_name).unwrap();
    assert!(!hv.observe_libvirt().unwrap().domains.contains_key(vm_name));
    hv.define_domain(&xml::with_uuid(&domain_xml(&lab, &bigger, None).unwrap().xml, uuid.as_deref())).unwrap();
    hv.start_domain(vm_name).unwrap();

    // Tear down.
    hv.destroy_domain(vm_name).unwrap();
    assert_eq!(hv.observe_libvirt().unwrap().domains[vm_name].state, DomainState::Shutoff);
    assert_eq!(hv.observe_libvirt().unwrap().domains[vm_name].live, None);
    assert_kind(hv.destroy_domain(vm_name), HvErrorKind::NotActive);
    assert_kind(hv.shutdown_domain(vm_name), HvErrorKind::NotActive);
    hv.undefine_domain(vm_name).unwrap();
    hv.stop_network(net_name).unwrap();
    if d.rejects_stop_of_inactive_network {
        assert_kind(hv.stop_network(net_name), HvErrorKind::NotActive);
    } else {
        hv.stop_network(net_name).unwrap();
    }
    hv.undefine_network(net_name).unwrap();
    let after = hv.observe_libvirt().unwrap();
    assert!(!after.networks.contains_key(net_name));
    assert!(!after.domains.contains_key(vm_name));

    // Unknown names.
    let ghost = format!("t{tag}-ghost");
    assert_kind(hv.start_network(&ghost), HvErrorKind::NotFound);
    assert_kind(hv.stop_network(&ghost), HvErrorKind::NotFound);
    assert_kind(hv.undefine_network(&ghost), HvErrorKind::NotFound);
    assert_kind(hv.set_network_autostart(&ghost, true), HvErrorKind::NotFound);
    assert_kind(hv.update_dhcp_host(&ghost, HostOp::Add, &host), HvErrorKind::NotFound);
    assert_kind(hv.dhcp_leases(&ghost), HvErrorKind::NotFound);
    assert_kind(hv.start_domain(&ghost), HvErrorKind::NotFound);
    assert_kind(hv.shutdown_domain(&ghost), HvErrorKind::NotFound);
    assert_kind(hv.destroy_domain(&ghost), HvErrorKind::NotFound);
    assert_kind(hv.undefine_domain(&ghost), HvErrorKind::NotFound);
    assert_kind(hv.attach_device(&ghost, &iface), HvErrorKind::NotFound);
    assert_kind(hv.detach_device(&ghost, &iface), HvErrorKind::NotFound);

    // Malformed XML.
    assert_kind(hv.define_network("<network><name>x</name>"), HvErrorKind::InvalidXml);

    // The overlay pool: looked up by name, made when missing, started when inactive.
    let pool = topo::lab::ownership::OVERLAY_POOL;
    let dir = format!("/nonexistent/topo-{tag}");
    assert!(hv.observe_libvirt().unwrap().pool.is_none());
    hv.ensure_pool(pool, &dir).unwrap();
    hv.ensure_pool(pool, &dir).unwrap(); // idempotent
    let o = hv.observe_libvirt().unwrap();
    let p = o.pool.as_ref().unwrap();
    assert_eq!((p.name.as_str(), p.path.as_str(), p.active), (pool, dir.as_str(), true));
    let spec = topo::host::hypervisor::VolumeSpec {
        pool: pool.into(),
        name: format!("t{tag}-vm-0.aaaaaaaa.qcow2"),
        backing: "/nonexistent/base.qcow2".into(),
        backing_format: Default::default(),
        size: Some(1 << 30),
    };
    hv.create_volume(&spec).unwrap();
    let vols = hv.observe_libvirt().unwrap().volumes;
    assert_eq!(vols[&spec.name].path, format!("{dir}/{}", spec.name));
    assert_kind(hv.create_volume(&spec), HvErrorKind::Exists);
    // A copy made inside libvirtd (virStorageVolCreateXMLFrom): how a seed uploaded under
    // its partial name gets its own. A volume of the copy's name is replaced; a missing
    // source is NotFound.
    let copy = format!("t{tag}-vm-cidata-11111111.aaaaaaaa.img");
    hv.clone_volume(pool, &spec.name, &copy).unwrap();
    assert_eq!(hv.observe_libvirt().unwrap().volumes[&copy].path, format!("{dir}/{copy}"));
    hv.clone_volume(pool, &spec.name, &copy).unwrap();
    assert_kind(hv.clone_volume(pool, "no-such-volume", &copy), HvErrorKind::NotFound);
    hv.delete_volume(pool, &copy).unwrap();
    hv.delete_volume(pool, &spec.name).unwrap();
    assert!(hv.observe_libvirt().unwrap().volumes.is_empty());
    // A missing volume is NotFound, so an interrupted delete counts as done next time.
    assert_kind(hv.delete_volume(pool, &spec.name), HvErrorKind::NotFound);
    assert_kind(hv.delete_volume("no-such-pool", &spec.name), HvErrorKind::NotFound);

    // An uploaded (seed) volume: created with its content; uploading again replaces it
    // (a leftover of an interrupted upload is never trusted); deleted like any other.
    let seed = format!("t{tag}-vm-cidata-00000000.aaaaaaaa.img");
    if !d.upload {
        // Unsupported, and the volume made for the upload is deleted again: no orphan.
        assert_kind(hv.upload_volume(pool, &seed, &[7u8; 4096]), HvErrorKind::Unsupported);
        assert!(hv.observe_libvirt().unwrap().volumes.is_empty());
        return;
    }
    hv.upload_volume(pool, &seed, &[7u8; 4096]).unwrap();
    assert_eq!(hv.observe_libvirt().unwrap().volumes[&seed].path, format!("{dir}/{seed}"));
    hv.upload_volume(pool, &seed, &[8u8; 2048]).unwrap();
    assert_eq!(hv.observe_libvirt().unwrap().volumes.len(), 1);
    // Read back whole (for a plan's seed diff).
    assert_eq!(hv.download_volume(pool, &seed).unwrap(), vec![8u8; 2048]);
    // A copy holds the same bytes.
    let copy = format!("{seed}-copy");
    hv.clone_volume(pool, &seed, &copy).unwrap();
    assert_eq!(hv.download_volume(pool, &copy).unwrap(), vec![8u8; 2048]);
    hv.delete_volume(pool, &copy).unwrap();
    hv.delete_volume(pool, &seed).unwrap();
    assert!(hv.observe_libvirt().unwrap().volumes.is_empty());
    assert_kind(hv.download_volume(pool, &seed), HvErrorKind::NotFound);
    assert_kind(hv.upload_volume("no-such-pool", &seed, b"x"), HvErrorKind::NotFound);
}

#[test]
fn scenario_on_libvirt_test_driver() {
    // One connection for the whole test: the test driver's state lives while it is open.
    let hv = LibvirtHypervisor::connect("test:///default").unwrap();
    assert_eq!(hv.uri(), "test:///default");
    scenario(&hv, &TEST_DRIVER, "lv", 1);
}

#[test]
fn scenario_on_memory_double() {
    let hv = MemoryHypervisor::new().with_network_xml(DEFAULT_NET, true, true).unwrap();
    scenario(&hv, &MEMORY, "mem", 2);
}

/// Releasing a network removes topo's owner tag from its persistent config and changes
/// nothing else; releasing again is done; an unknown network is NotFound. `live_config`:
/// whether the backend shows a running network's new persistent config (the test driver
/// ignores `VIR_NETWORK_XML_INACTIVE` and shows the live definition; the QEMU network
/// driver and the double show the config).
fn release(hv: &dyn Hypervisor, tag: &str, octet: u8, live_config: bool) {
    let lab = lab(tag, octet);
    let net = net_of(&lab, "net");
    let name = net.libvirt_name.as_str();
    hv.define_network(&network_xml(&lab, net).unwrap().xml).unwrap();
    for active in [false, true] {
        if active {
            hv.define_network(&network_xml(&lab, net).unwrap().xml.replace(
                "<name>",
                &format!("<uuid>{}</uuid><name>", hv.observe_libvirt().unwrap().networks[name].uuid.clone().unwrap()),
            ))
            .unwrap();
            hv.start_network(name).unwrap();
            if !live_config {
                hv.release_network(name).unwrap();
                continue;
            }
        }
        let before = hv.observe_libvirt().unwrap().networks[name].clone();
        assert!(before.owner.is_some(), "active {active}");
        hv.release_network(name).unwrap();
        let after = hv.observe_libvirt().unwrap().networks[name].clone();
        assert_eq!(after.owner, None, "active {active}");
        assert_eq!(without_owner(&before), after, "only the tag changes (active {active})");
        hv.release_network(name).unwrap();
        assert_eq!(hv.observe_libvirt().unwrap().networks[name], after);
    }
    assert_kind(hv.release_network("no-such-net"), HvErrorKind::NotFound);
    hv.stop_network(name).unwrap();
    hv.undefine_network(name).unwrap();
}

fn without_owner(n: &topo::host::observed::ObservedNetwork) -> topo::host::observed::ObservedNetwork {
    topo::host::observed::ObservedNetwork { owner: None, ..n.clone() }
}

/// A network's config as `network_config_xml` reads it brings the network back as it was
/// when defined again (apply's way back after a replacement that does not start): same
/// UUID, bridge, subnet and DHCP hosts, added ones included; an unknown network is NotFound.
fn config_round_trip(hv: &dyn Hypervisor, tag: &str, octet: u8) {
    let (first, replacement) = (lab(tag, octet), lab(tag, octet + 1));
    let net = net_of(&first, "net");
    let name = net.libvirt_name.as_str();
    hv.define_network(&network_xml(&first, net).unwrap().xml).unwrap();
    hv.start_network(name).unwrap();
    let host = format!("<host mac='52:54:00:77:00:01' name='extra' ip='10.77.{octet}.77'/>");
    hv.update_dhcp_host(name, HostOp::Add, &host).unwrap();
    let before = hv.observe_libvirt().unwrap().networks[name].clone();
    let config = hv.network_config_xml(name).unwrap();
    hv.stop_network(name).unwrap();
    hv.define_network(
        &network_xml(&replacement, net_of(&replacement, "net"))
            .unwrap()
            .xml
            .replace("<name>", &format!("<uuid>{}</uuid><name>", before.uuid.clone().unwrap())),
    )
    .unwrap();
    hv.define_network(&config).unwrap();
    hv.start_network(name).unwrap();
    assert_eq!(hv.observe_libvirt().unwrap().networks[name], before);
    assert_kind(hv.network_config_xml("no-such-net"), HvErrorKind::NotFound);
    hv.stop_network(name).unwrap();
    hv.undefine_network(name).unwrap();
}

#[test]
fn config_round_trip_on_libvirt_test_driver() {
    let hv = LibvirtHypervisor::connect("test:///default").unwrap();
    config_round_trip(&hv, "cl", 21);
}

#[test]
fn config_round_trip_on_memory_double() {
    let hv = MemoryHypervisor::new().with_network_xml(DEFAULT_NET, true, true).unwrap();
    config_round_trip(&hv, "cm", 23);
}

/// A network's MTU and its NICs' (`mtu:`, here set on the model as the multi-host code does)
/// are accepted and given back by libvirt: the network's `<mtu size>` in its config and live
/// XML, each lab NIC's `<interface><mtu size>` in the domain's, none on the external network's
/// NIC; the config read back for a replacement's way back keeps it.
fn mtu_round_trip(hv: &dyn Hypervisor, tag: &str, octet: u8) {
    let mut lab = lab(tag, octet);
    lab.set_network_mtu(&NetworkName::new("net").unwrap(), Some(1450)).unwrap();
    let net = net_of(&lab, "net");
    let (name, vm) = (net.libvirt_name.as_str(), vm_of(&lab));
    hv.define_network(&network_xml(&lab, net).unwrap().xml).unwrap();
    assert_eq!(hv.observe_libvirt().unwrap().networks[name].mtu, Some(1450), "defined");
    hv.start_network(name).unwrap();
    assert_eq!(hv.observe_libvirt().unwrap().networks[name].mtu, Some(1450), "active");
    let config = hv.network_config_xml(name).unwrap();
    assert_eq!(xml::parse_network(&config, xml::NetworkFlags::default()).unwrap().mtu, Some(1450), "{config}");
    hv.define_domain(&domain_xml(&lab, vm, None).unwrap().xml).unwrap();
    let mtus = |hv: &dyn Hypervisor| -> Vec<(Option<MacAddr>, Option<u32>)> {
        let o = hv.observe_libvirt().unwrap();
        o.domains[vm.libvirt_name.as_str()].interfaces.iter().map(|i| (i.mac, i.mtu)).collect()
    };
    let want = vec![(Some(vm.nics[0].mac), Some(1450)), (Some(vm.nics[1].mac), None)];
    assert_eq!(mtus(hv), want, "net, then default");
    hv.start_domain(vm.libvirt_name.as_str()).unwrap();
    assert_eq!(mtus(hv), want, "running");
    hv.destroy_domain(vm.libvirt_name.as_str()).unwrap();
    hv.undefine_domain(vm.libvirt_name.as_str()).unwrap();
    hv.stop_network(name).unwrap();
    hv.undefine_network(name).unwrap();
}

#[test]
fn mtu_round_trip_on_libvirt_test_driver() {
    let hv = LibvirtHypervisor::connect("test:///default").unwrap();
    mtu_round_trip(&hv, "ml", 31);
}

#[test]
fn mtu_round_trip_on_memory_double() {
    let hv = MemoryHypervisor::new().with_network_xml(DEFAULT_NET, true, true).unwrap();
    mtu_round_trip(&hv, "mm", 32);
}

#[test]
fn release_on_libvirt_test_driver() {
    let hv = LibvirtHypervisor::connect("test:///default").unwrap();
    release(&hv, "rl", 11, false);
}

#[test]
fn release_on_memory_double() {
    let hv = MemoryHypervisor::new().with_network_xml(DEFAULT_NET, true, true).unwrap();
    release(&hv, "rm", 12, true);
}

#[test]
fn connect_failure_has_a_hint() {
    let e = LibvirtHypervisor::connect("test:///nonexistent/node.xml").unwrap_err();
    assert_eq!(e.kind, HvErrorKind::Connect);
    assert!(e.hint.as_deref().unwrap().contains("LIBVIRT_DEFAULT_URI"), "{e:?}");
}

// ---- memory double only -----------------------------------------------------------------

fn mem_with_lab(tag: &str) -> (MemoryHypervisor, Lab) {
    let lab = lab(tag, 3);
    let hv = MemoryHypervisor::new().with_network_xml(DEFAULT_NET, true, false).unwrap();
    (hv, lab)
}

#[test]
fn memory_redefine_needs_matching_uuid_and_replaces_config() {
    let (hv, lab) = mem_with_lab("a");
    let net = net_of(&lab, "net");
    hv.define_network(&network_xml(&lab, net).unwrap().xml).unwrap();
    hv.start_network(net.libvirt_name.as_str()).unwrap();
    let uuid = hv.observe_libvirt().unwrap().networks[net.libvirt_name.as_str()].uuid.clone().unwrap();

    // Changed spec, UUID carried over: the persistent config is replaced, state kept.
    let mut lab2 = lab.clone();
    if let NetworkKind::Managed(m) = &mut lab2.networks.get_mut(&NetworkName::new("net").unwrap()).unwrap().kind {
        m.stp = true;
    }
    let x = network_xml(&lab2, net_of(&lab2, "net")).unwrap();
    let with_uuid = x.xml.replacen("<name>", &format!("<uuid>{uuid}</uuid>\n  <name>"), 1);
    hv.define_network(&with_uuid).unwrap();
    let n = &hv.observe_libvirt().unwrap().networks[net.libvirt_name.as_str()];
    assert!(n.stp && n.active);
    assert_eq!(n.owner.as_ref().unwrap().spec_hash, x.spec_hash);

    // Another name with that UUID.
    let clash = with_uuid.replace(&format!("<name>{}</name>", net.libvirt_name), "<name>other</name>");
    let e = assert_kind(hv.define_network(&clash), HvErrorKind::Exists);
    assert!(e.message.contains("already defined with uuid"), "{e}");
}

/// Only the networks whose bridge libvirt makes (forward none, nat, route, open) take a
/// `<mac address>`; the others refuse it (src/network/bridge_driver.c `networkValidate`:
/// "Unsupported <mac> element in network ... with forward mode='bridge'") and get none.
#[test]
fn memory_bridge_mac_only_where_libvirt_makes_the_bridge() {
    let hv = MemoryHypervisor::new();
    let bridged = "<network><name>lan</name><forward mode='bridge'/><bridge name='br0'/>MAC</network>";
    let e = assert_kind(
        hv.define_network(&bridged.replace("MAC", "<mac address='52:54:00:01:02:03'/>")),
        HvErrorKind::InvalidXml,
    );
    assert!(e.message.contains("Unsupported <mac> element"), "{e}");
    hv.define_network(&bridged.replace("MAC", "")).unwrap();
    assert_eq!(hv.observe_libvirt().unwrap().networks["lan"].mac, None);
    hv.define_network("<network><name>nat</name><forward mode='nat'/><mac address='52:54:00:01:02:03'/></network>")
        .unwrap();
    assert_eq!(hv.observe_libvirt().unwrap().networks["nat"].mac, Some(mac("52:54:00:01:02:03")));
}

#[test]
fn memory_bridge_names() {
    let (hv, lab) = mem_with_lab("b");
    // `default` holds virbr0: a bridge-less network gets virbr1.
    let iso = net_of(&lab, "iso");
    hv.define_network(&network_xml(&lab, iso).unwrap().xml).unwrap();
    assert_eq!(hv.observe_libvirt().unwrap().networks[iso.libvirt_name.as_str()].bridge.as_deref(), Some("virbr1"));
    // A second network naming a bridge in use is refused at define time (as libvirt does).
    let x = network_xml(&lab, net_of(&lab, "net")).unwrap().xml.replace("name=\"tbb\"", "name=\"virbr1\"");
    let e = assert_kind(hv.define_network(&x), HvErrorKind::Exists);
    assert!(e.message.contains("virbr1") && e.message.contains(iso.libvirt_name.as_str()), "{e}");
    // Freed names are reused.
    hv.undefine_network(iso.libvirt_name.as_str()).unwrap();
    hv.define_network(&x).unwrap();
    let other = "<network><name>y</name></network>";
    hv.define_network(other).unwrap();
    assert_eq!(hv.observe_libvirt().unwrap().networks["y"].bridge.as_deref(), Some("virbr2"));
}

#[test]
fn memory_networks_in_use_by_running_domains() {
    let (hv, lab) = mem_with_lab("c");
    let net = net_of(&lab, "net");
    let vm = vm_of(&lab);
    hv.define_network(&network_xml(&lab, net).unwrap().xml).unwrap();
    // libvirt accepts a domain on a network that is defined but not active ...
    hv.define_domain(&domain_xml(&lab, vm, None).unwrap().xml).unwrap();
    // ... and refuses to start it.
    let e = assert_kind(hv.start_domain(vm.libvirt_name.as_str()), HvErrorKind::InvalidState);
    assert!(e.message.contains(&format!("network '{}' is not active", net.libvirt_name)), "{e}");
    hv.start_network(net.libvirt_name.as_str()).unwrap();
    hv.start_domain(vm.libvirt_name.as_str()).unwrap();

    // Stopping it is allowed, as in libvirt, and cuts the domain's NICs on it until they
    // are re-plugged. (Undefining it is allowed too: see
    // memory_undefine_network_under_a_running_domain.)
    let on_net: Vec<_> =
        vm.nics.iter().filter(|n| n.network == net.name).map(|n| (vm.libvirt_name.to_string(), n.mac)).collect();
    assert!(!on_net.is_empty());
    hv.stop_network(net.libvirt_name.as_str()).unwrap();
    assert_eq!(hv.cut_nics(), on_net);
    hv.start_network(net.libvirt_name.as_str()).unwrap();
    for nic in vm.nics.iter().filter(|n| n.network == net.name) {
        let x = xml::interface_xml(&lab, vm, nic).unwrap();
        hv.detach_device(vm.libvirt_name.as_str(), &x).unwrap();
        hv.attach_device(vm.libvirt_name.as_str(), &x).unwrap();
    }
    assert!(hv.cut_nics().is_empty());
    hv.shutdown_domain(vm.libvirt_name.as_str()).unwrap();
    hv.stop_network(net.libvirt_name.as_str()).unwrap();
    hv.undefine_network(net.libvirt_name.as_str()).unwrap();
    // The domain's network is now missing.
    assert_kind(hv.start_domain(vm.libvirt_name.as_str()), HvErrorKind::NotFound);
}

#[test]
fn memory_domain_device_rules() {
    let (hv, lab) = mem_with_lab("d");
    let vm = vm_of(&lab);
    let mut dup = vm.clone();
    dup.nics[1].mac = dup.nics[0].mac;
    let e = assert_kind(hv.define_domain(&domain_xml(&lab, &dup, None).unwrap().xml), HvErrorKind::InvalidXml);
    assert!(e.message.contains("duplicate MAC"), "{e}");

    hv.define_domain(&domain_xml(&lab, vm, None).unwrap().xml).unwrap();
    // Attaching a NIC whose MAC the domain has; detaching one it lacks.
    let same = xml::interface_xml(&lab, vm, &vm.nics[1]).unwrap();
    assert_kind(hv.attach_device(vm.libvirt_name.as_str(), &same), HvErrorKind::Exists);
    let mut other = vm.nics[1].clone();
    other.mac = mac("52:54:00:77:00:99");
    let absent = xml::interface_xml(&lab, vm, &other).unwrap();
    assert_kind(hv.detach_device(vm.libvirt_name.as_str(), &absent), HvErrorKind::NotFound);
    // Shut-off domain: config-only attach works even though `net` is not defined.
    hv.attach_device(vm.libvirt_name.as_str(), &absent).unwrap();
    hv.detach_device(vm.libvirt_name.as_str(), &same).unwrap();
    let macs: Vec<_> =
        hv.observe_libvirt().unwrap().domains[vm.libvirt_name.as_str()].interfaces.iter().map(|i| i.mac).collect();
    assert_eq!(macs, vec![Some(vm.nics[0].mac), Some(other.mac)]);
    assert_kind(hv.attach_device(vm.libvirt_name.as_str(), "<disk type='file'/>"), HvErrorKind::InvalidXml);
}

#[test]
fn memory_dhcp_host_conflicts() {
    let (hv, lab) = mem_with_lab("e");
    let net = net_of(&lab, "net");
    hv.define_network(&network_xml(&lab, net).unwrap().xml).unwrap();
    // Same IP as the model's reservation, other MAC.
    let r = Reservation { mac: mac("52:54:00:77:00:30"), ip: Ipv4Addr::new(10, 77, 3, 10), host: "x".into() };
    let e = assert_kind(
        hv.update_dhcp_host(net.libvirt_name.as_str(), HostOp::Add, &xml::dhcp_host_xml(&r).unwrap()),
        HvErrorKind::Exists,
    );
    assert!(e.message.contains("existing dhcp host entry"), "{e}");
    // A network without <ip> has nowhere to put hosts.
    hv.define_network(&network_xml(&lab, net_of(&lab, "iso")).unwrap().xml).unwrap();
    let r2 = Reservation { mac: mac("52:54:00:77:00:31"), ip: Ipv4Addr::new(10, 77, 3, 31), host: "y".into() };
    assert_kind(
        hv.update_dhcp_host("te-iso", HostOp::Add, &xml::dhcp_host_xml(&r2).unwrap()),
        HvErrorKind::InvalidState,
    );
}

/// libvirt's networkUndefine does not look at the domains using a network: an active
/// network becomes transient and keeps running under them.
#[test]
fn memory_undefine_network_under_a_running_domain() {
    let (hv, lab) = mem_with_lab("h");
    let net = net_of(&lab, "net");
    let vm = vm_of(&lab);
    hv.define_network(&network_xml(&lab, net).unwrap().xml).unwrap();
    hv.start_network(net.libvirt_name.as_str()).unwrap();
    hv.define_domain(&domain_xml(&lab, vm, None).unwrap().xml).unwrap();
    hv.start_domain(vm.libvirt_name.as_str()).unwrap();
    hv.undefine_network(net.libvirt_name.as_str()).unwrap();
    let n = hv.observe_libvirt().unwrap().networks[net.libvirt_name.as_str()].clone();
    assert!(n.active && !n.persistent);
}

#[test]
fn memory_undefine_active_network_leaves_it_transient() {
    let (hv, lab) = mem_with_lab("f");
    let net = net_of(&lab, "net");
    hv.define_network(&network_xml(&lab, net).unwrap().xml).unwrap();
    hv.start_network(net.libvirt_name.as_str()).unwrap();
    hv.undefine_network(net.libvirt_name.as_str()).unwrap();
    let n = hv.observe_libvirt().unwrap().networks[net.libvirt_name.as_str()].clone();
    assert!(n.active && !n.persistent);
    assert_kind(hv.undefine_network(net.libvirt_name.as_str()), HvErrorKind::InvalidState);
    hv.stop_network(net.libvirt_name.as_str()).unwrap();
    assert!(!hv.observe_libvirt().unwrap().networks.contains_key(net.libvirt_name.as_str()));
}

#[test]
fn memory_fault_injection_and_call_log() {
    let (hv, lab) = mem_with_lab("g");
    let net = net_of(&lab, "net");
    let name = net.libvirt_name.as_str();
    let boom = HvError {
        op: "start network".into(),
        object: name.into(),
        message: "injected".into(),
        kind: HvErrorKind::Other,
        hint: None,
    };
    hv.fail_on("start_network", name, boom);
    hv.define_network(&network_xml(&lab, net).unwrap().xml).unwrap();
    let e = assert_kind(hv.start_network(name), HvErrorKind::Other);
    assert_eq!(e.message, "injected");
    assert!(!hv.observe_libvirt().unwrap().networks[name].active, "a failed call changes nothing");
    hv.start_network(name).unwrap(); // the fault fired once
    assert_eq!(
        hv.calls(),
        vec![
            format!("define_network {name}"),
            format!("start_network {name}"),
            "observe".to_owned(),
            format!("start_network {name}"),
        ]
    );
    hv.clear_calls();
    assert!(hv.calls().is_empty());
}

#[test]
fn memory_leases_come_from_the_fixture() {
    let (hv, _lab) = mem_with_lab("h");
    let lease = Lease {
        network: "default".into(),
        mac: mac("52:54:00:77:00:40"),
        ip: Ipv4Addr::new(192, 168, 122, 40),
        hostname: Some("h".into()),
        expiry: 1_700_000_000,
    };
    hv.set_leases("default", vec![lease.clone()]);
    assert_eq!(hv.dhcp_leases("default").unwrap(), vec![lease]);
}

#[test]
fn memory_fixture_domains() {
    let lab = lab("i", 4);
    let vm = vm_of(&lab);
    let hv = MemoryHypervisor::new().with_domain_xml(&domain_xml(&lab, vm, None).unwrap().xml, true).unwrap();
    assert!(hv.calls().is_empty(), "fixtures are not logged");
    assert_eq!(hv.observe_libvirt().unwrap().domains[vm.libvirt_name.as_str()].state, DomainState::Running);
    // Undefining a running domain keeps it as transient until it stops.
    hv.undefine_domain(vm.libvirt_name.as_str()).unwrap();
    assert!(hv.observe_libvirt().unwrap().domains.contains_key(vm.libvirt_name.as_str()));
    hv.destroy_domain(vm.libvirt_name.as_str()).unwrap();
    assert!(!hv.observe_libvirt().unwrap().domains.contains_key(vm.libvirt_name.as_str()));
}

// ---- libvirt's own schemas ----------------------------------------------------------------

/// Checks XML against libvirt's RNG schemas (`virt-xml-validate` from libvirt-clients, which
/// runs `xmllint` from libxml2-utils). `None`, saying so, where either is not installed.
fn schema_check(kind: &str, xml: &str) -> Option<Result<(), String>> {
    for tool in ["virt-xml-validate", "xmllint"] {
        if std::process::Command::new(tool).arg("--version").output().is_err() {
            eprintln!("{tool} not installed: schema check skipped");
            return None;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{kind}.xml"));
    std::fs::write(&path, xml).unwrap();
    let out = std::process::Command::new("virt-xml-validate").arg(&path).arg(kind).output().unwrap();
    Some(if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    })
}

#[track_caller]
fn validate(kind: &str, xml: &str) {
    if let Some(Err(e)) = schema_check(kind, xml) {
        panic!("{kind} XML fails libvirt's schema:\n{e}\n{xml}");
    }
}

#[test]
fn rendered_xml_passes_libvirt_schemas() {
    // The check can fail: a wrong attribute is caught.
    if let Some(r) = schema_check("network", "<network><name>x</name><bridge stp='maybe'/></network>") {
        assert!(r.is_err());
    }
    let lab = lab("s", 5);
    let vm = vm_of(&lab);
    validate("network", &network_xml(&lab, net_of(&lab, "net")).unwrap().xml);
    validate("network", &network_xml(&lab, net_of(&lab, "iso")).unwrap().xml);
    let mut jumbo = lab.clone();
    jumbo.set_network_mtu(&NetworkName::new("net").unwrap(), Some(9000)).unwrap();
    validate("network", &network_xml(&jumbo, net_of(&jumbo, "net")).unwrap().xml);
    validate("domain", &domain_xml(&jumbo, vm_of(&jumbo), None).unwrap().xml);
    validate("domain", &domain_xml(&lab, vm, Some("/var/lib/topo/ts-vm.qcow2")).unwrap().xml);
    let mut bare = vm.clone();
    bare.boot = None;
    bare.nics.clear();
    validate("domain", &domain_xml(&lab, &bare, None).unwrap().xml);
}

/// A lab's files checked through libvirt's storage API, as for another host: the pools
/// are listed, the pool over a file's folder refreshed, each path looked up
/// (virStorageVolLookupByPath). A path no pool holds is `NotFound`, libvirt's
/// VIR_ERR_NO_STORAGE_VOL. `add_file` puts a qcow2 file into `default-pool` (the test
/// driver's pool at `/default-pool`).
fn paths_scenario(hv: &dyn Hypervisor, add_file: &dyn Fn(&str)) {
    let pools = hv.storage_pools().unwrap();
    let dp = pools.iter().find(|p| p.name == "default-pool").expect("the test driver's default-pool");
    assert!(dp.active);
    assert_eq!(dp.path.as_deref(), Some("/default-pool"));
    assert_kind(hv.volume_by_path("/default-pool/base.qcow2"), HvErrorKind::NotFound);
    add_file("base.qcow2");
    hv.refresh_pool("default-pool").unwrap();
    assert_kind(hv.refresh_pool("no-such-pool"), HvErrorKind::NotFound);
    let v = hv.volume_by_path("/default-pool/base.qcow2").unwrap();
    assert_eq!((v.pool.as_str(), v.name.as_str(), v.format.as_deref()), ("default-pool", "base.qcow2", Some("qcow2")));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lab.yaml");
    let text = |format: &str| {
        format!(
            "apiVersion: topo/v1\nname: paths\nvms:\n  v:\n    hypervisor: qemu\n    boot:\n      kernel: /default-pool/vmlinuz\n      initrd: /srv/nowhere/initrd.gz\n    disk:\n      image: /default-pool/base.qcow2\n      format: {format}\n"
        )
    };
    let load = |format: &str| {
        std::fs::write(&file, text(format)).unwrap();
        topo::lab::validate::load_with(&SourceFile::read(&file).unwrap(), topo::lab::validate::Files::NotChecked)
            .unwrap()
    };
    let lab = load("qcow2");
    let paths: Vec<String> =
        lab.vms.values().flat_map(|v| v.host_files().into_iter().map(|(_, p, _)| p.display().to_string())).collect();
    let mut observed = hv.observe_libvirt().unwrap();
    observed.paths = topo::host::hypervisor::observe_paths(hv, paths.iter().map(String::as_str)).unwrap();
    use topo::host::observed::PathFact;
    assert_eq!(
        observed.paths,
        BTreeMap::from([
            (
                "/default-pool/base.qcow2".to_owned(),
                PathFact::Volume { pool: "default-pool".into(), format: Some("qcow2".into()), capacity: Some(1 << 20) }
            ),
            ("/default-pool/vmlinuz".to_owned(), PathFact::Missing { pool: "default-pool".into() }),
            ("/srv/nowhere/initrd.gz".to_owned(), PathFact::Unchecked { inactive_pool: None }),
        ])
    );
    // The missing kernel is refused before anything is touched, located in the file; the
    // initrd in no pool is a warning.
    let codes = |r: Result<topo::plan::Plan, topo::plan::PlanError>| match r {
        Err(topo::plan::PlanError::Refused { problems, .. }) => {
            problems.iter().map(|p| p.code.as_str()).collect::<Vec<_>>()
        }
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(codes(topo::plan::plan(&lab, &observed, &hv.uri())), ["topo::plan::missing_file"]);
    let w: Vec<_> = topo::plan::paths::warnings(&lab, &observed).iter().map(|p| p.code.as_str()).collect();
    assert_eq!(w, ["topo::plan::file_unchecked"]);
    // Declared raw while the pool reports qcow2: a warning, not a refusal.
    let raw = load("raw");
    let w: Vec<_> = topo::plan::paths::warnings(&raw, &observed).iter().map(|p| p.code.as_str()).collect();
    assert_eq!(w, ["topo::plan::file_unchecked", "topo::plan::image_format"]);
}

#[test]
fn paths_through_storage_pools_on_libvirt_test_driver() {
    let hv = LibvirtHypervisor::connect("test:///default").unwrap();
    let add = |name: &str| {
        hv.create_volume(&topo::host::hypervisor::VolumeSpec {
            pool: "default-pool".into(),
            name: name.into(),
            backing: "/nonexistent/base.qcow2".into(),
            backing_format: Default::default(),
            size: Some(1 << 20),
        })
        .unwrap()
    };
    paths_scenario(&hv, &add);
}

#[test]
fn paths_through_storage_pools_on_memory_double() {
    let hv = MemoryHypervisor::new().with_storage_pool("default-pool", "/default-pool", true, &[]);
    paths_scenario(&hv, &|name| hv.set_pool_file("default-pool", name, Some(("qcow2", Some(1 << 20)))));
}

/// A directory pool lists a file copied into its folder only after a refresh, as libvirt's
/// dir backend does (virStorageVolLookupByPath searches the pool's volume list); a pool that
/// is not started is not searched.
#[test]
fn memory_pool_lists_files_as_of_its_last_refresh() {
    let hv = MemoryHypervisor::new()
        .with_storage_pool("images", "/srv/images/", true, &[("a.img", "raw")])
        .with_storage_pool("off", "/srv/off", false, &[("b.img", "raw")]);
    assert_eq!(hv.volume_by_path("/srv/images/a.img").unwrap().format.as_deref(), Some("raw"));
    hv.set_pool_file("images", "c.qcow2", Some(("qcow2", None)));
    hv.set_pool_file("images", "a.img", None);
    assert_kind(hv.volume_by_path("/srv/images/c.qcow2"), HvErrorKind::NotFound);
    assert!(hv.volume_by_path("/srv/images/a.img").is_ok(), "still listed until the refresh");
    hv.refresh_pool("images").unwrap();
    assert!(hv.volume_by_path("/srv/images/c.qcow2").is_ok());
    assert_kind(hv.volume_by_path("/srv/images/a.img"), HvErrorKind::NotFound);
    assert_kind(hv.volume_by_path("/srv/off/b.img"), HvErrorKind::NotFound);
    assert_kind(hv.refresh_pool("off"), HvErrorKind::InvalidState);
    let facts = topo::host::hypervisor::observe_paths(&hv, ["/srv/off/b.img", "/srv/images/sub/d.img"]).unwrap();
    use topo::host::observed::PathFact;
    assert_eq!(facts["/srv/off/b.img"], PathFact::Unchecked { inactive_pool: Some("off".into()) });
    // A subfolder is not the pool's folder: a dir pool does not look into it.
    assert_eq!(facts["/srv/images/sub/d.img"], PathFact::Unchecked { inactive_pool: None });
}

/// Link impairment through the real virt code on the test driver: the live rate of the
/// running `test` domain's NIC goes through virDomainSetInterfaceParameters (set, removed,
/// and refused for a MAC the domain does not have), and netem is refused: the test driver's domains
/// have no taps on this machine.
#[test]
fn link_impairment_on_libvirt_test_driver() {
    let hv = LibvirtHypervisor::connect("test:///default").unwrap();
    let o = hv.observe_libvirt().unwrap();
    let mac = o.domains["test"].interfaces.iter().find_map(|i| i.mac);
    let rate = topo::lab::impair::Rate::parse("10Mbit").ok();
    if let Some(mac) = mac {
        hv.set_bandwidth("test", mac, rate).unwrap();
        hv.set_bandwidth("test", mac, None).unwrap();
        let other = MacAddr::new([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]).unwrap();
        let e = hv.set_bandwidth("test", other, rate).unwrap_err();
        assert!(e.message.contains("52:54:00:ab:cd:ef"), "{e:?}");
        let n = topo::lab::impair::Netem { delay: topo::lab::impair::Micros::parse("50ms").ok(), ..Default::default() };
        let e = assert_kind(Host::libvirt(&hv).set_netem("test", mac, Some(&n)), HvErrorKind::Unsupported);
        assert!(e.message.contains("not a local host"), "{e:?}");
    } else {
        panic!("the test driver's `test` domain has a NIC: {:?}", o.domains["test"].interfaces);
    }
    assert_kind(hv.set_bandwidth("no-such-domain", mac.unwrap(), rate), HvErrorKind::NotFound);
}

/// Waiting for a domain wakes on libvirt's domain events: the test driver delivers a
/// lifecycle event when a domain is destroyed from another thread, the connection counts it,
/// and `wait_until` sees the domain off.
#[test]
fn a_wait_for_a_domain_wakes_on_libvirt_events() {
    let hv = LibvirtHypervisor::connect("test:///default").unwrap();
    let lab = lab("ev", 40);
    let vm = vm_of(&lab);
    hv.define_domain(&domain_xml(&lab, vm, None).unwrap().xml).unwrap();
    hv.start_domain(vm.libvirt_name.as_str()).unwrap();
    let before = hv.domain_events_seen().expect("the test driver delivers domain events");
    let off = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            hv.destroy_domain(vm.libvirt_name.as_str()).unwrap();
        });
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        hv.wait_until(Some(until), &mut || Ok(hv.domain_state(vm.libvirt_name.as_str())? == DomainState::Shutoff))
            .unwrap()
    });
    assert!(off, "the domain went off within the wait");
    // The event may be dispatched just after the state changed: wait for it, bounded.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    assert!(hv.wait_until(Some(until), &mut || Ok(hv.domain_events_seen() > Some(before))).unwrap(), "an event came");
    // A wait that `done` never ends gives up at its deadline.
    let until = std::time::Instant::now() + std::time::Duration::from_millis(30);
    assert!(!hv.wait_until(Some(until), &mut || Ok(false)).unwrap());
    hv.undefine_domain(vm.libvirt_name.as_str()).unwrap();
}
