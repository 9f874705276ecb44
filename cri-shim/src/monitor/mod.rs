//! The per-sandbox monitor (`capstan shim`): holds the pod's namespaces, runs its containers, writes their logs and exit records.
