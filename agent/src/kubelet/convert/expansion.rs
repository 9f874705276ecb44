//! `$(VAR)` expansion, a port of k8s.io/kubernetes/third_party/forked/golang/expansion.
//!
//! `$(NAME)` is replaced by the mapping's value, unknown names are left as `$(NAME)`, `$$`
//! is an escaped `$`, an unterminated `$(` is kept as written, and the result is never
//! expanded again. One deliberate difference: upstream copies the byte after a lone `$` as
//! if it were a character, which mangles a following multi-byte UTF-8 character into
//! invalid UTF-8 (which CRI then refuses); here the whole character is kept.

/// Expands `$(NAME)` references in `input`, looking names up with `mapping`.
pub fn expand(input: &str, mapping: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    // Once no `)` is left, every later `$(` is unterminated: not searching again keeps
    // hostile inputs like `$($($(...` linear.
    let mut closers_left = true;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let mut chars = after.chars();
        match chars.next() {
            // A trailing `$` is copied as is.
            None => {
                out.push('$');
                rest = after;
            }
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match closers_left.then(|| after.find(')')).flatten() {
                Some(close) => {
                    let name = &after[1..close];
                    match mapping(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[close + 1..];
                }
                None => {
                    closers_left = false;
                    // Upstream emits `$(` and carries on scanning after the `(`.
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            Some(other) => {
                out.push('$');
                out.push(other);
                rest = chars.as_str();
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
