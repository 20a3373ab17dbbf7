//! Where webhooks may be sent (the SSRF guard): any unicast address, loopback and private ones
//! included, since receivers often run beside the service, but not link-local or cloud metadata
//! addresses unless `WEBHOOK_ALLOW_LINK_LOCAL` is set. Checked when a URL is stored, and again
//! for every address a name resolves to when a delivery connects: a name can point elsewhere
//! later. Redirects are not followed (`worker`), so a receiver cannot send a delivery on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Metadata services outside the link-local range: Alibaba Cloud's, Oracle Cloud's.
const METADATA_V4: [Ipv4Addr; 2] = [
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(192, 0, 0, 192),
];
/// AWS's instance metadata service over IPv6.
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)];

/// How long a name may take to resolve when a URL is stored.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a delivery to `ip` is refused, or `None`.
pub fn refusal(ip: IpAddr, allow_link_local: bool) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if ip.is_unspecified() || ip.is_multicast() || broadcast {
        return Some("is not a unicast address");
    }
    if allow_link_local {
        return None;
    }
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    };
    let metadata = match ip {
        IpAddr::V4(v4) => METADATA_V4.contains(&v4),
        IpAddr::V6(v6) => METADATA_V6.contains(&v6),
    };
    if link_local {
        Some(
            "is link-local, where cloud metadata services answer; WEBHOOK_ALLOW_LINK_LOCAL=true allows it",
        )
    } else if metadata {
        Some("is a cloud metadata address; WEBHOOK_ALLOW_LINK_LOCAL=true allows it")
    } else {
        None
    }
}

/// The IPv4 address an IPv6 address reaches, so it gets that address's checks: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, not `::` or `::1`), NAT64
/// (`64:ff9b::a.b.c.d`) and 6to4 (`2002:aabb:ccdd::`).
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let o = v6.octets();
    match v6.segments() {
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, _, _] | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => {
            Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]))
        }
        [0x2002, ..] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        _ => None,
    }
}

/// The IP address a URL's host is written as, if it is one.
fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Checks a webhook URL when it is stored: http or https, a host, no credentials in it, and an
/// allowed address. A name is resolved: one that points at a refused address is refused, one
/// that does not resolve now is taken (and checked when a delivery connects).
pub async fn check_url(text: &str, allow_link_local: bool) -> Result<reqwest::Url, String> {
    let url =
        reqwest::Url::parse(text.trim()).map_err(|error| format!("is not a valid URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http or https URL".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials (the secret signs each delivery)".to_owned());
    }
    let Some(host) = url.host_str().map(str::to_owned) else {
        return Err("must name a host".to_owned());
    };
    if let Some(ip) = literal_ip(&url) {
        return match refusal(ip, allow_link_local) {
            Some(reason) => Err(format!("{ip} {reason}")),
            None => Ok(url),
        };
    }
    let port = url.port_or_known_default().unwrap_or(80);
    let resolved = tokio::time::timeout(
        RESOLVE_TIMEOUT,
        tokio::net::lookup_host((host.as_str(), port)),
    )
    .await;
    if let Ok(Ok(addresses)) = resolved {
        for address in addresses {
            if let Some(reason) = refusal(address.ip(), allow_link_local) {
                return Err(format!(
                    "{host} resolves to {}, which {reason}",
                    address.ip()
                ));
            }
        }
    }
    Ok(url)
}

/// Checks a delivery's target before it is sent: an address written in the URL here (reqwest
/// does not resolve those), a name by [`GuardedResolver`] as it connects.
pub fn check_target(url: &reqwest::Url, allow_link_local: bool) -> Result<(), String> {
    match literal_ip(url).and_then(|ip| refusal(ip, allow_link_local).map(|reason| (ip, reason))) {
        Some((ip, reason)) => Err(format!("{ip} {reason}")),
        None => Ok(()),
    }
}

/// The deliveries' name resolver: the system's, without the addresses [`refusal`] refuses.
pub struct GuardedResolver {
    pub allow_link_local: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_link_local = self.allow_link_local;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let mut refused = None;
            let kept: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|address| match refusal(address.ip(), allow_link_local) {
                    Some(reason) => {
                        refused = Some(format!(
                            "{host} resolves to {}, which {reason}",
                            address.ip()
                        ));
                        false
                    }
                    None => true,
                })
                .collect();
            if kept.is_empty() {
                let reason = refused.unwrap_or_else(|| format!("{host} resolves to no address"));
                return Err(reason.into());
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn link_local_and_metadata_are_refused_unless_allowed() {
        for refused in [
            "169.254.169.254",
            "169.254.170.2",
            "100.100.100.200",
            "192.0.0.192",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::a9fe:a9fe",
            "2002:a9fe:a9fe::",
            "64:ff9b::6464:64c8",
        ] {
            assert!(refusal(ip(refused), false).is_some(), "{refused}");
            assert_eq!(refusal(ip(refused), true), None, "{refused} when allowed");
        }
    }

    #[test]
    fn loopback_private_and_public_addresses_are_allowed() {
        for allowed in [
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.10",
            "fd12::1",
            "203.0.113.7",
            "64:ff9b::cb00:7107",
            "2002:cb00:7107::1",
        ] {
            assert_eq!(refusal(ip(allowed), false), None, "{allowed}");
        }
    }

    #[test]
    fn non_unicast_addresses_are_always_refused() {
        for refused in ["0.0.0.0", "::", "224.0.0.1", "255.255.255.255", "ff02::1"] {
            assert!(refusal(ip(refused), true).is_some(), "{refused}");
        }
    }

    #[tokio::test]
    async fn urls_are_checked_by_scheme_credentials_and_address() {
        assert!(check_url("http://127.0.0.1:9/hook", false).await.is_ok());
        assert!(check_url("https://[::1]/hook", false).await.is_ok());
        assert!(check_url("http://localhost:8080/hook", false).await.is_ok());
        for (url, expected) in [
            ("ftp://example.com/", "http or https"),
            ("http://user:pw@127.0.0.1/", "credentials"),
            ("not a url", "not a valid URL"),
            ("http://169.254.169.254/latest/meta-data", "link-local"),
            ("http://[fd00:ec2::254]/", "metadata"),
        ] {
            let error = check_url(url, false).await.expect_err(url);
            assert!(error.contains(expected), "{url}: {error}");
        }
        assert!(
            check_url("http://169.254.169.254/", true).await.is_ok(),
            "allowed by the setting"
        );
    }

    #[test]
    fn delivery_targets_written_as_addresses_are_checked_again() {
        let url = reqwest::Url::parse("http://169.254.169.254/").expect("url");
        assert!(check_target(&url, false).is_err());
        assert!(check_target(&url, true).is_ok());
        let named = reqwest::Url::parse("http://example.com/").expect("url");
        assert!(
            check_target(&named, false).is_ok(),
            "names are the resolver's"
        );
    }
}
