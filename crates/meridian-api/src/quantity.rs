//! Byte quantities in Kubernetes notation (`256Mi`, `2G`, `1.5Gi`).

use crate::ApiError;

/// Suffixes a byte quantity may carry and their multipliers. Milli (`m`) and the exponent
/// forms are Kubernetes quantities too, but make no sense for a byte count, so the CRD refuses
/// them (see [`MAXMEMORY_PATTERN`]) and so does this parser.
const SUFFIXES: [(&str, u64); 12] = [
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("Ei", 1 << 60),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000),
    ("E", 1_000_000_000_000_000_000),
];

/// Regular expression the CRD uses to validate `memory.maxmemory`; [`parse_byte_quantity`]
/// accepts exactly the strings it matches (up to `u64` overflow).
pub(crate) const MAXMEMORY_PATTERN: &str =
    "^([0-9]+|[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E))$";

/// The CEL rule validating `memory.maxmemory`: [`MAXMEMORY_PATTERN`] inside a CEL string
/// literal, where a backslash must itself be escaped.
pub(crate) fn maxmemory_rule() -> String {
    format!(
        "self.matches('{}')",
        MAXMEMORY_PATTERN.replace('\\', "\\\\")
    )
}

/// Parses a byte quantity such as `256Mi`, `1.5Gi`, `500M` or `1073741824` into bytes.
///
/// Fractional values are allowed only with a suffix and are rounded down to whole bytes.
pub fn parse_byte_quantity(value: &str) -> Result<u64, ApiError> {
    let invalid = |reason| ApiError::InvalidQuantity {
        value: value.to_owned(),
        reason,
    };
    let (number, multiplier) = SUFFIXES
        .iter()
        .find_map(|(suffix, multiplier)| {
            value
                .strip_suffix(suffix)
                .map(|number| (number, *multiplier))
        })
        .unwrap_or((value, 1));
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) {
        return Err(invalid(
            "expected digits followed by an optional unit suffix",
        ));
    }
    let whole: u64 = whole.parse().map_err(|_| invalid("number too large"))?;
    let mut bytes = whole
        .checked_mul(multiplier)
        .ok_or_else(|| invalid("number too large"))?;
    if let Some(fraction) = fraction {
        if multiplier == 1 {
            return Err(invalid("fractions need a unit suffix"));
        }
        if !all_digits(fraction) {
            return Err(invalid("expected digits after the decimal point"));
        }
        // Exact integer arithmetic on the first 18 fractional digits: more cannot change the
        // result by a whole byte for any multiplier up to Ei.
        let digits = &fraction[..fraction.len().min(18)];
        let numerator: u128 = digits.parse().map_err(|_| invalid("number too large"))?;
        let denominator = 10u128.pow(digits.len() as u32);
        let extra = numerator * u128::from(multiplier) / denominator;
        bytes = u64::try_from(extra)
            .ok()
            .and_then(|extra| bytes.checked_add(extra))
            .ok_or_else(|| invalid("number too large"))?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_suffixed_quantities() {
        assert_eq!(parse_byte_quantity("0"), Ok(0));
        assert_eq!(parse_byte_quantity("1073741824"), Ok(1 << 30));
        assert_eq!(parse_byte_quantity("256Mi"), Ok(256 << 20));
        assert_eq!(parse_byte_quantity("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_byte_quantity("500M"), Ok(500_000_000));
        assert_eq!(parse_byte_quantity("2k"), Ok(2_000));
        assert_eq!(parse_byte_quantity("1Ei"), Ok(1 << 60));
    }

    #[test]
    fn refuses_what_the_crd_pattern_refuses() {
        for bad in [
            "", "Mi", "-1", "1.5", "100m", "1e3", "1 Gi", "1gi", "1.Gi", "20000Ei", "1KB",
        ] {
            assert!(
                parse_byte_quantity(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }
}
