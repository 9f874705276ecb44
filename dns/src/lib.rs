//! Cluster DNS zone and caching forwarder on hickory (the node-local DNS part); not built yet.
