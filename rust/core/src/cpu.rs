//! Runtime CPU feature detection (release wheels are built without `target-cpu`).

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
