//! Pod networking through CNI plugins, called as the CNI specification says.
