//! DNS settings for the result: host-local's `resolvConf` file, else the network's `dns`.

use std::path::Path;

use crate::error::CniError;
use crate::types::Dns;

/// The DNS settings to return.
pub fn for_result(resolv_conf: Option<&Path>, network_dns: Option<&Dns>) -> Result<Dns, CniError> {
    match resolv_conf {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                CniError::io(format!("reading ipam.resolvConf {}", path.display()), e)
            })?;
            Ok(parse_resolv_conf(&text))
        }
        None => Ok(network_dns.cloned().unwrap_or_default()),
    }
}

/// The nameserver, domain, search and options lines of a resolv.conf.
pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let rest = |words: std::str::SplitWhitespace| words.map(str::to_owned).collect::<Vec<_>>();
        match words.next() {
            Some("nameserver") => dns.nameservers.extend(words.next().map(str::to_owned)),
            Some("domain") => dns.domain = words.next().unwrap_or_default().to_owned(),
            Some("search") => dns.search.extend(rest(words)),
            Some("options") => dns.options.extend(rest(words)),
            _ => {}
        }
    }
    dns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_lines_are_read() {
        let dns = parse_resolv_conf(
            "# comment\nnameserver 10.0.0.10\nnameserver fd00::10\ndomain example.com\n\
             search a.example b.example\noptions ndots:5 edns0\n",
        );
        assert_eq!(dns.nameservers, ["10.0.0.10", "fd00::10"]);
        assert_eq!(dns.domain, "example.com");
        assert_eq!(dns.search, ["a.example", "b.example"]);
        assert_eq!(dns.options, ["ndots:5", "edns0"]);
    }
}
