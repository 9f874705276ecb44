use super::*;

fn nanos(text: &str) -> i128 {
    match Amount::parse(text) {
        Ok(amount) => amount.nanos(),
        Err(e) => panic!("{text:?} refused: {e}"),
    }
}

#[test]
fn decimal_si_suffixes() {
    let cases: &[(&str, i128)] = &[
        ("1n", 1),
        ("1u", 1_000),
        ("1m", 1_000_000),
        ("1", 1_000_000_000),
        ("1k", 1_000_000_000_000),
        ("1M", 10i128.pow(15)),
        ("1G", 10i128.pow(18)),
        ("1T", 10i128.pow(21)),
        ("1P", 10i128.pow(24)),
        ("1E", 10i128.pow(27)),
        ("500m", 500_000_000),
        ("0.5", 500_000_000),
        ("100", 100_000_000_000),
    ];
    for (text, want) in cases {
        assert_eq!(nanos(text), *want, "{text}");
    }
}

#[test]
fn binary_si_suffixes() {
    let cases: &[(&str, i64)] = &[
        ("1Ki", 1 << 10),
        ("1Mi", 1 << 20),
        ("1Gi", 1 << 30),
        ("1Ti", 1 << 40),
        ("1Pi", 1 << 50),
        ("1Ei", 1 << 60),
        ("1.5Gi", 3 << 29),
        ("128Mi", 128 << 20),
        ("0.5Ki", 512),
    ];
    for (text, want) in cases {
        assert_eq!(Amount::parse(text).map(Amount::value), Ok(*want), "{text}");
    }
}

#[test]
fn decimal_exponents() {
    assert_eq!(nanos("1e3"), 1_000_000_000_000);
    assert_eq!(nanos("1E3"), 1_000_000_000_000);
    assert_eq!(nanos("1e+3"), 1_000_000_000_000);
    assert_eq!(nanos("1e-3"), 1_000_000);
    assert_eq!(nanos("12.5e-1"), 1_250_000_000);
    assert_eq!(nanos("1e0"), 1_000_000_000);
}

#[test]
fn number_forms_of_the_grammar() {
    assert_eq!(nanos("5."), 5_000_000_000);
    assert_eq!(nanos(".5"), 500_000_000);
    assert_eq!(nanos("+5"), 5_000_000_000);
    assert_eq!(nanos("-5"), -5_000_000_000);
    assert_eq!(nanos("0005"), 5_000_000_000);
    assert_eq!(nanos("0"), 0);
    assert_eq!(nanos("0Mi"), 0);
    assert_eq!(nanos("0.000"), 0);
}

#[test]
fn apimachinery_quirks_are_kept() {
    // parseQuantityString treats a missing number as zero.
    assert_eq!(nanos("-"), 0);
    assert_eq!(nanos("."), 0);
    assert_eq!(nanos("Mi"), 0);
    assert_eq!(nanos("e3"), 0);
    // `1.G` is accepted upstream (see the TODO in parseQuantityString).
    assert_eq!(nanos("1.G"), 10i128.pow(18));
}

#[test]
fn precision_below_nano_rounds_up() {
    assert_eq!(nanos("0.1n"), 1);
    assert_eq!(nanos("1.0000000001"), 1_000_000_001);
    assert_eq!(nanos("1e-30"), 1);
    assert_eq!(nanos("1e-999999999"), 1);
    // Far more digits than fit in the mantissa, the last one non-zero.
    let long = format!("0.{}1", "0".repeat(80));
    assert_eq!(nanos(&long), 1);
    let long_int = format!("1.{}1", "0".repeat(60));
    assert_eq!(nanos(&long_int), 1_000_000_001);
    assert_eq!(nanos("-0.1n"), -1);
}

#[test]
fn huge_values_are_capped() {
    assert_eq!(nanos("9223372036854775807"), CAP_NANOS);
    assert_eq!(nanos("9223372036854775808"), CAP_NANOS);
    assert_eq!(nanos("100Ei"), CAP_NANOS);
    assert_eq!(nanos("1e999999999999"), CAP_NANOS);
    assert_eq!(nanos(&"9".repeat(5000)), CAP_NANOS);
    assert_eq!(nanos(&format!("{}Ei", "9".repeat(100))), CAP_NANOS);
    assert_eq!(nanos("-100Ei"), -CAP_NANOS);
    assert_eq!(Amount::parse("100Ei").map(Amount::value), Ok(i64::MAX));
    assert_eq!(
        Amount::parse("100Ei").map(Amount::milli_value),
        Ok(i64::MAX)
    );
}

#[test]
fn garbage_is_refused() {
    assert_eq!(Amount::parse(""), Err(QuantityError::Empty));
    for text in [
        "1e",
        "1K",
        "1ki",
        "1mi",
        "1Ee3",
        "1E+",
        "--1",
        "1e99999999999999999999",
    ] {
        assert!(
            matches!(Amount::parse(text), Err(QuantityError::Suffix(_))),
            "{text:?}: {:?}",
            Amount::parse(text)
        );
    }
    for text in [
        "12X", "1Z", "1Gb", "1e3.5", "1 ", " 1", "1,5", "1.5.5", "1e3x", "١", "1Mi5x", "0x10",
        "1_000", "1e-+3", "½",
    ] {
        assert_eq!(Amount::parse(text), Err(QuantityError::Format), "{text:?}");
    }
}

#[test]
fn value_and_milli_value_round_up() {
    let q = |t| Amount::parse(t).unwrap_or_default();
    assert_eq!(q("1500m").value(), 2);
    assert_eq!(q("1500m").milli_value(), 1500);
    assert_eq!(q("0.1m").milli_value(), 1);
    assert_eq!(q("1n").value(), 1);
    assert_eq!(q("-1500m").value(), -2);
    assert_eq!(q("2").milli_value(), 2000);
}

#[test]
fn comparisons_are_exact() {
    let q = |t| Amount::parse(t).unwrap_or_default();
    assert_eq!(q("1"), q("1000m"));
    assert_eq!(q("1Ki"), q("1024"));
    assert_eq!(q("1k"), q("1e3"));
    assert!(q("0.1m") < q("0.2m"));
    assert_eq!(q("1Gi").saturating_add(q("1Gi")), q("2Gi"));
    assert_eq!(q("100Ei").saturating_add(q("100Ei")), q("100Ei"));
}

#[test]
fn display_is_plain_decimal() {
    let show = |t| Amount::parse(t).map(|a| a.to_string());
    assert_eq!(show("1500m"), Ok("1.5".to_owned()));
    assert_eq!(show("1Ki"), Ok("1024".to_owned()));
    assert_eq!(show("-1m"), Ok("-0.001".to_owned()));
}

#[test]
fn parse_field_names_the_field() {
    let err = parse_field(
        "spec.containers[web].resources.limits.memory",
        &Quantity("12Ki3".into()),
    );
    let msg = err.map_err(|e| e.to_string()).err().unwrap_or_default();
    assert_eq!(
        msg,
        r#"spec.containers[web].resources.limits.memory: invalid quantity "12Ki3": unknown suffix "Ki3""#
    );
}
