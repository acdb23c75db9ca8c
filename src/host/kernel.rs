//! What the libvirt host's kernel can do for link impairment: the qdiscs, classifiers and
//! actions `tc` asks for (`KernelFeature`), read from the running kernel's build config on a
//! local host (`KernelSupport::read_local`), and which of them a lab's NICs need.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use serde::Serialize;

/// A kernel feature that link impairment needs, named by its kernel config symbol.
/// Sources: netem is topo's own `tc qdisc ... netem`; the rest is what libvirt's
/// `<bandwidth>` runs (src/util/virnetdevbandwidth.c, `virNetDevBandwidthSet`): for
/// `inbound` an htb root qdisc with class `1:1`, an sfq leaf and a `fw` filter; for
/// `outbound` an ingress qdisc with a `u32` filter whose `police` action drops the excess.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum KernelFeature {
    /// `CONFIG_NET_SCH_NETEM` (module `sch_netem`): delay, jitter and loss.
    Netem,
    /// `CONFIG_NET_SCH_HTB` (module `sch_htb`): libvirt's inbound rate limit.
    Htb,
    /// `CONFIG_NET_SCH_SFQ` (module `sch_sfq`): the leaf under libvirt's htb class.
    Sfq,
    /// `CONFIG_NET_CLS_FW` (module `cls_fw`): libvirt's filter on its htb root.
    ClsFw,
    /// `CONFIG_NET_SCH_INGRESS` (module `sch_ingress`): libvirt's outbound rate limit.
    Ingress,
    /// `CONFIG_NET_CLS_U32` (module `cls_u32`): the filter of libvirt's outbound limit.
    ClsU32,
    /// `CONFIG_NET_ACT_POLICE` (module `act_police`): the action of that filter.
    ActPolice,
}

impl KernelFeature {
    /// Every feature, in order.
    pub const ALL: [KernelFeature; 7] = [
        KernelFeature::Netem,
        KernelFeature::Htb,
        KernelFeature::Sfq,
        KernelFeature::ClsFw,
        KernelFeature::Ingress,
        KernelFeature::ClsU32,
        KernelFeature::ActPolice,
    ];

    /// What `delay`, `jitter` and `loss` need (topo's netem on the tap).
    pub const NETEM: [KernelFeature; 1] = [KernelFeature::Netem];

    /// What `rate` needs (libvirt's `<bandwidth>` with `inbound` and `outbound`).
    pub const RATE: [KernelFeature; 6] = [
        KernelFeature::Htb,
        KernelFeature::Sfq,
        KernelFeature::ClsFw,
        KernelFeature::Ingress,
        KernelFeature::ClsU32,
        KernelFeature::ActPolice,
    ];

    /// The kernel config symbol: `CONFIG_NET_SCH_NETEM`.
    pub fn config(self) -> &'static str {
        match self {
            KernelFeature::Netem => "CONFIG_NET_SCH_NETEM",
            KernelFeature::Htb => "CONFIG_NET_SCH_HTB",
            KernelFeature::Sfq => "CONFIG_NET_SCH_SFQ",
            KernelFeature::ClsFw => "CONFIG_NET_CLS_FW",
            KernelFeature::Ingress => "CONFIG_NET_SCH_INGRESS",
            KernelFeature::ClsU32 => "CONFIG_NET_CLS_U32",
            KernelFeature::ActPolice => "CONFIG_NET_ACT_POLICE",
        }
    }

    /// The module the feature is built as, when `=m`: `sch_netem`.
    pub fn module(self) -> &'static str {
        match self {
            KernelFeature::Netem => "sch_netem",
            KernelFeature::Htb => "sch_htb",
            KernelFeature::Sfq => "sch_sfq",
            KernelFeature::ClsFw => "cls_fw",
            KernelFeature::Ingress => "sch_ingress",
            KernelFeature::ClsU32 => "cls_u32",
            KernelFeature::ActPolice => "act_police",
        }
    }
}

impl fmt::Display for KernelFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.module(), self.config())
    }
}

/// What the running kernel lacks of [`KernelFeature::ALL`], and where that was read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KernelSupport {
    /// Features the kernel was built without (neither `=y` nor `=m`).
    pub missing: BTreeSet<KernelFeature>,
    /// The config file read: `/proc/config.gz` or `/boot/config-RELEASE`.
    pub source: String,
}

impl KernelSupport {
    /// Reads a kernel build config (`.config` text): a feature is there when its symbol is
    /// `=y` or `=m` (a module counts as there: the kernel loads it on demand when tc asks,
    /// or `modprobe` does), missing when `# ... is not set` or absent.
    pub fn from_config(text: &str, source: &str) -> KernelSupport {
        let built: BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.trim().split_once('='))
            .filter(|(_, v)| matches!(v.trim(), "y" | "m"))
            .map(|(k, _)| k.trim())
            .collect();
        KernelSupport {
            missing: KernelFeature::ALL.into_iter().filter(|f| !built.contains(f.config())).collect(),
            source: source.to_owned(),
        }
    }

    /// [`Self::from_config`] of a gzip-compressed config (`/proc/config.gz`'s bytes, read
    /// here or on another host), `source` naming where it was read.
    ///
    /// # Errors
    /// `bytes` are not a whole gzip stream ([`KernelError::Corrupt`]).
    pub fn from_config_gz(bytes: &[u8], source: &str) -> Result<KernelSupport, KernelError> {
        let text = gunzip(bytes).map_err(|e| KernelError::Corrupt { path: source.to_owned(), source: e })?;
        Ok(Self::from_config(&String::from_utf8_lossy(&text), source))
    }

    /// Those of `need` the kernel lacks.
    pub fn lacks(&self, need: &[KernelFeature]) -> Vec<KernelFeature> {
        need.iter().copied().filter(|f| self.missing.contains(f)).collect()
    }

    /// The running kernel's config on this machine: `/proc/config.gz` (CONFIG_IKCONFIG_PROC),
    /// else `/boot/config-$(uname -r)`. `None` when neither can be read (unknown: nothing is
    /// refused on its account). Errors: `/proc/config.gz` was read but is not a whole gzip
    /// stream (bad header, corrupt deflate data, CRC-32 or length mismatch).
    pub fn read_local() -> Result<Option<KernelSupport>, KernelError> {
        Self::read_from(Path::new("/proc"), Path::new("/boot"))
    }

    /// [`Self::read_local`] with the `/proc` and `/boot` folders given (tests).
    pub fn read_from(proc: &Path, boot: &Path) -> Result<Option<KernelSupport>, KernelError> {
        let gz = proc.join("config.gz");
        if let Ok(bytes) = std::fs::read(&gz) {
            return Self::from_config_gz(&bytes, &gz.display().to_string()).map(Some);
        }
        let Ok(release) = std::fs::read_to_string(proc.join("sys/kernel/osrelease")) else { return Ok(None) };
        let path = boot.join(format!("config-{}", release.trim()));
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
        Ok(Some(Self::from_config(&text, &path.display().to_string())))
    }
}

/// The kernel's config could not be read.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum KernelError {
    /// The config file is there but is not a whole gzip stream.
    #[error("{path} is not a whole gzip file (corrupt or cut short): {source}")]
    #[diagnostic(code(topo::host::kernel::corrupt_config))]
    Corrupt {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The content of a gzip member (RFC 1952) through `flate2`: header read, deflate data
/// inflated, the trailer's CRC-32 and length checked.
fn gunzip(b: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "\
CONFIG_NET_SCH_HTB=y
# CONFIG_NET_SCH_SFQ is not set
# CONFIG_NET_SCH_NETEM is not set
CONFIG_NET_SCH_INGRESS=m
CONFIG_NET_CLS_U32=y
CONFIG_NET_ACT_POLICE=m
";

    #[test]
    fn y_and_m_count_as_there_not_set_and_absent_as_missing() {
        let k = KernelSupport::from_config(CONFIG, "x");
        assert_eq!(
            k.missing.iter().copied().collect::<Vec<_>>(),
            [KernelFeature::Netem, KernelFeature::Sfq, KernelFeature::ClsFw]
        );
        assert_eq!(k.lacks(&KernelFeature::RATE), [KernelFeature::Sfq, KernelFeature::ClsFw]);
        assert_eq!(KernelFeature::Netem.to_string(), "sch_netem (CONFIG_NET_SCH_NETEM)");
    }

    #[test]
    fn reads_proc_config_gz_else_boot_config_else_unknown() {
        let d = tempfile::tempdir().unwrap();
        let (proc, boot) = (d.path().join("proc"), d.path().join("boot"));
        std::fs::create_dir_all(proc.join("sys/kernel")).unwrap();
        std::fs::create_dir_all(&boot).unwrap();
        assert_eq!(KernelSupport::read_from(&proc, &boot).unwrap(), None, "nothing to read: unknown");
        std::fs::write(proc.join("sys/kernel/osrelease"), "6.1.0-test\n").unwrap();
        std::fs::write(boot.join("config-6.1.0-test"), "CONFIG_NET_SCH_NETEM=m\n").unwrap();
        let k = KernelSupport::read_from(&proc, &boot).unwrap().unwrap();
        assert!(!k.missing.contains(&KernelFeature::Netem) && k.missing.contains(&KernelFeature::Htb));
        assert!(k.source.ends_with("config-6.1.0-test"));
        // gzip as the kernel writes it (with a file name in the header, FNAME).
        std::fs::write(proc.join("config.gz"), gzip(CONFIG.as_bytes())).unwrap();
        let k = KernelSupport::read_from(&proc, &boot).unwrap().unwrap();
        assert!(k.missing.contains(&KernelFeature::Netem), "/proc/config.gz first");
        assert!(k.source.ends_with("config.gz"));
    }

    /// `CONFIG` compressed as the kernel's `/proc/config.gz` is: one gzip member with a file name.
    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut e = flate2::GzBuilder::new().filename("config").write(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// A `/proc/config.gz` that is there but damaged is an error, not a silent fall back to
    /// `/boot` or "unknown": a flipped bit in the data fails the CRC-32 (or the inflation), a
    /// cut-short file the trailer, a file that is not gzip the header.
    #[test]
    fn a_corrupt_proc_config_gz_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let (proc, boot) = (d.path().join("proc"), d.path().join("boot"));
        std::fs::create_dir_all(&proc).unwrap();
        let good = gzip(CONFIG.as_bytes());
        let mut flipped = good.clone();
        let n = flipped.len();
        flipped[n - 8] ^= 1; // the CRC-32 in the trailer
        let cases =
            [("crc", flipped), ("cut", good[..good.len() - 4].to_vec()), ("not gzip", CONFIG.as_bytes().to_vec())];
        for (what, bytes) in cases {
            std::fs::write(proc.join("config.gz"), bytes).unwrap();
            let e = KernelSupport::read_from(&proc, &boot).unwrap_err();
            assert!(e.to_string().contains("config.gz is not a whole gzip file"), "{what}: {e}");
        }
        std::fs::write(proc.join("config.gz"), good).unwrap();
        assert!(KernelSupport::read_from(&proc, &boot).unwrap().is_some());
    }
}
