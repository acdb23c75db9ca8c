//! Link impairment of a NIC: its rate limit (libvirt's `<bandwidth>`) and its delay, jitter
//! and loss (netem on the VM's tap): the validated values, their lab-file notation, the `tc`
//! arguments that set them and the reading of what `tc -j qdisc show` reports.
//!
//! Pure: no process is run here (`crate::host::tc` runs `tc`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A rate limit in libvirt's unit: kilobytes (1000 bytes) per second, the `average` of
/// `<bandwidth><inbound/><outbound/>` (libvirt passes it to tc as `kbps`, which tc reads as
/// 1000 bytes per second). Written in the lab file in bits per second: `8kbit`, `10Mbit`,
/// `1Gbit` (SI: k = 1000), like tc's and containerlab's rates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Rate(u32);

/// Why a `rate:` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("is not a whole number followed by a unit (kbit, Mbit or Gbit), without a space")]
    Format,
    #[error("is not a whole number of kilobytes per second (a multiple of 8kbit), which is libvirt's unit")]
    NotWholeKilobytes,
    #[error("is below libvirt's minimum of 1 kilobyte per second (8kbit)")]
    TooSmall,
    #[error("is above libvirt's maximum of 4294967295 kilobytes per second (34359738360kbit)")]
    TooLarge,
}

impl Rate {
    /// Parses `10Mbit`: a whole number and `kbit`, `Mbit` or `Gbit` (case-insensitive).
    /// Rules: libvirt's `<bandwidth>` attributes are unsignedInt >= 1 (its schema
    /// networkcommon.rng, `speed`), in kilobytes per second, so the rate must be a whole
    /// number of kB/s between 1 and 2^32 - 1.
    pub fn parse(s: &str) -> Result<Rate, RateError> {
        let t = s.trim();
        // One word, as tc and containerlab take it (`10Mbit`, not `10 Mbit`).
        if t.contains(char::is_whitespace) {
            return Err(RateError::Format);
        }
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or(RateError::Format)?;
        let (num, unit) = t.split_at(split);
        let n: u128 = num.parse().map_err(|_| RateError::Format)?;
        let kbit_per: u128 = match unit.to_ascii_lowercase().as_str() {
            "kbit" => 1,
            "mbit" => 1_000,
            "gbit" => 1_000_000,
            _ => return Err(RateError::Format),
        };
        let kbit = n.checked_mul(kbit_per).ok_or(RateError::TooLarge)?;
        if kbit == 0 {
            return Err(RateError::TooSmall);
        }
        if !kbit.is_multiple_of(8) {
            return Err(RateError::NotWholeKilobytes);
        }
        u32::try_from(kbit / 8).map(Rate).map_err(|_| RateError::TooLarge)
    }

    /// A rate of `kbytes` kilobytes per second (libvirt's value), if it is one (>= 1).
    pub fn from_kbytes(kbytes: u32) -> Option<Rate> {
        (kbytes > 0).then_some(Rate(kbytes))
    }

    /// libvirt's value: kilobytes (1000 bytes) per second.
    pub fn kbytes_per_sec(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Rate {
    /// In the lab file's notation, the largest unit that divides it: `10Mbit`, `8kbit`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kbit = u64::from(self.0) * 8;
        if kbit.is_multiple_of(1_000_000) {
            write!(f, "{}Gbit", kbit / 1_000_000)
        } else if kbit.is_multiple_of(1_000) {
            write!(f, "{}Mbit", kbit / 1_000)
        } else {
            write!(f, "{kbit}kbit")
        }
    }
}

/// A packet loss probability in parts per million (`1%` = 10000), 0 to 100%.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Loss(u32);

/// Why a `loss:` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LossError {
    #[error("is not a percentage such as `1%` or `0.5%` (at most 4 decimals, no space before `%`)")]
    Format,
    #[error("is above 100%, which tc refuses (\"Illegal \\\"loss percent\\\"\")")]
    Above100,
}

const PPM_PER_PERCENT: u32 = 10_000;

impl Loss {
    /// Parses `1%`, `0.5%`, `100%`. Rule: tc (iproute2 lib/utils.c `parse_percent`) refuses
    /// a percentage above 100 or below 0 ("Illegal \"loss percent\"").
    pub fn parse(s: &str) -> Result<Loss, LossError> {
        // One word like every unit of a NIC (`5%`, not `5 %`): tc's parse_percent wants the
        // `%` right after the number.
        let t = s.trim().strip_suffix('%').ok_or(LossError::Format)?;
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
            return Err(LossError::Format);
        }
        if frac.len() > 4 || !frac.bytes().all(|b| b.is_ascii_digit()) || (t.contains('.') && frac.is_empty()) {
            return Err(LossError::Format);
        }
        let whole: u64 = int.parse().map_err(|_| LossError::Above100)?;
        let frac_ppm: u64 =
            if frac.is_empty() { 0 } else { format!("{frac:0<4}").parse().map_err(|_| LossError::Format)? };
        let ppm = whole.checked_mul(u64::from(PPM_PER_PERCENT)).ok_or(LossError::Above100)? + frac_ppm;
        if ppm > 100 * u64::from(PPM_PER_PERCENT) {
            return Err(LossError::Above100);
        }
        u32::try_from(ppm).map(Loss).map_err(|_| LossError::Above100)
    }

    /// From a fraction (`0.01` = 1%), as `tc -j` prints it; rounded to 0.0001%.
    pub fn from_fraction(f: f64) -> Option<Loss> {
        if !(0.0..=1.0).contains(&f) {
            return None;
        }
        Some(Loss((f * 1e6).round() as u32))
    }

    /// Parts per million.
    pub fn ppm(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Loss {
    /// `1%`, `0.5%`, `0.0001%`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / PPM_PER_PERCENT;
        let frac = self.0 % PPM_PER_PERCENT;
        if frac == 0 {
            write!(f, "{whole}%")
        } else {
            let s = format!("{frac:04}");
            write!(f, "{whole}.{}%", s.trim_end_matches('0'))
        }
    }
}

/// A time for netem, in whole microseconds (tc's unit for netem's `delay`; it refuses `ns`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Micros(u64);

/// The largest netem time tc accepts: tc converts the time to the kernel's packet-scheduler
/// ticks (64 ns each, 15.625 per microsecond) into a 32-bit field and refuses more
/// ("Illegal ... time (too large)", iproute2 tc/tc_core.c and tc/q_netem.c): 274.877906 s.
pub const MAX_NETEM_MICROS: u64 = (u32::MAX as u64) * 64 / 1000;

/// Why a `delay:` or `jitter:` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("is not a duration such as `50ms`, `1.5ms` or `2s` ({0})")]
    Format(String),
    #[error("is not a whole number of microseconds (tc's unit for netem times)")]
    SubMicrosecond,
    #[error("is above 274.877906s, the largest netem time tc accepts (\"time (too large)\")")]
    TooLarge,
}

impl Micros {
    /// Parses a humantime duration (`50ms`, `1.5ms`, `2s`, `500us`). Rules: tc takes netem
    /// times in whole microseconds (`1ns` is "Illegal \"latency\"") and at most
    /// [`MAX_NETEM_MICROS`].
    pub fn parse(s: &str) -> Result<Micros, TimeError> {
        // One word like every unit of a NIC (`50ms`, not `50 ms`), as tc takes it.
        if s.trim().contains(char::is_whitespace) {
            return Err(TimeError::Format("no space between the number and the unit".into()));
        }
        let d = humantime::parse_duration(s.trim()).map_err(|e| TimeError::Format(e.to_string()))?;
        if d.subsec_nanos() % 1000 != 0 {
            return Err(TimeError::SubMicrosecond);
        }
        let us = d.as_micros();
        if us > u128::from(MAX_NETEM_MICROS) {
            return Err(TimeError::TooLarge);
        }
        Ok(Micros(us as u64))
    }

    /// From seconds, as `tc -j` prints netem times; rounded to the microsecond.
    pub fn from_secs_f64(s: f64) -> Option<Micros> {
        (s.is_finite() && s >= 0.0).then(|| Micros((s * 1e6).round() as u64))
    }

    pub fn from_micros(us: u64) -> Micros {
        Micros(us)
    }

    pub fn as_micros(self) -> u64 {
        self.0
    }

    pub fn as_duration(self) -> std::time::Duration {
        std::time::Duration::from_micros(self.0)
    }
}

impl fmt::Display for Micros {
    /// `50ms`, `1500us`, `2s` (the largest whole unit), `0ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0;
        if us == 0 {
            f.write_str("0ms")
        } else if us.is_multiple_of(1_000_000) {
            write!(f, "{}s", us / 1_000_000)
        } else if us.is_multiple_of(1_000) {
            write!(f, "{}ms", us / 1_000)
        } else {
            write!(f, "{us}us")
        }
    }
}

/// netem's settings on a tap: `delay` (with `jitter`, uniform +/- around it) and `loss`
/// (random). Applies to what the tap sends, i.e. traffic toward the VM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Netem {
    pub delay: Option<Micros>,
    pub jitter: Option<Micros>,
    pub loss: Option<Loss>,
}

impl Netem {
    /// True when netem would do nothing (no delay, no jitter, no loss, or all zero).
    pub fn is_none(&self) -> bool {
        self.delay.is_none_or(|d| d.0 == 0)
            && self.jitter.is_none_or(|d| d.0 == 0)
            && self.loss.is_none_or(|l| l.0 == 0)
    }

    /// The same settings with zero values dropped: what the kernel reports back.
    pub fn normalized(&self) -> Netem {
        Netem {
            delay: self.delay.filter(|d| d.0 > 0 || self.jitter.is_some_and(|j| j.0 > 0)),
            jitter: self.jitter.filter(|j| j.0 > 0),
            loss: self.loss.filter(|l| l.0 > 0),
        }
    }

    /// netem's arguments for `tc qdisc replace ... netem ARGS`: `delay 50000us 5000us loss 1%`.
    pub fn tc_args(&self) -> Vec<String> {
        let n = self.normalized();
        let mut out = Vec::new();
        if let Some(d) = n.delay.or(n.jitter.map(|_| Micros(0))) {
            out.push("delay".to_string());
            out.push(format!("{}us", d.0));
            if let Some(j) = n.jitter {
                out.push(format!("{}us", j.0));
            }
        }
        if let Some(l) = n.loss {
            out.push("loss".to_string());
            out.push(l.to_string());
        }
        out
    }
}

impl fmt::Display for Netem {
    /// `delay 50ms, jitter 5ms, loss 1%`; `none` when nothing is set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.normalized();
        let mut parts = Vec::new();
        if let Some(d) = n.delay {
            parts.push(format!("delay {d}"));
        }
        if let Some(j) = n.jitter {
            parts.push(format!("jitter {j}"));
        }
        if let Some(l) = n.loss {
            parts.push(format!("loss {l}"));
        }
        if parts.is_empty() { f.write_str("none") } else { f.write_str(&parts.join(", ")) }
    }
}

/// A NIC's impairment as the lab file asks for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Impairment {
    /// libvirt's `<bandwidth>`: the same average both ways.
    pub rate: Option<Rate>,
    /// netem on the tap; `None` when nothing is asked.
    pub netem: Option<Netem>,
}

/// libvirt's `<bandwidth>` of an interface as found in its XML: the `average` of
/// `<inbound>` (toward the VM) and `<outbound>` (from it), in kilobytes per second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ObservedBandwidth {
    pub inbound: Option<u32>,
    pub outbound: Option<u32>,
    /// A `peak`, `burst` or `floor` is set on either side (topo never sets them).
    pub extra: bool,
}

impl ObservedBandwidth {
    /// How it reads in the plan: `10Mbit` when both directions have the same average and
    /// nothing else is set, else each side spelled out.
    pub fn describe(&self) -> String {
        let side = |v: Option<u32>| v.and_then(Rate::from_kbytes).map_or("none".to_string(), |r| r.to_string());
        match (self.inbound.and_then(Rate::from_kbytes), self.outbound.and_then(Rate::from_kbytes), self.extra) {
            (Some(i), Some(o), false) if i == o => i.to_string(),
            _ => format!(
                "inbound {}, outbound {}{}",
                side(self.inbound),
                side(self.outbound),
                if self.extra { " (with peak/burst/floor)" } else { "" }
            ),
        }
    }

    /// True when it has no setting at all.
    pub fn is_empty(&self) -> bool {
        self.inbound.is_none() && self.outbound.is_none() && !self.extra
    }
}

/// Where netem sits on a tap: under libvirt's htb class `1:1` (libvirt's `<bandwidth
/// inbound>` makes the tap's root an htb qdisc `1:` with class `1:1` and an sfq leaf `2:`;
/// netem `1f00:` takes the leaf's place), or as the tap's root qdisc when libvirt put none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetemParent {
    /// `parent 1:1 handle 1f00:`: in place of libvirt's sfq leaf `2:`.
    HtbLeaf,
    /// `root handle 1f00:`.
    Root,
}

/// The egress qdiscs of a tap as `tc -j qdisc show dev TAP` reports them, reduced to what
/// topo needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TapQdiscs {
    /// libvirt's htb root `1:` is there (a `<bandwidth inbound>` is in effect).
    pub htb: bool,
    /// The netem qdisc on the tap's egress, and where it sits.
    pub netem: Option<(NetemParent, Netem)>,
}

/// The handle topo gives its netem qdisc, at the root or under libvirt's htb class (any
/// major number libvirt does not use would do: libvirt takes `1:` and `2:`, the kernel's
/// defaults are `0:` and `ffff:`).
pub const NETEM_HANDLE: &str = "1f00:";

/// Why `tc -j qdisc show` output could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read tc's qdisc list: {0}")]
pub struct QdiscParseError(pub String);

#[derive(Deserialize)]
struct QdiscJson {
    kind: String,
    /// The device (only in a listing of every device, `tc -j qdisc show`).
    #[serde(default)]
    dev: Option<String>,
    #[serde(default)]
    handle: Option<String>,
    #[serde(default)]
    parent: Option<String>,
    #[serde(default)]
    root: Option<bool>,
    #[serde(default)]
    options: Option<serde_json::Value>,
}

/// Reads `tc -j qdisc show dev TAP`. iproute2 prints netem's times in seconds and its
/// percentages as fractions in JSON (tc/q_netem.c `netem_print_opt`: `"delay":{"delay":
/// 0.05,"jitter":0.005}`, `"loss-random":{"loss":0.01}`).
pub fn parse_tc_qdiscs(json: &str) -> Result<TapQdiscs, QdiscParseError> {
    let list: Vec<QdiscJson> = serde_json::from_str(json).map_err(|e| QdiscParseError(e.to_string()))?;
    Ok(reduce(&list))
}

/// Reads `tc -j qdisc show` (every device at once: each entry names its `dev`), per device.
pub fn parse_tc_qdiscs_by_dev(json: &str) -> Result<std::collections::BTreeMap<String, TapQdiscs>, QdiscParseError> {
    let list: Vec<QdiscJson> = serde_json::from_str(json).map_err(|e| QdiscParseError(e.to_string()))?;
    let mut by_dev: std::collections::BTreeMap<String, Vec<QdiscJson>> = std::collections::BTreeMap::new();
    for q in list {
        let Some(dev) = q.dev.clone() else { return Err(QdiscParseError("an entry without `dev`".into())) };
        by_dev.entry(dev).or_default().push(q);
    }
    Ok(by_dev.into_iter().map(|(d, l)| (d, reduce(&l))).collect())
}

fn reduce(list: &[QdiscJson]) -> TapQdiscs {
    let mut out = TapQdiscs::default();
    for q in list {
        let is_root = q.root == Some(true) || q.parent.is_none();
        if q.kind == "htb" && is_root {
            out.htb = true;
        }
        if q.kind == "netem" {
            let parent = if is_root { NetemParent::Root } else { NetemParent::HtbLeaf };
            let opts = q.options.as_ref();
            let delay_obj = opts.and_then(|o| o.get("delay"));
            let secs =
                |k: &str| delay_obj.and_then(|d| d.get(k)).and_then(|v| v.as_f64()).and_then(Micros::from_secs_f64);
            let loss = opts
                .and_then(|o| o.get("loss-random"))
                .and_then(|l| l.get("loss"))
                .and_then(|v| v.as_f64())
                .and_then(Loss::from_fraction);
            let netem = Netem { delay: secs("delay"), jitter: secs("jitter"), loss }.normalized();
            out.netem = Some((parent, netem));
        }
        let _ = &q.handle;
    }
    out
}

/// The `tc` arguments (after `tc`) that give the tap `tap` the netem settings `want`, given
/// what is on it now: netem replaces libvirt's sfq leaf under its htb class when libvirt's
/// `<bandwidth inbound>` is in effect, else it is the tap's root qdisc; `None` (or
/// settings that do nothing) removes topo's netem: libvirt's sfq leaf is put back, or the
/// root qdisc deleted (the kernel puts its default back). Empty when nothing is to do.
pub fn tc_commands(tap: &str, now: &TapQdiscs, want: Option<&Netem>) -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let want = want.map(Netem::normalized).filter(|n| !n.is_none());
    match (want, &now.netem) {
        (None, None) => Vec::new(),
        (None, Some((NetemParent::HtbLeaf, _))) => {
            // libvirt's own leaf (src/util/virnetdevbandwidth.c: `sfq perturb 10`).
            vec![s(&["qdisc", "replace", "dev", tap, "parent", "1:1", "handle", "2:", "sfq", "perturb", "10"])]
        }
        (None, Some((NetemParent::Root, _))) => vec![s(&["qdisc", "del", "dev", tap, "root"])],
        (Some(n), _) => {
            // Under htb, topo's own handle: `replace` with libvirt's `2:` would ask the kernel
            // to change the sfq there into a netem ("Invalid qdisc name"); another handle makes
            // it create the netem and graft it in the sfq's place (net/sched/sch_api.c
            // tc_modify_qdisc), and later replaces change that netem in place.
            let mut cmd = if now.htb {
                s(&["qdisc", "replace", "dev", tap, "parent", "1:1", "handle", NETEM_HANDLE, "netem"])
            } else {
                s(&["qdisc", "replace", "dev", tap, "root", "handle", NETEM_HANDLE, "netem"])
            };
            cmd.extend(n.tc_args());
            vec![cmd]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_in_libvirt_units() {
        assert_eq!(Rate::parse("10Mbit").unwrap().kbytes_per_sec(), 1250);
        assert_eq!(Rate::parse("8kbit").unwrap().kbytes_per_sec(), 1);
        assert_eq!(Rate::parse("1gbit").unwrap().kbytes_per_sec(), 125_000);
        assert_eq!(Rate::parse("10Mbit").unwrap().to_string(), "10Mbit");
        assert_eq!(Rate::parse("8000kbit").unwrap().to_string(), "8Mbit");
        assert_eq!(Rate::parse("1Mbit").unwrap().to_string(), "1Mbit");
        assert_eq!(Rate::from_kbytes(3).unwrap().to_string(), "24kbit");
        // libvirt's schema (networkcommon.rng, `speed`): unsignedInt, minInclusive 1, in kB/s.
        assert_eq!(Rate::parse("0kbit"), Err(RateError::TooSmall));
        assert_eq!(Rate::parse("4kbit"), Err(RateError::NotWholeKilobytes));
        assert_eq!(Rate::parse("100kbit"), Err(RateError::NotWholeKilobytes));
        assert!(Rate::parse("34359738360kbit").is_ok());
        assert_eq!(Rate::parse("34359738368kbit"), Err(RateError::TooLarge));
        assert_eq!(Rate::parse("99999999999999999999999999999999999999999Gbit"), Err(RateError::Format));
        for bad in ["10", "10 Mbit", "Mbit", "10MB", "-8kbit", "1.5Mbit", ""] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loss_percentages() {
        assert_eq!(Loss::parse("1%").unwrap().ppm(), 10_000);
        assert_eq!(Loss::parse("0.5%").unwrap().to_string(), "0.5%");
        assert_eq!(Loss::parse("0.0001%").unwrap().ppm(), 1);
        assert_eq!(Loss::parse("100%").unwrap().to_string(), "100%");
        assert_eq!(Loss::parse("0%").unwrap().ppm(), 0);
        // tc, iproute2 lib/utils.c parse_percent: above 100% is "Illegal \"loss percent\"".
        assert_eq!(Loss::parse("100.0001%"), Err(LossError::Above100));
        assert_eq!(Loss::parse("101%"), Err(LossError::Above100));
        for bad in ["1", "-1%", "1.%", ".5%", "0.00001%", "x%", "1%%", ""] {
            assert!(Loss::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Loss::from_fraction(0.01), Some(Loss(10_000)));
        assert_eq!(Loss::from_fraction(0.015000000232), Some(Loss(15_000)));
    }

    #[test]
    fn netem_times() {
        assert_eq!(Micros::parse("50ms").unwrap().as_micros(), 50_000);
        assert_eq!(Micros::parse("1500us").unwrap().to_string(), "1500us");
        assert_eq!(Micros::parse("2s").unwrap().to_string(), "2s");
        // tc refuses `1ns` ("Illegal \"latency\"") and times over 2^32 ticks of 64 ns.
        assert_eq!(Micros::parse("1ns"), Err(TimeError::SubMicrosecond));
        assert!(Micros::parse("274s").is_ok());
        assert_eq!(Micros::parse("275s"), Err(TimeError::TooLarge));
        assert!(matches!(Micros::parse("fast"), Err(TimeError::Format(_))));
        // Every NIC unit is one word, as tc takes it: `10Mbit`, `5%`, `50ms`.
        assert!(matches!(Micros::parse("50 ms"), Err(TimeError::Format(_))));
        assert_eq!(Loss::parse("5 %"), Err(LossError::Format));
        assert_eq!(Rate::parse("10 Mbit"), Err(RateError::Format));
        assert!(Loss::parse(" 5% ").is_ok() && Rate::parse("10Mbit").is_ok());
        assert_eq!(Micros::from_secs_f64(0.05), Some(Micros(50_000)));
    }

    #[test]
    fn netem_args_and_display() {
        let n =
            Netem { delay: Some(Micros(50_000)), jitter: Some(Micros(5_000)), loss: Some(Loss::parse("1%").unwrap()) };
        assert_eq!(n.tc_args(), ["delay", "50000us", "5000us", "loss", "1%"]);
        assert_eq!(n.to_string(), "delay 50ms, jitter 5ms, loss 1%");
        let loss_only = Netem { loss: Some(Loss::parse("0.5%").unwrap()), ..Netem::default() };
        assert_eq!(loss_only.tc_args(), ["loss", "0.5%"]);
        assert!(Netem { delay: Some(Micros(0)), ..Netem::default() }.is_none());
        assert_eq!(Netem::default().to_string(), "none");
    }

    /// What iproute2 6.1's `tc -j qdisc show` printed on a Debian 12 kernel (6.1, with
    /// sch_netem, sch_htb, sch_sfq) for a veth set up as libvirt sets up a tap with
    /// `<bandwidth>`, after topo's commands (docs/e2e.md, "netem on a real kernel").
    #[test]
    fn reads_tc_json() {
        let libvirt_only = r#"[{"kind":"htb","handle":"1:","root":true,"refcnt":2,"options":{"r2q":10,"default":"0x1","direct_packets_stat":0,"direct_qlen":1000}},{"kind":"sfq","handle":"2:","parent":"1:1","options":{"limit":127,"quantum":1514,"depth":127,"divisor":1024,"perturb":10}},{"kind":"ingress","handle":"ffff:","parent":"ffff:fff1","options":{}}]"#;
        let q = parse_tc_qdiscs(libvirt_only).unwrap();
        assert!(q.htb);
        assert_eq!(q.netem, None);
        let leaf = r#"[{"kind":"htb","handle":"1:","root":true,"refcnt":2,"options":{"r2q":10,"default":"0x1","direct_packets_stat":0,"direct_qlen":1000}},{"kind":"netem","handle":"1f00:","parent":"1:1","options":{"limit":1000,"delay":{"delay":0.05,"jitter":0.005,"correlation":0},"loss-random":{"loss":0.01,"correlation":0},"ecn":false,"gap":0}},{"kind":"ingress","handle":"ffff:","parent":"ffff:fff1","options":{}}]"#;
        let q = parse_tc_qdiscs(leaf).unwrap();
        let want =
            Netem { delay: Some(Micros(50_000)), jitter: Some(Micros(5_000)), loss: Some(Loss::parse("1%").unwrap()) };
        assert_eq!(q, TapQdiscs { htb: true, netem: Some((NetemParent::HtbLeaf, want)) });
        let root = r#"[{"kind":"netem","handle":"1f00:","root":true,"refcnt":2,"options":{"limit":1000,"delay":{"delay":0.02,"jitter":0.005,"correlation":0},"loss-random":{"loss":0.005,"correlation":0},"ecn":false,"gap":0}}]"#;
        let q = parse_tc_qdiscs(root).unwrap();
        let want = Netem {
            delay: Some(Micros(20_000)),
            jitter: Some(Micros(5_000)),
            loss: Some(Loss::parse("0.5%").unwrap()),
        };
        assert_eq!(q, TapQdiscs { htb: false, netem: Some((NetemParent::Root, want)) });
        let all_lost = r#"[{"kind":"netem","handle":"1f00:","root":true,"refcnt":2,"options":{"limit":1000,"loss-random":{"loss":1,"correlation":0},"ecn":false,"gap":0}}]"#;
        let q = parse_tc_qdiscs(all_lost).unwrap();
        assert_eq!(
            q.netem,
            Some((NetemParent::Root, Netem { loss: Some(Loss::parse("100%").unwrap()), ..Netem::default() }))
        );
        let noqueue = r#"[{"kind":"noqueue","handle":"0:","root":true,"refcnt":2,"options":{}}]"#;
        assert_eq!(parse_tc_qdiscs(noqueue).unwrap(), TapQdiscs::default());
        assert!(parse_tc_qdiscs("not json").is_err());
        // Every device at once (`tc -j qdisc show`, iproute2 6.1 on this project's CI host).
        let all = r#"[{"kind":"noqueue","handle":"0:","dev":"lo","root":true,"refcnt":2,"options":{}},{"kind":"pfifo_fast","handle":"0:","dev":"eth0","root":true,"refcnt":2,"options":{"bands":3,"priomap":[1,2,2,2,1,2,0,0,1,1,1,1,1,1,1,1],"multiqueue":false}},{"kind":"netem","handle":"1f00:","dev":"vnet3","root":true,"refcnt":2,"options":{"limit":1000,"delay":{"delay":0.05,"jitter":0,"correlation":0},"ecn":false,"gap":0}}]"#;
        let by = parse_tc_qdiscs_by_dev(all).unwrap();
        assert_eq!(by.keys().collect::<Vec<_>>(), ["eth0", "lo", "vnet3"]);
        assert_eq!(
            by["vnet3"].netem,
            Some((NetemParent::Root, Netem { delay: Some(Micros(50_000)), ..Netem::default() }))
        );
        assert_eq!(by["lo"], TapQdiscs::default());
        assert!(parse_tc_qdiscs_by_dev(noqueue).is_err(), "a per-device listing has no `dev`");
    }

    /// scripts/netem-kernel-check.sh runs these very commands on a kernel with netem (its
    /// lines marked `# topo:`), in this order: the two cases of each kind of tap.
    #[test]
    fn the_kernel_check_script_runs_topos_commands() {
        const SCRIPT: &str = include_str!("../../scripts/netem-kernel-check.sh");
        let lines: Vec<String> = SCRIPT
            .lines()
            .filter_map(|l| l.strip_suffix(" # topo:"))
            .map(|l| l.trim_start_matches("run ").to_string())
            .collect();
        let n = |s: &str| {
            let mut out = Netem::default();
            for part in s.split(", ") {
                let (k, v) = part.split_once(' ').unwrap();
                match k {
                    "delay" => out.delay = Some(Micros::parse(v).unwrap()),
                    "jitter" => out.jitter = Some(Micros::parse(v).unwrap()),
                    _ => out.loss = Some(Loss::parse(v).unwrap()),
                }
            }
            out
        };
        let htb = |netem: Option<Netem>| TapQdiscs { htb: true, netem: netem.map(|x| (NetemParent::HtbLeaf, x)) };
        let root = |netem: Option<Netem>| TapQdiscs { htb: false, netem: netem.map(|x| (NetemParent::Root, x)) };
        let d50 = n("delay 50ms");
        let cases = [
            tc_commands("tap0", &htb(None), Some(&n("delay 50ms, jitter 5ms, loss 1%"))),
            tc_commands("tap0", &htb(Some(d50)), Some(&n("delay 80ms"))),
            tc_commands("tap0", &htb(Some(n("delay 80ms"))), None),
            tc_commands("tap1", &root(None), Some(&d50)),
            tc_commands("tap1", &root(Some(d50)), Some(&n("delay 20ms, jitter 5ms, loss 0.5%"))),
            tc_commands("tap1", &root(Some(d50)), None),
        ];
        let want: Vec<String> = cases.iter().flatten().map(|c| c.join(" ")).collect();
        assert_eq!(lines, want);
    }

    #[test]
    fn commands_for_each_case() {
        let n = Netem { delay: Some(Micros(50_000)), ..Netem::default() };
        let none = TapQdiscs::default();
        let htb = TapQdiscs { htb: true, netem: None };
        assert_eq!(
            tc_commands("vnet0", &none, Some(&n)),
            [["qdisc", "replace", "dev", "vnet0", "root", "handle", "1f00:", "netem", "delay", "50000us"]]
        );
        assert_eq!(
            tc_commands("vnet0", &htb, Some(&n)),
            [["qdisc", "replace", "dev", "vnet0", "parent", "1:1", "handle", "1f00:", "netem", "delay", "50000us"]]
        );
        assert!(tc_commands("vnet0", &none, None).is_empty());
        assert!(tc_commands("vnet0", &htb, Some(&Netem::default())).is_empty());
        let root = TapQdiscs { htb: false, netem: Some((NetemParent::Root, n)) };
        assert_eq!(tc_commands("vnet0", &root, None), [["qdisc", "del", "dev", "vnet0", "root"]]);
        let leaf = TapQdiscs { htb: true, netem: Some((NetemParent::HtbLeaf, n)) };
        assert_eq!(
            tc_commands("vnet0", &leaf, None),
            [["qdisc", "replace", "dev", "vnet0", "parent", "1:1", "handle", "2:", "sfq", "perturb", "10"]]
        );
    }
}
