//! A minimal exact parser for Kubernetes resource quantities ("128Mi", "0.5", "1e3", "250m"),
//! enough for emptyDir size limits and downward API resource values.

/// An exact quantity: `numerator / 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Quantity {
    numerator: i128,
    scale: u32,
}

/// Why a quantity string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The text does not follow the quantity grammar.
    #[error("quantity {0:?} is not a valid quantity")]
    Syntax(String),
    /// The value does not fit the range the kubelet can represent.
    #[error("quantity {0:?} is out of range")]
    Range(String),
}

/// Largest exponent we accept; beyond it the value cannot fit an i64 anyway.
const MAX_EXP10: i32 = 30;

impl Quantity {
    /// Parses the canonical quantity grammar: sign, digits with an optional fraction, and one
    /// suffix (binary SI `Ki`..`Ei`, decimal SI `m`..`E`, or a decimal exponent `e<int>`).
    pub(super) fn parse(text: &str) -> Result<Self, QuantityError> {
        let syntax = || QuantityError::Syntax(text.to_string());
        let range = || QuantityError::Range(text.to_string());
        let s = text;
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_end);
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(syntax());
        }
        let (exp10, pow1024) = parse_suffix(suffix).ok_or_else(syntax)?;
        let mut mantissa: i128 = 0;
        for b in int_part.bytes().chain(frac_part.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(b - b'0')))
                .ok_or_else(range)?;
        }
        for _ in 0..pow1024 {
            mantissa = mantissa.checked_mul(1024).ok_or_else(range)?;
        }
        let frac_digits = i32::try_from(frac_part.len()).map_err(|_| range())?;
        let net = exp10 - frac_digits;
        if !(-MAX_EXP10..=MAX_EXP10).contains(&net) {
            if mantissa == 0 {
                return Ok(Quantity {
                    numerator: 0,
                    scale: 0,
                });
            }
            return Err(range());
        }
        let (numerator, scale) = if net >= 0 {
            let factor = 10i128.checked_pow(net.unsigned_abs()).ok_or_else(range)?;
            (mantissa.checked_mul(factor).ok_or_else(range)?, 0)
        } else {
            (mantissa, net.unsigned_abs())
        };
        let numerator = if negative { -numerator } else { numerator };
        Ok(Quantity { numerator, scale })
    }

    /// The value rounded up to an integer, like `Quantity.Value()`.
    pub(super) fn ceil_value(&self) -> Option<i64> {
        self.ceil_scaled(0)
    }

    /// The value in thousandths rounded up, like `Quantity.MilliValue()`.
    pub(super) fn ceil_milli(&self) -> Option<i64> {
        self.ceil_scaled(3)
    }

    /// Whether the quantity is exactly zero.
    pub(super) fn is_zero(&self) -> bool {
        self.numerator == 0
    }

    fn ceil_scaled(&self, digits: u32) -> Option<i64> {
        let (num, den) = if digits >= self.scale {
            let f = 10i128.checked_pow(digits - self.scale)?;
            (self.numerator.checked_mul(f)?, 1)
        } else {
            (self.numerator, 10i128.checked_pow(self.scale - digits)?)
        };
        let q = num.div_euclid(den);
        let q = if num.rem_euclid(den) != 0 { q + 1 } else { q };
        i64::try_from(q).ok()
    }
}

/// Returns (power of ten, power of 1024) for a suffix.
fn parse_suffix(suffix: &str) -> Option<(i32, u32)> {
    let decimal = match suffix {
        "" => Some(0),
        "m" => Some(-3),
        "k" => Some(3),
        "M" => Some(6),
        "G" => Some(9),
        "T" => Some(12),
        "P" => Some(15),
        "E" => Some(18),
        _ => None,
    };
    if let Some(e) = decimal {
        return Some((e, 0));
    }
    let binary = match suffix {
        "Ki" => Some(1),
        "Mi" => Some(2),
        "Gi" => Some(3),
        "Ti" => Some(4),
        "Pi" => Some(5),
        "Ei" => Some(6),
        _ => None,
    };
    if let Some(p) = binary {
        return Some((0, p));
    }
    let exp = suffix
        .strip_prefix('e')
        .or_else(|| suffix.strip_prefix('E'))?;
    let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let e: i32 = exp.parse().ok()?;
    Some((e, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> i64 {
        Quantity::parse(s)
            .ok()
            .and_then(|q| q.ceil_value())
            .unwrap_or(i64::MIN)
    }

    fn milli(s: &str) -> i64 {
        Quantity::parse(s)
            .ok()
            .and_then(|q| q.ceil_milli())
            .unwrap_or(i64::MIN)
    }

    #[test]
    fn binary_and_decimal_suffixes() {
        assert_eq!(value("1Ki"), 1024);
        assert_eq!(value("64Mi"), 64 << 20);
        assert_eq!(value("1.5Gi"), 3 << 29);
        assert_eq!(value("2Ei"), 2 << 60);
        assert_eq!(value("1k"), 1000);
        assert_eq!(value("3M"), 3_000_000);
        assert_eq!(value("1G"), 1_000_000_000);
        assert_eq!(value("+7"), 7);
        assert_eq!(value("1e3"), 1000);
        assert_eq!(value("1E3"), 1000);
        assert_eq!(value("2E"), 2_000_000_000_000_000_000);
        assert_eq!(value("12e-1"), 2);
    }

    #[test]
    fn fractions_round_up() {
        assert_eq!(value("100m"), 1);
        assert_eq!(milli("100m"), 100);
        assert_eq!(milli("0.5"), 500);
        assert_eq!(milli(".25"), 250);
        assert_eq!(milli("1."), 1000);
        assert_eq!(milli("0.0001"), 1);
        assert_eq!(value("0"), 0);
        assert!(Quantity::parse("0").is_ok_and(|q| q.is_zero()));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "", "abc", "1Kb", "1.2.3", "--1", "1 Mi", "Mi", ".", "1e", "1e+", "1ee3", "1KiB",
            "0x10", "1e99999",
        ] {
            assert!(
                matches!(Quantity::parse(bad), Err(QuantityError::Syntax(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn overflow_is_a_range_error() {
        assert!(matches!(
            Quantity::parse("99999999999999999999999999999999999999999"),
            Err(QuantityError::Range(_))
        ));
        assert!(matches!(
            Quantity::parse("1e40"),
            Err(QuantityError::Range(_))
        ));
        assert_eq!(
            Quantity::parse("100Ei").ok().and_then(|q| q.ceil_value()),
            None
        );
    }
}
