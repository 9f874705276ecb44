//! CNI plugin executables (bridge, IPAM, portmap, loopback); not built yet.
