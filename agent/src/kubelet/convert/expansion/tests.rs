use std::collections::HashMap;

use super::*;

/// The variables of upstream's TestMapReference/TestExpand.
fn vars() -> HashMap<&'static str, &'static str> {
    HashMap::from([
        ("VAR_A", "A"),
        ("VAR_B", "B"),
        ("VAR_C", "C"),
        ("VAR_REF", "$(VAR_A)"),
        ("VAR_EMPTY", ""),
        ("VAR_SPACES", "  "),
        ("VAR_ESCAPE", "$$(VAR_A)"),
        ("BLOCK", "$()"),
        ("", "nothing"),
    ])
}

fn ex(input: &str) -> String {
    let vars = vars();
    expand(input, |name| vars.get(name).map(|v| (*v).to_owned()))
}

#[test]
fn upstream_expand_cases() {
    let cases: &[(&str, &str)] = &[
        ("$(VAR_A)", "A"),
        ("___$(VAR_B)___", "___B___"),
        ("$(VAR_A)-$(VAR_A)", "A-A"),
        ("$(VAR_A)-1", "A-1"),
        ("$(VAR_A)_$(VAR_B)_$(VAR_C)", "A_B_C"),
        ("$(VAR_A)$(VAR_B)$(VAR_C)", "ABC"),
        ("$(VAR_EMPTY)", ""),
        ("$(VAR_SPACES)", "  "),
        ("f000-$$VAR_A", "f000-$VAR_A"),
        ("foo\\$(VAR_C)bar", "foo\\Cbar"),
        ("foo\\\\$(VAR_C)bar", "foo\\\\Cbar"),
        ("foo\\\\\\\\$(VAR_A)bar", "foo\\\\\\\\Abar"),
        ("$(VAR_A$(VAR_B))", "$(VAR_A$(VAR_B))"),
        ("$(VAR_A$(VAR_B)", "$(VAR_A$(VAR_B)"),
        ("$(VAR_REF)", "$(VAR_A)"),
        ("$(VAR_ESCAPE)", "$$(VAR_A)"),
        ("$$(VAR_A)", "$(VAR_A)"),
        ("$$$(VAR_A)", "$A"),
        ("$$$$(VAR_A)", "$$(VAR_A)"),
        ("$$$$$(VAR_A)", "$$A"),
        ("$$$$$$$(VAR_A)", "$$$A"),
        ("$(VAR_DNE)", "$(VAR_DNE)"),
        ("$(VAR_A", "$(VAR_A"),
        ("$VAR_A)", "$VAR_A)"),
        ("$(VAR_A)$(VAR_DNE)", "A$(VAR_DNE)"),
        ("$$", "$"),
        ("$", "$"),
        ("$(", "$("),
        ("$$(", "$("),
        ("$$$(", "$$("),
        ("$()", "nothing"),
        ("$?_boo_$!", "$?_boo_$!"),
        ("$(BLOCK)", "$()"),
        ("$(VAR_A", "$(VAR_A"),
        ("$(VAR_A)$(", "A$("),
        ("$(VAR_A)$", "A$"),
        ("$(VAR_A)$$", "A$"),
        ("$(VAR_A)$$$", "A$$"),
        ("", ""),
        ("no refs here", "no refs here"),
        ("$(VAR_A$)", "$(VAR_A$)"),
        ("($(VAR_A))", "(A)"),
    ];
    for (input, want) in cases {
        assert_eq!(ex(input), *want, "input {input:?}");
    }
}

#[test]
fn unicode_after_a_lone_dollar_is_kept_whole() {
    assert_eq!(ex("$é$(VAR_A)"), "$éA");
    assert_eq!(ex("€$(VAR_A)€"), "€A€");
    assert_eq!(ex("$(ü)"), "$(ü)");
}

#[test]
fn without_variables_references_stay() {
    assert_eq!(expand("$(X) $$ $(", |_| None), "$(X) $ $(");
}

#[test]
fn long_hostile_input_is_linear() {
    let input = "$(".repeat(100_000);
    assert_eq!(ex(&input), input);
    let input = "$$".repeat(100_000);
    assert_eq!(ex(&input).len(), 100_000);
}
