//! Round-trip tests: model -> XML -> observed, and XML as libvirt 9.0 prints it -> observed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::*;
use crate::host::observed::{DomainState, ObservedHost, ObservedIp6, ObservedMode};
use crate::lab::model::*;
use crate::lab::source::SourceFile;

/// The network XML with the planner's spec hash (what the planner renders).
fn network_xml(lab: &Lab, net: &Network) -> Result<Rendered, XmlError> {
    let hash = match &net.kind {
        NetworkKind::Managed(m) => crate::plan::fields::spec_hash(&crate::plan::fields::desired_network(m)),
        NetworkKind::External => String::new(),
    };
    super::network_xml(lab, net, &hash)
}

/// The domain XML with the planner's spec hash.
fn domain_xml(lab: &Lab, vm: &Vm, disk: Option<&str>) -> Result<Rendered, XmlError> {
    super::domain_xml(lab, vm, disk, &crate::plan::fields::spec_hash(&crate::plan::fields::desired_vm(lab, vm)))
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

fn managed(mode: NetworkMode) -> ManagedNetwork {
    let r1 = Reservation { mac: mac("52:54:00:00:00:12"), ip: Ipv4Addr::new(10, 0, 5, 12), host: "deb2".into() };
    let r0 = Reservation { mac: mac("52:54:00:00:00:02"), ip: Ipv4Addr::new(10, 0, 5, 2), host: "deb1".into() };
    ManagedNetwork {
        mode,
        subnet: Some("10.0.5.0/24".parse().unwrap()),
        subnet6: None,
        gateway6: None,
        gateway: Some(Ipv4Addr::new(10, 0, 5, 1)),
        dhcp: Some(DhcpRange { start: Ipv4Addr::new(10, 0, 5, 100), end: Ipv4Addr::new(10, 0, 5, 200) }),
        bridge: Some(BridgeName::new("topobr5").unwrap()),
        autostart: true,
        stp: false,
        dhcp_ping: false,
        mtu: None,
        reservations: [(r1.mac, r1), (r0.mac, r0)].into_iter().collect(),
    }
}

fn lab_with(net: ManagedNetwork) -> Lab {
    let name = LabName::new("seedlab").unwrap();
    let local = NetworkName::new("local_net").unwrap();
    let ext = NetworkName::new("default").unwrap();
    let mut networks = BTreeMap::new();
    networks.insert(
        local.clone(),
        Network {
            name: local.clone(),
            libvirt_name: crate::lab::model::LibvirtName::new("seedlab-local_net").unwrap(),
            kind: NetworkKind::Managed(net),
            declared_subnet: None,
            host: HostName::default_host(),
            instance_host: HostName::default_host(),
            spans: [HostName::default_host()].into(),
            span: (0, 0).into(),
        },
    );
    networks.insert(
        ext.clone(),
        Network {
            name: ext.clone(),
            libvirt_name: crate::lab::model::LibvirtName::new("default").unwrap(),
            kind: NetworkKind::External,
            declared_subnet: None,
            host: HostName::default_host(),
            instance_host: HostName::default_host(),
            spans: [HostName::default_host()].into(),
            span: (0, 0).into(),
        },
    );
    let vm_name = VmName::new("deb1").unwrap();
    let nics = vec![
        Nic {
            index: 0,
            network: local,
            mac: mac("52:54:00:00:00:02"),
            mac_derived: false,
            ip: Some(Ipv4Addr::new(10, 0, 5, 2)),
            ip_source: crate::lab::model::IpSource::Written,
            verify: Verify::Arp,
            impairment: Default::default(),
            netem_span: None,
            rate_span: None,
            span: (0, 0).into(),
        },
        Nic {
            index: 1,
            network: ext,
            mac: MacAddr::derived(&name, &vm_name, 1),
            mac_derived: true,
            ip: None,
            ip_source: crate::lab::model::IpSource::Dynamic,
            verify: Verify::Arp,
            impairment: Default::default(),
            netem_span: None,
            rate_span: None,
            span: (0, 0).into(),
        },
    ];
    let vm = Vm {
        name: vm_name.clone(),
        libvirt_name: crate::lab::model::LibvirtName::new("seedlab-deb1").unwrap(),
        virt_type: VirtType::Qemu,
        memory: ByteSize::from_mib(128),
        vcpus: 2,
        state: crate::lab::model::VmState::Running,
        boot: Some(Boot {
            kernel: PathBuf::from("/labs/img/vmlinuz"),
            initrd: Some(PathBuf::from("/labs/img/initrd.gz")),
            cmdline: Some("console=ttyS0 quiet msg=\"a<b & c>'d'\"".into()),
            kernel_span: (0, 0).into(),
            initrd_span: None,
        }),
        disk: None,
        nics,
        cloud_init: None,
        host: HostName::default_host(),
        ready: Vec::new(),
        group: None,
        span: (0, 0).into(),
    };
    Lab {
        name,
        name_span: (0, 0).into(),
        prefix: "seedlab-".into(),
        networks,
        vms: [(vm_name, vm)].into_iter().collect(),
        groups: Default::default(),
        hosts: Default::default(),
        source: SourceFile::from_text(Path::new("lab.yaml"), String::new()),
        stamp: Default::default(),
        take_over: false,
        served: Default::default(),
        wires: Default::default(),
    }
}

fn local_net(lab: &Lab) -> &Network {
    &lab.networks[&NetworkName::new("local_net").unwrap()]
}

fn deb1(lab: &Lab) -> &Vm {
    &lab.vms[&VmName::new("deb1").unwrap()]
}

#[test]
fn network_round_trip_all_fields() {
    let lab = lab_with(managed(NetworkMode::Nat));
    let r = network_xml(&lab, local_net(&lab)).unwrap();
    let flags = NetworkFlags { active: true, persistent: true, autostart: false };
    let o = parse_network(&r.xml, flags).unwrap();
    assert_eq!(o.name, "seedlab-local_net");
    assert_eq!(o.uuid, None);
    assert!(o.active && o.persistent && !o.autostart);
    assert_eq!(o.mode, ObservedMode::Known(NetworkMode::Nat));
    assert_eq!(o.bridge.as_deref(), Some("topobr5"));
    assert!(!o.stp);
    assert!(!o.dhcp_ping);
    // The bridge MAC topo derives (not libvirt's random one): SHA-256 formula in
    // docs/lab-file.md, value computed with Python hashlib.
    assert_eq!(o.mac, Some(mac("52:54:01:e5:2b:1e")));
    let ip = o.ip.unwrap();
    assert_eq!(ip.address, Ipv4Addr::new(10, 0, 5, 1));
    assert_eq!(ip.prefix, 24);
    assert_eq!(
        ip.dhcp_range,
        Some(DhcpRange { start: Ipv4Addr::new(10, 0, 5, 100), end: Ipv4Addr::new(10, 0, 5, 200) })
    );
    assert_eq!(
        ip.hosts,
        vec![
            ObservedHost { mac: mac("52:54:00:00:00:02"), ip: Ipv4Addr::new(10, 0, 5, 2), name: Some("deb1".into()) },
            ObservedHost { mac: mac("52:54:00:00:00:12"), ip: Ipv4Addr::new(10, 0, 5, 12), name: Some("deb2".into()) },
        ]
    );
    let owner = o.owner.unwrap();
    assert_eq!(owner.lab, "seedlab");
    assert_eq!(owner.resource, "network.local_net");
    assert_eq!(owner.spec_hash, r.spec_hash);
}

#[test]
fn network_xml_shape() {
    let lab = lab_with(managed(NetworkMode::Nat));
    let xml = network_xml(&lab, local_net(&lab)).unwrap().xml;
    for needle in [
        "<network xmlns:dnsmasq=\"http://libvirt.org/schemas/network/dnsmasq/1.0\">",
        "<forward mode=\"nat\"/>",
        "<bridge name=\"topobr5\" stp=\"off\" delay=\"0\"/>",
        "<mac address=\"52:54:01:e5:2b:1e\"/>",
        "<ip address=\"10.0.5.1\" netmask=\"255.255.255.0\">",
        "<range start=\"10.0.5.100\" end=\"10.0.5.200\"/>",
        "<host mac=\"52:54:00:00:00:02\" name=\"deb1\" ip=\"10.0.5.2\"/>",
        "<dnsmasq:options>",
        "<dnsmasq:option value=\"no-ping\"/>",
        &format!(
            "<topo:owner xmlns:topo=\"{OWNER_NS}\" lab=\"seedlab\" resource=\"network.local_net\" name=\"seedlab-local_net\" spec-hash="
        ),
    ] {
        assert!(xml.contains(needle), "missing {needle} in\n{xml}");
    }
}

#[test]
fn network_modes_and_defaults() {
    for (mode, fwd) in [
        (NetworkMode::Nat, Some("nat")),
        (NetworkMode::Routed, Some("route")),
        (NetworkMode::Open, Some("open")),
        (NetworkMode::Isolated, None),
    ] {
        let mut m = managed(mode);
        m.bridge = None;
        m.stp = true;
        m.dhcp_ping = true;
        m.subnet = None;
        m.gateway = None;
        m.dhcp = None;
        m.reservations.clear();
        let lab = lab_with(m);
        let xml = network_xml(&lab, local_net(&lab)).unwrap().xml;
        match fwd {
            Some(f) => assert!(xml.contains(&format!("<forward mode=\"{f}\"/>")), "{xml}"),
            None => assert!(!xml.contains("<forward"), "{xml}"),
        }
        assert!(xml.contains("<bridge stp=\"on\" delay=\"0\"/>"), "{xml}");
        assert!(!xml.contains("dnsmasq"), "{xml}");
        assert!(!xml.contains("<ip"), "{xml}");
        let o = parse_network(&xml, NetworkFlags::default()).unwrap();
        assert_eq!(o.mode, ObservedMode::Known(mode));
        assert_eq!(o.bridge, None);
        assert!(o.stp && o.dhcp_ping);
        assert_eq!(o.ip, None);
    }
}

#[test]
fn spec_hash_ignores_metadata_and_tracks_spec() {
    let lab = lab_with(managed(NetworkMode::Nat));
    let a = network_xml(&lab, local_net(&lab)).unwrap();
    assert_eq!(a, network_xml(&lab, local_net(&lab)).unwrap(), "rendering is deterministic");
    // The hash is the planner's hash of the desired managed fields.
    let NetworkKind::Managed(m) = &local_net(&lab).kind else { panic!("managed") };
    assert_eq!(crate::plan::fields::spec_hash(&crate::plan::fields::desired_network(m)), a.spec_hash);

    let mut m = managed(NetworkMode::Nat);
    m.stp = true;
    let lab2 = lab_with(m);
    assert_ne!(network_xml(&lab2, local_net(&lab2)).unwrap().spec_hash, a.spec_hash);
}

#[test]
fn an_existing_bridge_mac_is_kept() {
    let lab = lab_with(managed(NetworkMode::Isolated));
    let net = local_net(&lab);
    let hash = crate::plan::fields::spec_hash(&crate::plan::fields::desired_network(match &net.kind {
        NetworkKind::Managed(m) => m,
        NetworkKind::External => panic!("managed"),
    }));
    let kept = super::network_xml_keeping(
        &lab,
        net,
        &hash,
        super::Kept { mac: Some(mac("52:54:00:9a:0b:0c")), ..Default::default() },
    )
    .unwrap();
    let o = parse_network(&kept.xml, NetworkFlags::default()).unwrap();
    assert_eq!(o.mac, Some(mac("52:54:00:9a:0b:0c")));
    assert_eq!(kept.spec_hash, network_xml(&lab, net).unwrap().spec_hash, "the bridge MAC is not a managed field");
}

#[test]
fn external_network_is_not_rendered() {
    let lab = lab_with(managed(NetworkMode::Nat));
    let ext = &lab.networks[&NetworkName::new("default").unwrap()];
    assert!(matches!(network_xml(&lab, ext), Err(XmlError::External(_))));
}

#[test]
fn dhcp_host_round_trip() {
    let r = Reservation { mac: mac("52:54:00:aa:bb:cc"), ip: Ipv4Addr::new(10, 1, 2, 3), host: "a&b".into() };
    let xml = dhcp_host_xml(&r).unwrap();
    assert_eq!(xml, "<host mac=\"52:54:00:aa:bb:cc\" name=\"a&amp;b\" ip=\"10.1.2.3\"/>");
    let h = parse_dhcp_host(&xml).unwrap();
    assert_eq!((h.mac, h.ip, h.name.as_deref()), (r.mac, r.ip, Some("a&b")));
    assert!(parse_dhcp_host("<host mac='52:54:00:aa:bb:cc'/>").is_err());
}

#[test]
fn domain_round_trip_all_fields() {
    let lab = lab_with(managed(NetworkMode::Nat));
    let vm = deb1(&lab);
    let r = domain_xml(&lab, vm, Some("/var/lib/topo/seedlab-deb1.qcow2")).unwrap();
    let o = parse_domain(&r.xml, DomainState::Shutoff).unwrap();
    assert_eq!(o.name, "seedlab-deb1");
    assert_eq!(o.state, DomainState::Shutoff);
    assert_eq!(o.virt_type, "qemu");
    assert_eq!(o.memory_kib, 128 * 1024);
    assert_eq!(o.vcpus, 2);
    assert_eq!(o.kernel.as_deref(), Some("/labs/img/vmlinuz"));
    assert_eq!(o.initrd.as_deref(), Some("/labs/img/initrd.gz"));
    assert_eq!(o.cmdline.as_deref(), Some("console=ttyS0 quiet msg=\"a<b & c>'d'\""));
    assert_eq!(o.disks, vec!["/var/lib/topo/seedlab-deb1.qcow2".to_string()]);
    assert_eq!(o.interfaces.len(), 2);
    assert_eq!(o.interfaces[0].mac, Some(vm.nics[0].mac));
    assert_eq!(o.interfaces[0].network.as_deref(), Some("seedlab-local_net"));
    assert_eq!(o.interfaces[0].model.as_deref(), Some("virtio"));
    assert_eq!(o.interfaces[1].mac, Some(vm.nics[1].mac));
    assert_eq!(o.interfaces[1].network.as_deref(), Some("default"));
    let owner = o.owner.unwrap();
    assert_eq!(
        (owner.lab.as_str(), owner.resource.as_str(), owner.name.as_str()),
        ("seedlab", "vm.deb1", "seedlab-deb1")
    );
    assert_eq!(owner.spec_hash, r.spec_hash);
    // No markup injection through the command line.
    assert!(r.xml.contains("<cmdline>console=ttyS0 quiet msg=\"a&lt;b &amp; c&gt;'d'\"</cmdline>"), "{}", r.xml);
    for needle in [
        "<domain type=\"qemu\">",
        "<memory unit=\"KiB\">131072</memory>",
        "<type arch=\"x86_64\" machine=\"pc\">hvm</type>",
        "<rom enabled=\"no\"/>",
        "<serial type=\"pty\">",
        "<log file=\"/var/log/libvirt/qemu/seedlab-deb1-console.log\" append=\"off\"/>",
        "<memballoon model=\"none\"/>",
        "<driver name=\"qemu\" type=\"qcow2\"/>",
        "<on_poweroff>destroy</on_poweroff>",
    ] {
        assert!(r.xml.contains(needle), "missing {needle} in\n{}", r.xml);
    }
    assert!(!r.xml.contains("emulator"));
    assert!(!r.xml.contains("readonly"), "no seed given, no seed disk");
}

#[test]
fn seed_disk_is_a_readonly_raw_second_disk() {
    let lab = lab_with(managed(NetworkMode::Nat));
    let vm = deb1(&lab);
    let seed = "/var/lib/topo/seedlab-deb1-cidata-12345678.abcdef01.img";
    let r = super::domain_xml_with_seed(&lab, vm, Some("/var/lib/topo/o.qcow2"), Some(seed), "00", None).unwrap();
    let compact: String = r.xml.lines().map(str::trim).collect();
    assert!(
        compact.contains(&format!(
            "<disk type=\"file\" device=\"disk\"><driver name=\"qemu\" type=\"raw\"/><source file=\"{seed}\"/>\
             <target dev=\"vdb\" bus=\"virtio\"/><readonly/></disk>"
        )),
        "{}",
        r.xml
    );
    assert_eq!(parse_domain(&r.xml, DomainState::Shutoff).unwrap().disks, ["/var/lib/topo/o.qcow2", seed]);
    // Without an overlay the seed is the first disk.
    let r = super::domain_xml_with_seed(&lab, vm, None, Some(seed), "00", None).unwrap();
    let compact: String = r.xml.lines().map(str::trim).collect();
    assert!(compact.contains("<target dev=\"vda\" bus=\"virtio\"/><readonly/>"), "{}", r.xml);
    assert!(!r.xml.contains("<boot"), "direct kernel boot: no boot order\n{}", r.xml);
}

/// Without `boot:` the VM boots from its overlay: the overlay alone has boot order 1
/// (the seed is a FAT volume with a boot signature the BIOS could try otherwise).
#[test]
fn disk_boot_orders_the_overlay_first() {
    let lab = lab_with(managed(NetworkMode::Nat));
    let mut vm = deb1(&lab).clone();
    vm.boot = None;
    let seed = "/var/lib/topo/seedlab-deb1-cidata-12345678.abcdef01.img";
    let r = super::domain_xml_with_seed(&lab, &vm, Some("/var/lib/topo/o.qcow2"), Some(seed), "00", None).unwrap();
    let compact: String = r.xml.lines().map(str::trim).collect();
    assert!(
        compact.contains(
            "<source file=\"/var/lib/topo/o.qcow2\"/><target dev=\"vda\" bus=\"virtio\"/><boot order=\"1\"/></disk>"
        ),
        "{}",
        r.xml
    );
    assert_eq!(r.xml.matches("<boot").count(), 1, "the seed has no boot order\n{}", r.xml);
    assert!(!r.xml.contains("<kernel"), "{}", r.xml);
    assert_eq!(parse_domain(&r.xml, DomainState::Shutoff).unwrap().disks, ["/var/lib/topo/o.qcow2", seed]);
}

#[test]
fn domain_without_disk_or_boot() {
    let lab = lab_with(managed(NetworkMode::Nat));
    let mut vm = deb1(&lab).clone();
    vm.boot = None;
    vm.virt_type = VirtType::Kvm;
    let r = domain_xml(&lab, &vm, None).unwrap();
    assert!(!r.xml.contains("<disk") && !r.xml.contains("<kernel"), "{}", r.xml);
    let o = parse_domain(&r.xml, DomainState::Running).unwrap();
    assert_eq!(o.virt_type, "kvm");
    assert!(o.disks.is_empty() && o.kernel.is_none() && o.cmdline.is_none());
    assert_ne!(r.spec_hash, domain_xml(&lab, deb1(&lab), None).unwrap().spec_hash);
}

#[test]
fn domain_with_unknown_network_is_an_error() {
    let lab = lab_with(managed(NetworkMode::Nat));
    let mut vm = deb1(&lab).clone();
    vm.nics[0].network = NetworkName::new("nope").unwrap();
    assert!(matches!(domain_xml(&lab, &vm, None), Err(XmlError::UnknownNetwork { .. })));
    assert!(matches!(interface_xml(&lab, &vm, &vm.nics[0]), Err(XmlError::UnknownNetwork { .. })));
}

#[test]
fn interface_round_trip() {
    let lab = lab_with(managed(NetworkMode::Nat));
    let vm = deb1(&lab);
    let xml = interface_xml(&lab, vm, &vm.nics[0]).unwrap();
    assert!(xml.starts_with("<interface type=\"network\">"), "{xml}");
    let i = parse_interface(&xml).unwrap();
    assert_eq!(i.mac, Some(vm.nics[0].mac));
    assert_eq!(i.network.as_deref(), Some("seedlab-local_net"));
    assert_eq!(i.model.as_deref(), Some("virtio"));
}

/// `virsh net-dumpxml` on libvirt 9.0 (real daemon): uuid, mac and bridge name filled in,
/// attributes re-quoted, the owner tag re-serialized with double quotes, dnsmasq options kept
/// under another prefix, extra elements (`<mac>`, `<dns>`, `<domain>`, IPv6 `<ip>`).
const LIBVIRT_NET: &str = r#"<network connections='2' xmlns:dns='http://libvirt.org/schemas/network/dnsmasq/1.0'>
  <name>seedlab-local_net</name>
  <uuid>6461a24b-227f-42f3-883e-6932eccb8b7c</uuid>
  <metadata>
    <other:thing xmlns:other="urn:example">x</other:thing>
    <t:owner xmlns:t="http://topo.invalid/xmlns/lab/1" lab="seedlab" resource="network.local_net" spec-hash="0123456789abcdef"/>
  </metadata>
  <forward mode='nat'>
    <nat>
      <port start='1024' end='65535'/>
    </nat>
  </forward>
  <bridge name='virbr1' stp='off' delay='0'/>
  <mac address='52:54:00:3e:1a:77'/>
  <domain name='lab'/>
  <dns enable='yes'/>
  <ip family='ipv6' address='fd00::1' prefix='64'/>
  <ip address='10.0.5.1' prefix='24'>
    <dhcp>
      <range start='10.0.5.100' end='10.0.5.200'>
        <lease expiry='1' unit='hours'/>
      </range>
      <host mac='52:54:00:00:00:12' name='deb2' ip='10.0.5.12'/>
      <host mac='52:54:00:00:00:02' name='deb1' ip='10.0.5.2'/>
      <host id='0:1:0:1:2c:3b' name='v6only' ip='fd00::5'/>
    </dhcp>
  </ip>
  <dns:options>
    <dns:option value='no-ping'/>
  </dns:options>
</network>
"#;

#[test]
fn parse_libvirt_network_sample() {
    let o = parse_network(LIBVIRT_NET, NetworkFlags { active: true, persistent: true, autostart: true }).unwrap();
    assert_eq!(o.uuid.as_deref(), Some("6461a24b-227f-42f3-883e-6932eccb8b7c"));
    assert_eq!(o.bridge.as_deref(), Some("virbr1"));
    assert!(!o.stp);
    assert!(!o.dhcp_ping);
    let ip = o.ip.unwrap();
    assert_eq!((ip.address, ip.prefix), (Ipv4Addr::new(10, 0, 5, 1), 24));
    assert_eq!(
        ip.hosts.iter().map(|h| h.mac.to_string()).collect::<Vec<_>>(),
        ["52:54:00:00:00:02", "52:54:00:00:00:12"]
    );
    let owner = o.owner.unwrap();
    assert_eq!((owner.lab.as_str(), owner.spec_hash.as_str()), ("seedlab", "0123456789abcdef"));
}

/// The test driver's `default` network, as `net-dumpxml` prints it.
const TEST_DRIVER_DEFAULT: &str = "<network>
  <name>default</name>
  <uuid>dd8fe884-6c02-601e-7551-cca97df1c5df</uuid>
  <forward mode='nat'/>
  <bridge name='virbr0' stp='on' delay='0'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.122.2' end='192.168.122.254'/>
    </dhcp>
  </ip>
</network>
";

#[test]
fn parse_test_driver_default_network() {
    let o = parse_network(TEST_DRIVER_DEFAULT, NetworkFlags::default()).unwrap();
    assert_eq!(o.mode, ObservedMode::Known(NetworkMode::Nat));
    assert!(o.stp && o.dhcp_ping);
    assert_eq!(o.owner, None);
    let ip = o.ip.unwrap();
    assert_eq!(ip.prefix, 24);
    assert!(ip.hosts.is_empty());
    assert_eq!(ip.dhcp_range.unwrap().end, Ipv4Addr::new(192, 168, 122, 254));
}

#[test]
fn parse_other_forward_modes() {
    let x = |f: &str| {
        parse_network(&format!("<network><name>n</name>{f}</network>"), NetworkFlags::default()).unwrap().mode
    };
    assert_eq!(x("<forward mode='bridge'/>"), ObservedMode::Other("bridge".into()));
    assert_eq!(x("<forward/>"), ObservedMode::Known(NetworkMode::Nat));
    assert_eq!(x("<forward mode='route'/>"), ObservedMode::Known(NetworkMode::Routed));
    assert_eq!(x("<forward mode='open'/>"), ObservedMode::Known(NetworkMode::Open));
    assert_eq!(x(""), ObservedMode::Known(NetworkMode::Isolated));
}

/// `virsh dumpxml --inactive` of a running QEMU domain on libvirt 9.0: controllers, console,
/// addresses, `currentMemory`, interleaved device kinds, memory in MiB.
const LIBVIRT_DOMAIN: &str = r#"<domain type='qemu'>
  <name>seedlab-deb1</name>
  <uuid>27567b1d-2abd-40e6-a960-e17a79a5ce7a</uuid>
  <metadata>
    <topo:owner xmlns:topo="http://topo.invalid/xmlns/lab/1" lab="seedlab" resource="vm.deb1" spec-hash="fedcba9876543210"/>
  </metadata>
  <memory unit='MiB'>256</memory>
  <currentMemory unit='KiB'>262144</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <kernel>/labs/img/vmlinuz</kernel>
    <initrd>/labs/img/initrd.gz</initrd>
    <cmdline>console=ttyS0 quiet</cmdline>
    <boot dev='hd'/>
  </os>
  <cpu mode='custom' match='exact' check='none'>
    <model fallback='forbid'>qemu64</model>
  </cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/topo/seedlab-deb1.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>
    </disk>
    <controller type='usb' index='0' model='piix3-uhci'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x2'/>
    </controller>
    <interface type='network'>
      <mac address='52:54:00:00:00:02'/>
      <source network='seedlab-local_net'/>
      <model type='virtio'/>
      <rom enabled='no'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>
    </interface>
    <disk type='file' device='cdrom'>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
    <interface type='bridge'>
      <mac address='52:54:00:00:00:03'/>
      <source bridge='br0'/>
      <model type='e1000'/>
    </interface>
    <interface type='network'>
      <mac address='52:54:00:39:B7:D5'/>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='/var/log/libvirt/qemu/seedlab-deb1-console.log'/>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
    </serial>
    <console type='file'>
      <source path='/var/log/libvirt/qemu/seedlab-deb1-console.log'/>
      <target type='serial' port='0'/>
    </console>
    <input type='mouse' bus='ps2'/>
    <audio id='1' type='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"#;

#[test]
fn parse_libvirt_domain_sample() {
    let o = parse_domain(LIBVIRT_DOMAIN, DomainState::Running).unwrap();
    assert_eq!(o.uuid.as_deref(), Some("27567b1d-2abd-40e6-a960-e17a79a5ce7a"));
    assert_eq!(o.memory_kib, 256 * 1024);
    assert_eq!(o.vcpus, 1);
    assert_eq!(o.cmdline.as_deref(), Some("console=ttyS0 quiet"));
    assert_eq!(o.disks, vec!["/var/lib/topo/seedlab-deb1.qcow2".to_string()]);
    let ifs: Vec<_> =
        o.interfaces.iter().map(|i| (i.mac.unwrap().to_string(), i.network.clone(), i.model.clone())).collect();
    assert_eq!(
        ifs,
        vec![
            ("52:54:00:00:00:02".into(), Some("seedlab-local_net".into()), Some("virtio".into())),
            ("52:54:00:00:00:03".into(), None, Some("e1000".into())),
            ("52:54:00:39:b7:d5".into(), Some("default".into()), Some("virtio".into())),
        ]
    );
    assert_eq!(o.owner.unwrap().spec_hash, "fedcba9876543210");
}

#[test]
fn memory_units() {
    let m = |u: &str, v: u64| {
        parse_domain(
            &format!("<domain type='qemu'><name>d</name><memory{u}>{v}</memory><vcpu>1</vcpu></domain>"),
            DomainState::Shutoff,
        )
        .map(|d| d.memory_kib)
    };
    assert_eq!(m("", 1024).unwrap(), 1024);
    assert_eq!(m(" unit='KiB'", 1024).unwrap(), 1024);
    assert_eq!(m(" unit='MiB'", 2).unwrap(), 2048);
    assert_eq!(m(" unit='GiB'", 1).unwrap(), 1024 * 1024);
    assert_eq!(m(" unit='b'", 1_048_576).unwrap(), 1024);
    assert_eq!(m(" unit='bytes'", 2048).unwrap(), 2);
    assert!(m(" unit='parsecs'", 1).is_err());
}

#[test]
fn wrong_root_is_rejected() {
    assert!(parse_interface("<disk type='file'/>").is_err());
    assert!(parse_network("<domain type='qemu'><name>x</name></domain>", NetworkFlags::default()).is_err());
    assert!(parse_domain("<network><name>x</name></network>", DomainState::Shutoff).is_err());
    assert!(parse_dhcp_host("<?xml version='1.0'?>\n<hostx mac='52:54:00:00:00:01' ip='1.2.3.4'/>").is_err());
    assert!(parse_dhcp_host("<?xml version='1.0'?>\n<host mac='52:54:00:00:00:01' ip='1.2.3.4'/>").is_ok());
}

/// QEMU's `pc` machine hot-plugs NICs through ACPI only: without `<acpi/>` a NIC added to a
/// running VM fails with "Bus 'pci.0' does not support hotplugging" (found on libvirt 9.0).
#[test]
fn domain_enables_acpi_for_nic_hotplug() {
    let lab = lab_with(managed(NetworkMode::Isolated));
    let r = domain_xml(&lab, deb1(&lab), None).unwrap();
    let features = r.xml.split("<features>").nth(1).and_then(|s| s.split("</features>").next()).unwrap_or_default();
    assert!(features.contains("<acpi/>") && features.contains("<apic/>"), "{}", r.xml);
}

/// The live XML of a running domain names each NIC's tap in `<target dev>` (the
/// persistent config has none): `live_taps` reads them by MAC, in device order.
#[test]
fn live_taps_from_a_running_domain() {
    let live = LIBVIRT_DOMAIN
        .replace(
            "<source network='seedlab-local_net'/>",
            "<source network='seedlab-local_net' bridge='virbr1'/>\n      <target dev='vnet7'/>",
        )
        .replace(
            "<source network='default'/>",
            "<source network='default' bridge='virbr0'/>\n      <target dev='vnet8'/>",
        );
    let taps = super::live_taps(&live).unwrap();
    let got: Vec<(String, &str)> = taps.iter().map(|(m, t)| (m.to_string(), t.as_str())).collect();
    assert_eq!(got, vec![("52:54:00:00:00:02".into(), "vnet7"), ("52:54:00:39:b7:d5".into(), "vnet8")]);
    assert_eq!(super::live_taps(LIBVIRT_DOMAIN).unwrap(), vec![]);
}

/// libvirt's `<bandwidth>` as it writes it back: the averages both ways; a peak, burst or
/// floor (which topo never sets) is noticed, and shown side by side when the two differ.
#[test]
fn bandwidth_is_read_back() {
    let xml = |bw: &str| {
        format!(
            "<domain type='qemu'><name>d</name><memory>131072</memory><devices><interface type='network'>\
             <mac address='52:54:00:00:00:01'/><source network='n'/>{bw}</interface></devices></domain>"
        )
    };
    let bw = |x: &str| parse_domain(&xml(x), DomainState::Shutoff).unwrap().interfaces[0].bandwidth;
    let b = bw("<bandwidth><inbound average='1250'/><outbound average='1250'/></bandwidth>").unwrap();
    assert_eq!((b.inbound, b.outbound, b.extra), (Some(1250), Some(1250), false));
    assert_eq!(b.describe(), "10Mbit");
    let b = bw("<bandwidth><inbound average='1250' peak='2500' burst='1024'/></bandwidth>").unwrap();
    assert!(b.extra);
    assert_eq!(b.describe(), "inbound 10Mbit, outbound none (with peak/burst/floor)");
    assert_eq!(bw(""), None);
    assert_eq!(bw("<bandwidth/>"), None);
}

/// A running domain's live XML lists each disk's backing chain (libvirt 9.0, after `virsh
/// snapshot-create-as VM s1 --disk-only`): the source is the new layer, the overlay and the
/// base follow, and the empty `<backingStore/>` ends the chain. The persistent config lists
/// none: the chain is not known from it.
#[test]
fn disk_backing_chains_from_live_xml() {
    let live = "<domain type='qemu'><name>d</name><memory unit='KiB'>131072</memory><vcpu>1</vcpu>\
        <os><type>hvm</type></os><devices>\
        <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
        <source file='/p/d.tag.s1' index='3'/>\
        <backingStore type='file' index='1'><format type='qcow2'/><source file='/p/d.tag.qcow2'/>\
        <backingStore type='file' index='2'><format type='qcow2'/><source file='/img/base.qcow2'/>\
        <backingStore/></backingStore></backingStore><target dev='vda' bus='virtio'/></disk>\
        <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/p/seed.img'/>\
        <backingStore/><target dev='vdb' bus='virtio'/><readonly/></disk>\
        </devices></domain>";
    let d = super::parse_domain(live, DomainState::Running).unwrap();
    assert_eq!(d.disks, ["/p/d.tag.s1", "/p/seed.img"]);
    assert_eq!(d.backing, [vec!["/p/d.tag.qcow2".to_string(), "/img/base.qcow2".to_string()], vec![]]);
    assert!(d.chains_known);
    assert_eq!(d.chain(0), ["/p/d.tag.s1", "/p/d.tag.qcow2", "/img/base.qcow2"]);
    let config = live.replace("<backingStore/>", "").replace(
        "<backingStore type='file' index='1'><format type='qcow2'/><source file='/p/d.tag.qcow2'/>\
        <backingStore type='file' index='2'><format type='qcow2'/><source file='/img/base.qcow2'/>\
        </backingStore></backingStore>",
        "",
    );
    let d = super::parse_domain(&config, DomainState::Shutoff).unwrap();
    assert_eq!(d.backing, [Vec::<String>::new(), vec![]]);
    assert!(!d.chains_known, "{config}");
}

/// What an existing object keeps is rendered into its XML, as libvirt stores it for a
/// definition without it (its UUID, the bridge it chose), and a bridge the lab names wins
/// over the kept one; a new object leaves both to libvirt.
#[test]
fn kept_uuid_and_bridge_are_rendered_where_libvirt_keeps_them() {
    let uuid = "8f1c0a52-5b3e-4c1d-9a7e-2d6f4b8e9c01";
    let kept = super::Kept { uuid: Some(uuid), bridge: Some("virbr7"), mac: None };
    let mut unnamed = managed(NetworkMode::Isolated);
    unnamed.bridge = None;
    let lab = lab_with(unnamed);
    let net = local_net(&lab);
    let fresh = network_xml(&lab, net).unwrap().xml;
    assert!(!fresh.contains("<uuid>") && !fresh.contains("virbr"), "a new network: libvirt picks both:\n{fresh}");
    let keeping = super::network_xml_keeping(&lab, net, "00", kept).unwrap().xml;
    let o = parse_network(&keeping, NetworkFlags::default()).unwrap();
    assert_eq!((o.uuid.as_deref(), o.bridge.as_deref()), (Some(uuid), Some("virbr7")));

    let named = lab_with(managed(NetworkMode::Isolated));
    let xml = super::network_xml_keeping(&named, local_net(&named), "00", kept).unwrap().xml;
    let o = parse_network(&xml, NetworkFlags::default()).unwrap();
    assert_eq!((o.uuid.as_deref(), o.bridge.as_deref()), (Some(uuid), Some("topobr5")), "the lab's bridge wins");

    let vm = deb1(&lab);
    let fresh = super::domain_xml_with_seed(&lab, vm, None, None, "00", None).unwrap().xml;
    assert!(!fresh.contains("<uuid>"));
    let keeping = super::domain_xml_with_seed(&lab, vm, None, None, "00", Some(uuid)).unwrap().xml;
    let d = crate::host::xml::parse_domain(&keeping, crate::host::observed::DomainState::Other).unwrap();
    assert_eq!(d.uuid.as_deref(), Some(uuid));
}

/// A lab network's `mtu` is the network's `<mtu size>` (after `<bridge>`, before `<mac>`, where
/// libvirt's src/conf/network_conf.c `virNetworkDefFormatBuf` writes it) and every NIC on it
/// carries it in its `<interface>` (after `<model>`, as libvirt writes it back); both read back.
/// Without `mtu` neither has the element; a NIC on an external network never has it.
#[test]
fn mtu_in_network_and_interface_round_trip() {
    let lab = lab_with(ManagedNetwork { mtu: Some(1450), ..managed(NetworkMode::Nat) });
    let xml = network_xml(&lab, local_net(&lab)).unwrap().xml;
    let (bridge, mtu, mac) = (xml.find("<bridge ").unwrap(), xml.find("<mtu size=\"1450\"/>"), xml.find("<mac "));
    assert!(mtu.is_some_and(|m| bridge < m && Some(m) < mac), "bridge, mtu, mac in\n{xml}");
    assert_eq!(parse_network(&xml, NetworkFlags::default()).unwrap().mtu, Some(1450));

    let vm = deb1(&lab);
    let d = domain_xml(&lab, vm, None).unwrap().xml;
    let o = parse_domain(&d, DomainState::Shutoff).unwrap();
    assert_eq!(o.interfaces.iter().map(|i| i.mtu).collect::<Vec<_>>(), [Some(1450), None], "lab NIC, external NIC");
    let iface = interface_xml(&lab, vm, &vm.nics[0]).unwrap();
    let at = |needle: &str| iface.find(needle).unwrap_or_else(|| panic!("missing {needle} in\n{iface}"));
    assert!(at("<model ") < at("<mtu size=\"1450\"/>") && at("<mtu ") < at("<rom "), "model, mtu, rom in\n{iface}");
    assert_eq!(parse_interface(&iface).unwrap().mtu, Some(1450));

    let plain = lab_with(managed(NetworkMode::Nat));
    assert!(!network_xml(&plain, local_net(&plain)).unwrap().xml.contains("<mtu"));
    assert!(!domain_xml(&plain, deb1(&plain), None).unwrap().xml.contains("<mtu"));
    assert_eq!(parse_network(LIBVIRT_NET, NetworkFlags::default()).unwrap().mtu, None);
}

/// The NICs follow their network's MTU when the XML is rendered: a network's MTU changed on
/// the model after validation (`Lab::set_network_mtu`, as the multi-host code does) is in
/// every interface rendered afterwards.
#[test]
fn interfaces_follow_a_network_mtu_set_later() {
    let mut lab = lab_with(managed(NetworkMode::Isolated));
    let name = NetworkName::new("local_net").unwrap();
    lab.set_network_mtu(&name, Some(9000)).unwrap();
    let vm = deb1(&lab);
    assert_eq!(parse_interface(&interface_xml(&lab, vm, &vm.nics[0]).unwrap()).unwrap().mtu, Some(9000));
    assert!(network_xml(&lab, local_net(&lab)).unwrap().xml.contains("<mtu size=\"9000\"/>"));
}

/// `<mtu size>` as libvirt 9.0 prints it back (single quotes, among the elements of a running
/// domain's live XML); a size that is not a number reads as none, never as an error.
#[test]
fn mtu_as_libvirt_prints_it() {
    let net = "<network><name>n</name><bridge name='virbr3' stp='off' delay='0'/><mtu size='9000'/>\
               <mac address='52:54:00:3e:1a:77'/></network>";
    assert_eq!(parse_network(net, NetworkFlags::default()).unwrap().mtu, Some(9000));
    let dom = |mtu: &str| {
        format!(
            "<domain type='kvm'><name>d</name><devices><interface type='network'>\
             <mac address='52:54:00:76:4d:a8'/><source network='n' bridge='virbr3'/><target dev='vnet354'/>\
             <model type='virtio'/>{mtu}<alias name='net1'/>\
             <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/></interface></devices></domain>"
        )
    };
    let mtu = |x: &str| parse_domain(&dom(x), DomainState::Running).unwrap().interfaces[0].mtu;
    assert_eq!(mtu("<mtu size='1400'/>"), Some(1400));
    assert_eq!(mtu(""), None);
    assert_eq!(mtu("<mtu size='big'/>"), None);
    assert_eq!(mtu("<mtu/>"), None);
}

/// A network with `subnet6` has a second `<ip family='ipv6' address prefix>` after the IPv4
/// one, without `<dhcp>` (libvirt's dnsmasq then sends router advertisements only), and a
/// `nat` network masquerades IPv6 too (`<forward mode='nat'><nat ipv6='yes'/>`, libvirt
/// 6.5 and later); both addresses read back, and the plan fields of model and XML agree.
#[test]
fn ipv6_in_network_round_trip() {
    let with6 = |mode| ManagedNetwork {
        subnet6: Some("fd00:5::/64".parse().unwrap()),
        gateway6: Some("fd00:5::1".parse().unwrap()),
        ..managed(mode)
    };
    let lab = lab_with(with6(NetworkMode::Nat));
    let xml = network_xml(&lab, local_net(&lab)).unwrap().xml;
    let at = |needle: &str| xml.find(needle).unwrap_or_else(|| panic!("missing {needle} in\n{xml}"));
    assert!(at("<forward mode=\"nat\">") < at("<nat ipv6=\"yes\"/>") && at("<nat ") < at("<bridge "), "{xml}");
    assert!(at("<ip address=\"10.0.5.1\"") < at("<ip family=\"ipv6\" address=\"fd00:5::1\" prefix=\"64\"/>"), "{xml}");
    let o = parse_network(&xml, NetworkFlags::default()).unwrap();
    assert_eq!(o.ip6, Some(ObservedIp6 { address: "fd00:5::1".parse().unwrap(), prefix: 64 }));
    assert_eq!(o.ip.as_ref().map(|ip| ip.address), Some(Ipv4Addr::new(10, 0, 5, 1)), "IPv4 still read first");
    let NetworkKind::Managed(m) = &local_net(&lab).kind else { panic!("managed") };
    let desired = crate::plan::fields::desired_network(m);
    let observed = crate::plan::fields::observed_network(&o, &desired);
    for f in [crate::plan::fields::Field::Subnet6, crate::plan::fields::Field::Gateway6] {
        assert_eq!(desired.get(&f).map(|v| &v.value), observed.get(&f).map(|v| &v.value), "{f:?}");
    }
    assert_eq!(desired.get(&crate::plan::fields::Field::Subnet6).map(|v| v.value.as_str()), Some("fd00:5::/64"));

    // Isolated: no NAT66, the same <ip>; without subnet6 neither.
    let iso = lab_with(with6(NetworkMode::Isolated));
    let xml = network_xml(&iso, local_net(&iso)).unwrap().xml;
    assert!(!xml.contains("<nat") && xml.contains("family=\"ipv6\""), "{xml}");
    let plain = lab_with(managed(NetworkMode::Nat));
    let xml = network_xml(&plain, local_net(&plain)).unwrap().xml;
    assert!(!xml.contains("<nat") && !xml.contains("family=\"ipv6\""), "{xml}");
    assert_eq!(parse_network(&xml, NetworkFlags::default()).unwrap().ip6, None);
}

/// An IPv6 `<ip>` as `net-dumpxml` of libvirt 9.0 prints it (IPv6 only, isolated) reads
/// back with its prefix; a network without `prefix` gets libvirt's default, 64.
#[test]
fn ipv6_as_libvirt_prints_it() {
    let xml = "<network><name>lab-v6</name><uuid>6a3b1c2d-0000-4000-8000-000000000006</uuid>\
        <bridge name='virbr7' stp='off' delay='0'/><mac address='52:54:00:aa:bb:cc'/>\
        <ip family='ipv6' address='fd00:161::fe' prefix='64'></ip></network>";
    let o = parse_network(xml, NetworkFlags::default()).unwrap();
    assert_eq!(o.ip, None);
    assert_eq!(o.ip6, Some(ObservedIp6 { address: "fd00:161::fe".parse().unwrap(), prefix: 64 }));
    let no_prefix = xml.replace(" prefix='64'", "");
    assert_eq!(parse_network(&no_prefix, NetworkFlags::default()).unwrap().ip6.map(|i| i.prefix), Some(64));
}
