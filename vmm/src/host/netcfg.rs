//! The guest's network identity from the command line: `--guest-ip`, `--gateway`, `--mac`,
//! and its multi-leader site configuration: `--site-id`, `--sites`, `--conflict`.
use guest_abi::{NetConfig, SiteConfig, SiteEntry, MAX_SITES};
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetConfigError {
    #[error("--guest-ip {0:?} must be an IPv4 address with a prefix length, like 10.77.0.10/24")]
    Address(String),
    #[error("--gateway {0:?} must be an IPv4 address")]
    Gateway(String),
    #[error("--mac {0:?} must be six hex bytes, like 52:54:00:77:00:0a, and unicast")]
    Mac(String),
    #[error("--tap needs --guest-ip: the guest learns its address from the monitor")]
    TapWithoutAddress,
    #[error("--site-id, --sites and --conflict go together (and need --guest-ip); give all three or none")]
    SitesIncomplete,
    #[error("--sites {0:?} must be up to 8 comma-separated ID=IP:PORT entries with distinct ids 1..=255, like 1=10.78.1.10:6380,2=10.78.2.10:6380")]
    Sites(String),
    #[error("--site-id {0} is not in --sites")]
    SiteNotListed(u8),
    #[error("--sites gives this site ({0}) an address other than --guest-ip")]
    SiteAddress(u8),
    #[error("--conflict {0:?} must be lww, site-id, manual or merge")]
    Conflict(String),
}

/// The site flags as given.
#[derive(Debug, Clone, Default)]
pub struct SiteFlags<'a> {
    pub site_id: Option<u8>,
    pub sites: Option<&'a str>,
    pub conflict: Option<&'a str>,
    pub clock_offset_ms: i64,
    pub boot_wall_ms: u64,
}

/// Adds the multi-leader site configuration to `net` (all three flags, or none).
pub fn parse_sites(mut net: NetConfig, flags: &SiteFlags) -> Result<NetConfig, NetConfigError> {
    let (id, list, conflict) = match (flags.site_id, flags.sites, flags.conflict) {
        (None, None, None) => return Ok(net),
        (Some(id), Some(list), Some(conflict)) if net.present == 1 => (id, list, conflict),
        _ => return Err(NetConfigError::SitesIncomplete),
    };
    let conflict_code = match conflict {
        "lww" => 1,
        "site-id" => 2,
        "manual" => 3,
        "merge" => 4,
        other => return Err(NetConfigError::Conflict(other.to_string())),
    };
    let bad = || NetConfigError::Sites(list.to_string());
    let mut entries: Vec<SiteEntry> = Vec::new();
    for item in list.split(',') {
        let (sid, addr) = item.split_once('=').ok_or_else(bad)?;
        let sid: u8 = sid.trim().parse().ok().filter(|&s| s != 0).ok_or_else(bad)?;
        let addr: std::net::SocketAddrV4 = addr.trim().parse().map_err(|_| bad())?;
        if entries.iter().any(|e| e.id == sid) || entries.len() == MAX_SITES {
            return Err(bad());
        }
        entries.push(SiteEntry { id: sid, _pad: 0, port: addr.port(), ip: addr.ip().octets() });
    }
    entries.sort_by_key(|e| e.id);
    let me = entries.iter().find(|e| e.id == id).ok_or(NetConfigError::SiteNotListed(id))?;
    if me.ip != net.ip {
        return Err(NetConfigError::SiteAddress(id));
    }
    let mut sites = [SiteEntry::default(); MAX_SITES];
    sites[..entries.len()].copy_from_slice(&entries);
    net.sites = SiteConfig {
        boot_wall_ms: flags.boot_wall_ms,
        clock_offset_ms: flags.clock_offset_ms,
        site_id: id,
        conflict: conflict_code,
        count: entries.len() as u8,
        _pad: [0; 5],
        sites,
    };
    Ok(net)
}

pub fn parse(guest_ip: Option<&str>, gateway: Option<&str>, mac: Option<&str>) -> Result<NetConfig, NetConfigError> {
    let Some(cidr) = guest_ip else {
        return Ok(NetConfig::default());
    };
    let (ip, prefix) = parse_cidr(cidr).ok_or_else(|| NetConfigError::Address(cidr.to_string()))?;
    let gateway = match gateway {
        Some(g) => g.parse::<Ipv4Addr>().map_err(|_| NetConfigError::Gateway(g.to_string()))?,
        None => Ipv4Addr::UNSPECIFIED,
    };
    let mac = match mac {
        Some(m) => parse_mac(m).ok_or_else(|| NetConfigError::Mac(m.to_string()))?,
        None => default_mac(ip),
    };
    Ok(NetConfig {
        present: 1,
        mac,
        prefix_len: prefix,
        _pad: 0,
        ip: ip.octets(),
        gateway: gateway.octets(),
        ..NetConfig::default()
    })
}

fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, prefix) = s.split_once('/')?;
    let prefix: u8 = prefix.parse().ok().filter(|p| (1..=32).contains(p))?;
    Some((ip.parse().ok()?, prefix))
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in mac.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    (parts.next().is_none() && mac[0] & 1 == 0).then_some(mac)
}

/// A locally administered MAC derived from the IP, so primary and backup agree without a flag.
pub fn default_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x52, 0x54, 0x00, o[1], o[2], o[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_gateway_and_mac_parse_into_the_boot_config() {
        let n = parse(Some("10.77.0.10/24"), Some("10.77.0.1"), Some("52:54:00:77:00:0a")).expect("valid");
        assert_eq!((n.present, n.ip, n.prefix_len, n.gateway), (1, [10, 77, 0, 10], 24, [10, 77, 0, 1]));
        assert_eq!(n.mac, [0x52, 0x54, 0, 0x77, 0, 0x0a]);
    }

    #[test]
    fn mac_defaults_to_one_derived_from_the_address() {
        let n = parse(Some("10.77.0.10/24"), None, None).expect("valid");
        assert_eq!(n.mac, [0x52, 0x54, 0, 77, 0, 10]);
    }

    #[test]
    fn malformed_values_are_refused_with_the_flag_named() {
        for bad in ["10.77.0.10", "10.77.0.10/33", "10.77.0/24", "x/24", "10.77.0.10/"] {
            assert!(matches!(parse(Some(bad), None, None), Err(NetConfigError::Address(_))), "{bad}");
        }
        assert!(matches!(parse(Some("10.0.0.1/8"), Some("gw"), None), Err(NetConfigError::Gateway(_))));
        for bad in ["52:54:00:77:00", "53:54:00:77:00:0a", "52:54:00:77:00:0a:01", "zz:54:00:77:00:0a"] {
            assert!(matches!(parse(Some("10.0.0.1/8"), None, Some(bad)), Err(NetConfigError::Mac(_))), "{bad}");
        }
    }

    #[test]
    fn site_flags_fill_the_site_config_sorted_by_id() {
        let net = parse(Some("10.78.2.10/24"), None, None).expect("valid");
        let flags = SiteFlags {
            site_id: Some(2),
            sites: Some("3=10.78.3.10:6380,1=10.78.1.10:6380,2=10.78.2.10:6381"),
            conflict: Some("merge"),
            clock_offset_ms: -500,
            boot_wall_ms: 1_700_000_000_000,
        };
        let s = parse_sites(net, &flags).expect("valid").sites;
        assert_eq!((s.site_id, s.conflict, s.count, s.clock_offset_ms), (2, 4, 3, -500));
        assert_eq!(s.sites.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2, 3, 0, 0, 0, 0, 0]);
        assert_eq!(s.sites[1].port, 6381);
    }

    #[test]
    fn bad_site_flags_are_refused_with_the_flag_named() {
        let net = parse(Some("10.78.2.10/24"), None, None).expect("valid");
        let with = |id, sites, conflict| SiteFlags { site_id: id, sites, conflict, ..SiteFlags::default() };
        let list = Some("1=10.78.1.10:6380,2=10.78.2.10:6380");
        assert!(matches!(parse_sites(net, &with(Some(2), list, None)), Err(NetConfigError::SitesIncomplete)));
        assert!(matches!(parse_sites(net, &with(Some(2), list, Some("x"))), Err(NetConfigError::Conflict(_))));
        assert!(matches!(parse_sites(net, &with(Some(3), list, Some("lww"))), Err(NetConfigError::SiteNotListed(3))));
        assert!(matches!(parse_sites(net, &with(Some(1), list, Some("lww"))), Err(NetConfigError::SiteAddress(1))));
        for bad in ["1=10.78.1.10", "0=10.78.1.10:1", "1=a:1", "2=10.78.2.10:1,2=10.78.2.10:2"] {
            assert!(
                matches!(parse_sites(net, &with(Some(2), Some(bad), Some("lww"))), Err(NetConfigError::Sites(_))),
                "{bad}"
            );
        }
        assert_eq!(parse_sites(net, &SiteFlags::default()).expect("off").sites.site_id, 0);
    }

    #[test]
    fn no_address_means_no_nic() {
        assert_eq!(parse(None, None, None).expect("valid").present, 0);
    }
}
