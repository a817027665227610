//! The guest's network identity from the command line: `--guest-ip`, `--gateway`, `--mac`.
use guest_abi::NetConfig;
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
    Ok(NetConfig { present: 1, mac, prefix_len: prefix, _pad: 0, ip: ip.octets(), gateway: gateway.octets() })
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
    fn no_address_means_no_nic() {
        assert_eq!(parse(None, None, None).expect("valid").present, 0);
    }
}
