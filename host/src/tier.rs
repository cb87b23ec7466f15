//! The client's address between the nodes of a tiered deployment: an edge
//! sends a shield the address of the client it serves in `tier.client_header`,
//! and a node believes that header only from `tier.trusted_edges`. From
//! anyone else the header is removed on arrival, so a client can neither
//! choose the address a shield's limits and policies see nor have it passed
//! on.

use std::net::IpAddr;

use http::HeaderName;
use ipnet::IpNet;
use pingora_http::RequestHeader;

use crate::config;

/// The client-address header and whom it is believed from.
#[derive(Debug, Clone)]
pub struct ClientHeader {
    name: HeaderName,
    trusted: Vec<IpNet>,
}

impl ClientHeader {
    /// From a validated `[tier]`.
    pub fn new(tier: &config::Tier) -> anyhow::Result<ClientHeader> {
        Ok(ClientHeader {
            name: HeaderName::from_bytes(tier.client_header.as_bytes())
                .map_err(|e| anyhow::anyhow!("tier.client_header: {e}"))?,
            trusted: tier.trusted_networks(),
        })
    }

    /// The address of the client of `req`, which came from `peer`: the
    /// header's when `peer` is a trusted edge and the header holds one
    /// address, else `peer`. The header is removed unless it was believed.
    pub fn client(&self, req: &mut RequestHeader, peer: Option<IpAddr>) -> Option<IpAddr> {
        let trusted = peer.is_some_and(|p| self.trusted.iter().any(|net| net.contains(&p)));
        let claimed = req
            .headers
            .get(&self.name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<IpAddr>().ok());
        match claimed {
            Some(client) if trusted && req.headers.get_all(&self.name).iter().count() == 1 => {
                Some(client)
            }
            _ => {
                req.remove_header(&self.name);
                peer
            }
        }
    }

    /// Tell the shield `req` goes to who the client is.
    pub fn forward(
        &self,
        req: &mut RequestHeader,
        client: Option<IpAddr>,
    ) -> pingora_error::Result<()> {
        match client {
            Some(client) => req.insert_header(self.name.clone(), client.to_string())?,
            None => {
                req.remove_header(&self.name);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(trusted: &[&str]) -> ClientHeader {
        ClientHeader::new(&config::Tier {
            client_header: "stavka-client-ip".into(),
            trusted_edges: trusted.iter().map(|t| t.to_string()).collect(),
        })
        .unwrap()
    }

    fn request(claim: &str) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("stavka-client-ip", claim).unwrap();
        req
    }

    #[test]
    fn the_header_is_believed_from_trusted_edges_only() {
        let tier = header(&["10.0.0.0/8", "192.0.2.7"]);
        let edge: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        let claim: IpAddr = "203.0.113.9".parse().unwrap();

        let mut req = request("203.0.113.9");
        assert_eq!(tier.client(&mut req, Some(edge)), Some(claim));
        assert!(req.headers.contains_key("stavka-client-ip"));

        let mut req = request("203.0.113.9");
        assert_eq!(tier.client(&mut req, Some(stranger)), Some(stranger));
        assert!(!req.headers.contains_key("stavka-client-ip"), "removed");

        let mut req = request("not an address");
        assert_eq!(tier.client(&mut req, Some(edge)), Some(edge));
        assert!(!req.headers.contains_key("stavka-client-ip"));

        let single: IpAddr = "192.0.2.7".parse().unwrap();
        let mut req = request("203.0.113.9");
        assert_eq!(tier.client(&mut req, Some(single)), Some(claim));
        assert_eq!(
            header(&[]).client(&mut request("203.0.113.9"), Some(edge)),
            Some(edge)
        );
    }
}
