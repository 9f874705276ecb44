//! Kubernetes resource quantities (`500m`, `1.5Gi`, `2e3`), parsed exactly like
//! apimachinery's `resource.ParseQuantity`: values are kept in nanounits, rounded up to the
//! next nanounit and capped at 2^63-1 units, as the Quantity documentation promises.

use std::fmt;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::error::ConvertError;

/// Largest magnitude a quantity may have, in nanounits (2^63-1 units).
const CAP_NANOS: i128 = i64::MAX as i128 * 1_000_000_000;

/// Mantissa bound while accumulating digits: below it, `m * 1024` still fits in a u128.
const MANTISSA_LIMIT: u128 = 10u128.pow(35);

/// How far a decimal exponent is followed; anything beyond saturates or rounds to 1n.
const EXPONENT_CLAMP: i64 = 1_000_000;

/// Why a quantity string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The empty string.
    #[error("empty quantity")]
    Empty,
    /// Characters that are neither a number nor a suffix.
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Format,
    /// A well-formed suffix that is not one Kubernetes knows.
    #[error("unknown suffix {0:?}")]
    Suffix(String),
}

/// A parsed quantity: an exact amount in nanounits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Amount {
    nanos: i128,
}

impl Amount {
    /// Zero.
    pub const ZERO: Amount = Amount { nanos: 0 };

    /// Parses Kubernetes quantity syntax.
    pub fn parse(text: &str) -> Result<Amount, QuantityError> {
        if text.is_empty() {
            return Err(QuantityError::Empty);
        }
        let bytes = text.as_bytes();
        let mut pos = 0;
        let negative = match bytes[0] {
            b'-' => {
                pos = 1;
                true
            }
            b'+' => {
                pos = 1;
                false
            }
            _ => false,
        };
        let mut dec = Decimal::default();
        while let Some(d) = bytes.get(pos).filter(|b| b.is_ascii_digit()) {
            dec.push_integer_digit(d - b'0');
            pos += 1;
        }
        if bytes.get(pos) == Some(&b'.') {
            pos += 1;
            while let Some(d) = bytes.get(pos).filter(|b| b.is_ascii_digit()) {
                dec.push_fraction_digit(d - b'0');
                pos += 1;
            }
        }
        // Only ASCII has been consumed, so `pos` is a char boundary.
        let suffix = &text[pos..];
        check_suffix_shape(suffix)?;
        match interpret_suffix(suffix)? {
            Scale::Decimal(exponent) => dec.shift(exponent),
            Scale::Binary(times) => {
                for _ in 0..times {
                    dec.times_1024();
                }
            }
        }
        let magnitude = dec.to_nanos();
        Ok(Amount {
            nanos: if negative { -magnitude } else { magnitude },
        })
    }

    /// An amount of `nanos` nanounits, capped like parsed quantities.
    pub fn from_nanos(nanos: i128) -> Amount {
        Amount {
            nanos: nanos.clamp(-CAP_NANOS, CAP_NANOS),
        }
    }

    /// An amount of whole units.
    pub fn from_units(units: i64) -> Amount {
        Amount::from_nanos(i128::from(units) * 1_000_000_000)
    }

    /// The exact amount in nanounits.
    pub fn nanos(self) -> i128 {
        self.nanos
    }

    /// Whole units, rounded up away from zero (`Quantity.Value()`).
    pub fn value(self) -> i64 {
        scaled(self.nanos, 1_000_000_000)
    }

    /// Thousandths, rounded up away from zero (`Quantity.MilliValue()`), saturating.
    pub fn milli_value(self) -> i64 {
        scaled(self.nanos, 1_000_000)
    }

    /// Whether the amount is exactly zero.
    pub fn is_zero(self) -> bool {
        self.nanos == 0
    }

    /// Whether the amount is below zero.
    pub fn is_negative(self) -> bool {
        self.nanos < 0
    }

    /// The sum, capped like parsed quantities.
    pub fn saturating_add(self, other: Amount) -> Amount {
        Amount::from_nanos(self.nanos.saturating_add(other.nanos))
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.nanos / 1_000_000_000;
        let frac = (self.nanos % 1_000_000_000).unsigned_abs();
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let sign = if self.nanos < 0 && whole == 0 {
                "-"
            } else {
                ""
            };
            let digits = format!("{frac:09}");
            write!(f, "{sign}{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

/// Parses the quantity at `field`, naming the field when it does not parse.
pub fn parse_field(field: &str, quantity: &Quantity) -> Result<Amount, ConvertError> {
    Amount::parse(&quantity.0).map_err(|reason| ConvertError::quantity(field, &quantity.0, reason))
}

/// `nanos / unit` rounded away from zero, saturated to i64.
fn scaled(nanos: i128, unit: i128) -> i64 {
    let quotient = nanos / unit;
    let rounded = if nanos % unit == 0 {
        quotient
    } else if nanos > 0 {
        quotient + 1
    } else {
        quotient - 1
    };
    i64::try_from(rounded).unwrap_or(if rounded > 0 { i64::MAX } else { i64::MIN })
}

/// The suffix grammar of `parseQuantityString`: suffix letters, an optional sign, digits.
fn check_suffix_shape(suffix: &str) -> Result<(), QuantityError> {
    let rest = suffix.trim_start_matches(|c: char| "eEinumkKMGTP".contains(c));
    let rest = rest
        .strip_prefix(['+', '-'])
        .unwrap_or(rest)
        .trim_start_matches(|c: char| c.is_ascii_digit());
    if rest.is_empty() {
        Ok(())
    } else {
        Err(QuantityError::Format)
    }
}

/// What a suffix multiplies the number by.
enum Scale {
    /// 10^n.
    Decimal(i64),
    /// 1024^n.
    Binary(u32),
}

fn interpret_suffix(suffix: &str) -> Result<Scale, QuantityError> {
    let scale = match suffix {
        "n" => Scale::Decimal(-9),
        "u" => Scale::Decimal(-6),
        "m" => Scale::Decimal(-3),
        "" => Scale::Decimal(0),
        "k" => Scale::Decimal(3),
        "M" => Scale::Decimal(6),
        "G" => Scale::Decimal(9),
        "T" => Scale::Decimal(12),
        "P" => Scale::Decimal(15),
        "E" => Scale::Decimal(18),
        "Ki" => Scale::Binary(1),
        "Mi" => Scale::Binary(2),
        "Gi" => Scale::Binary(3),
        "Ti" => Scale::Binary(4),
        "Pi" => Scale::Binary(5),
        "Ei" => Scale::Binary(6),
        _ => {
            let exponent = suffix
                .strip_prefix(['e', 'E'])
                .filter(|digits| !digits.is_empty())
                .and_then(|digits| digits.parse::<i64>().ok())
                .ok_or_else(|| QuantityError::Suffix(suffix.to_owned()))?;
            Scale::Decimal(exponent.clamp(-EXPONENT_CLAMP, EXPONENT_CLAMP))
        }
    };
    Ok(scale)
}

/// A non-negative decimal `mantissa * 10^exponent`, plus a flag for dropped non-zero digits
/// (so rounding up to the next nanounit stays exact however many digits were written).
#[derive(Default)]
struct Decimal {
    mantissa: u128,
    exponent: i64,
    inexact: bool,
}

impl Decimal {
    fn push_integer_digit(&mut self, digit: u8) {
        if self.mantissa < MANTISSA_LIMIT {
            self.mantissa = self.mantissa * 10 + u128::from(digit);
        } else {
            self.exponent += 1;
            self.inexact |= digit != 0;
        }
    }

    fn push_fraction_digit(&mut self, digit: u8) {
        if self.mantissa < MANTISSA_LIMIT {
            self.mantissa = self.mantissa * 10 + u128::from(digit);
            self.exponent -= 1;
        } else {
            self.inexact |= digit != 0;
        }
    }

    fn shift(&mut self, exponent: i64) {
        self.exponent += exponent;
    }

    fn times_1024(&mut self) {
        while self.mantissa >= MANTISSA_LIMIT {
            self.inexact |= !self.mantissa.is_multiple_of(10);
            self.mantissa /= 10;
            self.exponent += 1;
        }
        self.mantissa *= 1024;
    }

    /// The value in nanounits, rounded up, capped at [`CAP_NANOS`].
    fn to_nanos(&self) -> i128 {
        if self.mantissa == 0 {
            return 0;
        }
        let exponent = self.exponent + 9;
        let nanos = if exponent >= 0 {
            u32::try_from(exponent)
                .ok()
                .and_then(|e| 10u128.checked_pow(e))
                .and_then(|p| p.checked_mul(self.mantissa))
                .unwrap_or(u128::MAX)
        } else {
            match u32::try_from(-exponent)
                .ok()
                .and_then(|e| 10u128.checked_pow(e))
            {
                Some(p) => {
                    let rounds_up = !self.mantissa.is_multiple_of(p) || self.inexact;
                    self.mantissa / p + u128::from(rounds_up)
                }
                // A divisor beyond u128 exceeds the mantissa: a positive sub-nano value.
                None => 1,
            }
        };
        i128::try_from(nanos).map_or(CAP_NANOS, |n| n.min(CAP_NANOS))
    }
}

#[cfg(test)]
mod tests;
