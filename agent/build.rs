//! Links `capstan` as a non-PIE executable: every pod's monitor (`capstan shim`) is this
//! binary, and a PIE's relocated read-only data (vtables, string tables) is written at load
//! time into private pages of each process; without PIE those pages stay shared with the
//! page cache, which takes about half of each monitor's proportional set size away.

fn main() {
    println!("cargo:rustc-link-arg-bin=capstan=-no-pie");
    println!("cargo:rerun-if-changed=build.rs");
}
