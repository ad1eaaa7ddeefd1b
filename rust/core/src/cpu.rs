//! Runtime CPU feature detection and kernel dispatch, in one place (release wheels are
//! built without `target-cpu`).
//!
//! Every SIMD kernel family asks this module whether it may run: [`level`] is the widest
//! family the CPU supports, capped by the `THRIFTY_ISA` environment variable
//! (`scalar`, `avx2` or `avx512`, read once per process). The cap serves tests and
//! exactness across machines: kernels whose float results depend on the family (the GEMM
//! micro-kernels behind top-k and k-means) give the same bits on every worker of a
//! cluster when all run with the same `THRIFTY_ISA`. An unknown value is ignored and
//! reported by `thrifty info` ([`isa_setting`]). The byte-exact formats (quant) give the
//! same bytes at every level.

use std::sync::OnceLock;

/// A family of kernels, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Portable Rust, no explicit SIMD.
    Scalar,
    /// AVX2 with FMA (x86-64).
    Avx2,
    /// AVX-512F (x86-64), on top of AVX2 + FMA.
    Avx512,
}

impl Level {
    /// The name `THRIFTY_ISA` accepts for this level.
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    /// Parse a `THRIFTY_ISA` value (case-insensitive; `native` means no cap).
    pub fn parse(s: &str) -> Option<Option<Level>> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Some(Some(Level::Scalar)),
            "avx2" => Some(Some(Level::Avx2)),
            "avx512" | "avx-512" => Some(Some(Level::Avx512)),
            "native" | "" => Some(None),
            _ => None,
        }
    }
}

struct Dispatch {
    detected: Level,
    level: Level,
    avx512dq: bool,
    /// AVX-512F + DQ + BW.
    avx512bw: bool,
    /// The raw `THRIFTY_ISA` value, and whether it was ignored (unknown).
    setting: Option<(String, bool)>,
}

fn detected_level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        if avx2 && std::arch::is_x86_feature_detected!("avx512f") {
            return Level::Avx512;
        }
        if avx2 {
            return Level::Avx2;
        }
    }
    Level::Scalar
}

fn dispatch() -> &'static Dispatch {
    static D: OnceLock<Dispatch> = OnceLock::new();
    D.get_or_init(|| {
        let detected = detected_level();
        let raw = std::env::var("THRIFTY_ISA").ok();
        let (cap, setting) = match raw {
            None => (None, None),
            Some(v) => match Level::parse(&v) {
                Some(cap) => (cap, Some((v, false))),
                None => (None, Some((v, true))),
            },
        };
        let level = cap.map_or(detected, |c| c.min(detected));
        #[cfg(target_arch = "x86_64")]
        let avx512dq = level >= Level::Avx512 && std::arch::is_x86_feature_detected!("avx512dq");
        #[cfg(not(target_arch = "x86_64"))]
        let avx512dq = false;
        #[cfg(target_arch = "x86_64")]
        let avx512bw = avx512dq
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl");
        #[cfg(not(target_arch = "x86_64"))]
        let avx512bw = false;
        Dispatch {
            detected,
            level,
            avx512dq,
            avx512bw,
            setting,
        }
    })
}

/// The widest kernel family the CPU supports (ignoring `THRIFTY_ISA`).
pub fn detected() -> Level {
    dispatch().detected
}

/// The kernel family in use: [`detected`], capped by `THRIFTY_ISA`.
pub fn level() -> Level {
    dispatch().level
}

/// Whether the AVX2 + FMA kernels may run.
#[inline]
pub fn avx2() -> bool {
    level() >= Level::Avx2
}

/// Whether the AVX-512F kernels may run.
#[inline]
pub fn avx512() -> bool {
    level() >= Level::Avx512
}

/// Whether the AVX-512F + DQ kernels may run.
#[inline]
pub fn avx512dq() -> bool {
    dispatch().avx512dq
}

/// Whether the AVX-512F + DQ + BW kernels may run (with VL: every CPU with BW has it,
/// and the byte kernels use its 128-bit forms).
#[inline]
pub fn avx512bw() -> bool {
    dispatch().avx512bw
}

/// The `THRIFTY_ISA` value as given, and whether it was ignored as unknown (`None`:
/// not set).
pub fn isa_setting() -> Option<(&'static str, bool)> {
    dispatch()
        .setting
        .as_ref()
        .map(|(v, ignored)| (v.as_str(), *ignored))
}

/// SIMD features of the running CPU that thrifty's kernels may use, by name.
pub fn simd_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut out = Vec::new();
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        if std::arch::is_x86_feature_detected!("sse4.2") {
            out.push("SSE4.2");
        }
        if std::arch::is_x86_feature_detected!("avx") {
            out.push("AVX");
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            out.push("AVX2");
        }
        if std::arch::is_x86_feature_detected!("fma") {
            out.push("FMA");
        }
        if std::arch::is_x86_feature_detected!("f16c") {
            out.push("F16C");
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            out.push("AVX-512F");
        }
        if std::arch::is_x86_feature_detected!("avx512bw") {
            out.push("AVX-512BW");
        }
        if std::arch::is_x86_feature_detected!("avx512vnni") {
            out.push("AVX-512VNNI");
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            out.push("NEON");
        }
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            out.push("DOTPROD");
        }
        if std::arch::is_aarch64_feature_detected!("sve") {
            out.push("SVE");
        }
    }
    out
}

/// Name of the CPU architecture this build targets.
pub fn arch() -> &'static str {
    std::env::consts::ARCH
}

#[cfg(test)]
mod tests {
    use super::Level;

    #[test]
    fn isa_values_parse() {
        assert_eq!(Level::parse("scalar"), Some(Some(Level::Scalar)));
        assert_eq!(Level::parse(" AVX2 "), Some(Some(Level::Avx2)));
        assert_eq!(Level::parse("avx512"), Some(Some(Level::Avx512)));
        assert_eq!(Level::parse("native"), Some(None));
        assert_eq!(Level::parse("sse9"), None);
        assert!(Level::Scalar < Level::Avx2 && Level::Avx2 < Level::Avx512);
        assert!(super::level() <= super::detected());
        assert!(!super::avx512dq() || super::avx512());
    }

    #[test]
    fn detection_runs_and_names_are_unique() {
        let f = super::simd_features();
        let mut g = f.clone();
        g.sort();
        g.dedup();
        assert_eq!(f.len(), g.len());
        #[cfg(target_arch = "x86_64")]
        assert!(f.contains(&"SSE4.2") || f.is_empty());
    }
}
