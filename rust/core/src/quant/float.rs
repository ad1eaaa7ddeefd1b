//! Element codecs for the small OCP floats (E4M3 "fn", E5M2, E2M1) and IEEE half.
//!
//! Encoding is round-to-nearest-even on the float32 bit pattern, bit-identical to
//! `ml_dtypes`: normal results use an integer rounding add on the re-biased bits,
//! subnormal results use the magic-constant float addition (the FPU rounds half to
//! even), so the kernels are branch-free and vectorise in a baseline x86-64 build.
//!
//! Out-of-range and special values:
//! * NaN: E4M3 -> `S.1111.111`, E5M2 -> `S.11111.10`, E2M1 (no NaN) -> the code
//!   `ml_dtypes` produces (`0x8` for +NaN, `0x0` for -NaN), half -> quiet NaN.
//! * ±Inf: E4M3 -> NaN, E5M2 / half -> ±Inf, E2M1 -> ±6.
//! * finite overflow: `saturate = true` clamps to ±max; otherwise E4M3 -> NaN,
//!   E5M2 / half -> ±Inf and E2M1 -> ±6 (as `ml_dtypes`).

/// Which small float format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FloatKind {
    /// OCP E4M3 ("fn": no infinities, NaN = S.1111.111), bias 7, max 448.
    E4M3,
    /// OCP E5M2 (IEEE-like), bias 15, max 57344.
    E5M2,
    /// OCP E2M1 (FP4), bias 1, max 6, no NaN or infinity.
    E2M1,
    /// IEEE binary16 (used for GGUF block scales).
    F16,
}

/// Bit layout of a small float.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub kind: FloatKind,
    pub mbits: u32,
    pub ebits: u32,
    pub bias: u32,
    /// Magnitude code of the largest finite value.
    pub max_code: u32,
}

impl Spec {
    pub const fn of(kind: FloatKind) -> Spec {
        match kind {
            FloatKind::E4M3 => Spec {
                kind,
                mbits: 3,
                ebits: 4,
                bias: 7,
                max_code: 0x7E,
            },
            FloatKind::E5M2 => Spec {
                kind,
                mbits: 2,
                ebits: 5,
                bias: 15,
                max_code: 0x7B,
            },
            FloatKind::E2M1 => Spec {
                kind,
                mbits: 1,
                ebits: 2,
                bias: 1,
                max_code: 0x7,
            },
            FloatKind::F16 => Spec {
                kind,
                mbits: 10,
                ebits: 5,
                bias: 15,
                max_code: 0x7BFF,
            },
        }
    }

    /// Number of bits of a code (sign included).
    pub const fn bits(&self) -> u32 {
        1 + self.ebits + self.mbits
    }

    /// Largest finite value.
    pub fn max_value(&self) -> f32 {
        decode_one(self.max_code, self)
    }

    const fn sign_bit(&self) -> u32 {
        1 << (self.ebits + self.mbits)
    }
}

/// Encode one float32 (round to nearest even); see the module docs for specials.
#[inline(always)]
pub fn encode_one(x: f32, spec: &Spec, saturate: bool) -> u32 {
    let bits = x.to_bits();
    let abs = bits & 0x7fff_ffff;
    let neg = bits >> 31;
    // Smallest normal of the target, as float32 bits.
    let min_normal = (127 - spec.bias + 1) << 23;
    // Subnormal path: adding 2^(23 + 1 - bias - mbits) rounds to the subnormal quantum.
    let magic = f32::from_bits((127 + 23 + 1 - spec.bias - spec.mbits) << 23);
    let sub = (f32::from_bits(abs) + magic)
        .to_bits()
        .wrapping_sub(magic.to_bits());
    // Normal path: round the float32 mantissa half to even, then re-bias the exponent.
    let shift = 23 - spec.mbits;
    let rounded = abs
        .wrapping_add((1 << (shift - 1)) - 1)
        .wrapping_add((abs >> shift) & 1);
    let norm = (rounded >> shift).wrapping_sub((127 - spec.bias) << spec.mbits);
    let mag = if abs < min_normal { sub } else { norm };
    finish(
        mag as u64,
        abs > 0x7f80_0000,
        abs == 0x7f80_0000,
        neg,
        spec,
        saturate,
    )
}

/// The code of a rounded magnitude `mag` (already in the target's bit layout), with the
/// sign, the format's NaN / infinity codes and overflow (saturated or not) applied: the
/// shared ending of [`encode_one`] and [`encode_one_f64`].
#[inline(always)]
fn finish(mag: u64, is_nan: bool, is_inf: bool, neg: u32, spec: &Spec, saturate: bool) -> u32 {
    let sign = neg * spec.sign_bit();
    let (nan, inf, over) = match spec.kind {
        FloatKind::E4M3 => (0x7F | sign, 0x7F | sign, 0x7F | sign),
        FloatKind::E5M2 => (0x7E | sign, 0x7C | sign, 0x7C | sign),
        FloatKind::E2M1 => ((1 - neg) << 3, 0x7 | sign, 0x7 | sign),
        FloatKind::F16 => (0x7E00 | sign, 0x7C00 | sign, 0x7C00 | sign),
    };
    let over = if saturate { spec.max_code | sign } else { over };
    if is_nan {
        nan
    } else if is_inf {
        inf
    } else if mag > spec.max_code as u64 {
        over
    } else {
        mag as u32 | sign
    }
}

/// Encode one float64 (round to nearest even, directly from float64 as `ml_dtypes`'
/// float64 casts do); specials and saturation as [`encode_one`].
#[inline(always)]
pub fn encode_one_f64(x: f64, spec: &Spec, saturate: bool) -> u32 {
    const INF: u64 = 0x7ff0_0000_0000_0000;
    let bits = x.to_bits();
    let abs = bits & !(1u64 << 63);
    let neg = (bits >> 63) as u32;
    let (bias, mbits) = (spec.bias as u64, spec.mbits as u64);
    let min_normal = (1023 - bias + 1) << 52;
    // subnormal results: adding 2^(52 + 1 - bias - mbits) rounds to the quantum
    let magic = f64::from_bits((1023 + 52 + 1 - bias - mbits) << 52);
    let sub = (f64::from_bits(abs) + magic)
        .to_bits()
        .wrapping_sub(magic.to_bits());
    // normal results: round the float64 mantissa half to even, then re-bias
    let shift = 52 - mbits;
    let rounded = abs + ((1 << (shift - 1)) - 1) + ((abs >> shift) & 1);
    let norm = (rounded >> shift).wrapping_sub((1023 - bias) << mbits);
    let mag = if abs < min_normal { sub } else { norm };
    finish(mag, abs > INF, abs == INF, neg, spec, saturate)
}

/// Decode one code (any bits above the format's width are ignored).
pub fn decode_one(code: u32, spec: &Spec) -> f32 {
    let nbits = spec.ebits + spec.mbits;
    let code = code & ((1 << (nbits + 1)) - 1);
    let neg = code >> nbits != 0;
    let e = (code >> spec.mbits) & ((1 << spec.ebits) - 1);
    let m = code & ((1 << spec.mbits) - 1);
    let emax_field = (1 << spec.ebits) - 1;
    let special = match spec.kind {
        FloatKind::E4M3 => (e == emax_field && m == (1 << spec.mbits) - 1).then_some(f32::NAN),
        FloatKind::E5M2 | FloatKind::F16 if e == emax_field => {
            Some(if m == 0 { f32::INFINITY } else { f32::NAN })
        }
        _ => None,
    };
    let v = match special {
        Some(v) => v,
        None => {
            let frac = m as f64 / (1u64 << spec.mbits) as f64;
            let v = if e == 0 {
                frac * 2f64.powi(1 - spec.bias as i32)
            } else {
                (1.0 + frac) * 2f64.powi(e as i32 - spec.bias as i32)
            };
            v as f32
        }
    };
    if v.is_nan() {
        // Quiet NaN carrying the code's payload, as a bit-shift widening (ml_dtypes) does.
        let payload = m << (23 - spec.mbits);
        let b = 0x7f80_0000 | payload | 0x0040_0000;
        return f32::from_bits(if neg { b | 0x8000_0000 } else { b });
    }
    if neg {
        -v
    } else {
        v
    }
}

/// 256-entry (or 16-entry) decode table.
pub fn decode_table(spec: &Spec) -> Vec<f32> {
    (0..1u32 << spec.bits())
        .map(|c| decode_one(c, spec))
        .collect()
}

/// The E4M3 decode table, built once.
pub fn e4m3_table() -> &'static [f32; 256] {
    static T: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    T.get_or_init(|| std::array::from_fn(|c| decode_one(c as u32, &E4M3)))
}

/// E8M0 scale code -> value (`2^(e-127)`, 0xFF = NaN).
#[inline(always)]
pub fn e8m0_value(code: u8) -> f32 {
    match code {
        0xFF => f32::NAN,
        0 => f32::from_bits(1 << 22),
        c => f32::from_bits((c as u32) << 23),
    }
}

/// `floor(log2(|x|))` for finite nonzero `x`, exactly (subnormals included).
#[inline(always)]
pub fn floor_log2(x: f32) -> i32 {
    let abs = x.to_bits() & 0x7fff_ffff;
    let e = (abs >> 23) as i32;
    if e == 0 {
        // subnormal: value = m * 2^-149
        31 - abs.leading_zeros() as i32 - 149
    } else {
        e - 127
    }
}

/// float32 -> IEEE half bits, round to nearest even (overflow -> inf, as numpy).
#[inline(always)]
pub fn f32_to_f16(x: f32) -> u16 {
    encode_one(x, &F16, false) as u16
}

/// IEEE half bits -> float32.
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let sign = (h & 0x8000) << 16;
    let e = (h >> 10) & 0x1f;
    let m = h & 0x3ff;
    let bits = if e == 0 {
        if m == 0 {
            0
        } else {
            // subnormal half: m * 2^-24, normal in float32
            let v = m as f32 * f32::from_bits((127 - 24) << 23);
            v.to_bits()
        }
    } else if e == 0x1f {
        0x7f80_0000 | (m << 13)
    } else {
        ((e + 127 - 15) << 23) | (m << 13)
    };
    f32::from_bits(bits | sign)
}

pub const E4M3: Spec = Spec::of(FloatKind::E4M3);
pub const E5M2: Spec = Spec::of(FloatKind::E5M2);
pub const E2M1: Spec = Spec::of(FloatKind::E2M1);
pub const F16: Spec = Spec::of(FloatKind::F16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        for spec in [E4M3, E5M2, E2M1, F16] {
            for c in 0..1u32 << spec.bits() {
                let v = decode_one(c, &spec);
                if v.is_nan() {
                    continue;
                }
                assert_eq!(
                    encode_one(v, &spec, false),
                    c,
                    "{:?} code {c:#x}",
                    spec.kind
                );
                if v.is_finite() {
                    assert_eq!(encode_one(v, &spec, true), c);
                }
            }
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(E4M3.max_value(), 448.0);
        assert_eq!(E5M2.max_value(), 57344.0);
        assert_eq!(E2M1.max_value(), 6.0);
        assert_eq!(decode_one(1, &E4M3), 2f32.powi(-9));
        assert_eq!(decode_one(1, &E5M2), 2f32.powi(-16));
        assert_eq!(encode_one(464.0, &E4M3, false), 0x7E); // tie to even
        assert_eq!(encode_one(500.0, &E4M3, false), 0x7F);
        assert_eq!(encode_one(500.0, &E4M3, true), 0x7E);
        assert_eq!(encode_one(-1e9, &E5M2, false), 0xFC);
        assert_eq!(encode_one(-1e9, &E5M2, true), 0xFB);
        assert_eq!(encode_one(f32::NAN, &E2M1, false), 0x8);
        assert_eq!(encode_one(0.25, &E2M1, false), 0x0); // tie to even (0)
        assert_eq!(encode_one(0.75, &E2M1, false), 0x2); // tie to even (1.0)
        assert_eq!(encode_one(5.0, &E2M1, false), 0x6); // tie 4|6 -> 4
        assert_eq!(f32_to_f16(65520.0), 0x7C00);
        for h in 0..=0xFFFFu16 {
            let v = f16_to_f32(h);
            if !v.is_nan() {
                assert_eq!(f32_to_f16(v), h);
                assert_eq!(v, decode_one(h as u32, &F16));
            }
        }
    }

    #[test]
    fn floor_log2_exact() {
        for (x, e) in [
            (1.0f32, 0),
            (1.999, 0),
            (2.0, 1),
            (0.75, -1),
            (f32::from_bits(1), -149),
        ] {
            assert_eq!(floor_log2(x), e);
        }
        assert_eq!(e8m0_value(127), 1.0);
        assert_eq!(e8m0_value(0), 2f32.powi(-127));
    }

    /// Brute-force nearest code (ties to the even code) over the decode table.
    fn nearest(x: f32, spec: &Spec) -> u32 {
        let mut best = (f64::INFINITY, 0u32);
        for c in 0..1u32 << spec.bits() {
            let v = decode_one(c, spec);
            if !v.is_finite() || (v == 0.0 && v.is_sign_negative() != x.is_sign_negative()) {
                continue;
            }
            let d = (v as f64 - x as f64).abs();
            if d < best.0 || (d == best.0 && c % 2 == 0) {
                best = (d, c);
            }
        }
        best.1
    }

    /// Brute-force nearest code of a float64 (ties to the even code).
    fn nearest_f64(x: f64, spec: &Spec) -> u32 {
        let mut best = (f64::INFINITY, 0u32);
        for c in 0..1u32 << spec.bits() {
            let v = decode_one(c, spec) as f64;
            if !v.is_finite() || (v == 0.0 && v.is_sign_negative() != x.is_sign_negative()) {
                continue;
            }
            let d = (v - x).abs();
            if d < best.0 || (d == best.0 && c % 2 == 0) {
                best = (d, c);
            }
        }
        best.1
    }

    #[test]
    fn f64_encode_agrees_with_f32_on_f32_values_and_specials() {
        for spec in [E4M3, E5M2, E2M1] {
            for bits in (0..0x7f80_0000u32)
                .step_by(4099)
                .chain([0x7f80_0000, 0x7fc0_0000])
            {
                for sign in [0, 0x8000_0000] {
                    let x = f32::from_bits(bits | sign);
                    for sat in [false, true] {
                        assert_eq!(
                            encode_one_f64(x as f64, &spec, sat),
                            encode_one(x, &spec, sat),
                            "{:?} {x} {sat}",
                            spec.kind
                        );
                    }
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn f64_encode_is_nearest_code(bits in 0u64..0x7ff0_0000_0000_0000, neg: bool) {
            let x = f64::from_bits(bits | if neg { 1 << 63 } else { 0 });
            for spec in [E4M3, E5M2, E2M1] {
                let max = spec.max_value() as f64;
                let want = nearest_f64(x.clamp(-max, max), &spec);
                proptest::prop_assert_eq!(encode_one_f64(x, &spec, true), want, "{:?} {}", spec.kind, x);
            }
        }

        #[test]
        fn f64_encode_near_midpoints(c in 0u32..0x7e, below: bool, k in 1u64..4) {
            // one to three float64 ulps beside each midpoint between neighbouring codes
            for spec in [E4M3, E5M2, E2M1] {
                if c >= spec.max_code { continue; }
                let m = (decode_one(c, &spec) as f64 + decode_one(c + 1, &spec) as f64) / 2.0;
                let x = f64::from_bits(if below { m.to_bits() - k } else { m.to_bits() + k });
                let want = if below { c } else { c + 1 };
                proptest::prop_assert_eq!(encode_one_f64(x, &spec, true), want);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn encode_is_nearest_code(bits in 0u32..0x7f80_0000, neg: bool) {
            let x = f32::from_bits(bits | if neg { 0x8000_0000 } else { 0 });
            for spec in [E4M3, E5M2, E2M1] {
                let max = spec.max_value();
                let want = nearest(x.clamp(-max, max), &spec);
                proptest::prop_assert_eq!(encode_one(x, &spec, true), want, "{:?} {}", spec.kind, x);
            }
        }
    }
}
