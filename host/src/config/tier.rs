//! `[tier]`: how the nodes of a tiered deployment (edges in front of
//! shields) pass on the client's address.

use std::net::IpAddr;

use http::HeaderName;
use ipnet::IpNet;
use serde::Deserialize;

/// The client-address header between edges and shields.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tier {
    /// The request header in which an edge sends a shield the address of
    /// the client it serves. Every node removes it from requests that do
    /// not come from `trusted_edges`. Default `stavka-client-ip`.
    pub client_header: String,
    /// The addresses (CIDRs such as `10.0.0.0/8`, or single addresses)
    /// of the edges whose `client_header` this node believes: for them,
    /// the header's address is the client's in limits and policies.
    /// Default: none, the header is believed from nobody.
    pub trusted_edges: Vec<String>,
}

impl Default for Tier {
    fn default() -> Self {
        Tier {
            client_header: "stavka-client-ip".to_owned(),
            trusted_edges: Vec::new(),
        }
    }
}

impl Tier {
    /// Problems with the values, each naming its field.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if HeaderName::from_bytes(self.client_header.as_bytes()).is_err() {
            out.push((
                "client_header".to_owned(),
                format!("{:?} is not a header name", self.client_header),
            ));
        }
        for (i, cidr) in self.trusted_edges.iter().enumerate() {
            if parse_cidr(cidr).is_none() {
                out.push((
                    format!("trusted_edges[{i}]"),
                    format!("{cidr:?} is not an address or a CIDR such as 10.0.0.0/8"),
                ));
            }
        }
        out
    }

    /// The trusted edges as networks; those that do not parse (which
    /// validation reports) are left out.
    pub fn trusted_networks(&self) -> Vec<IpNet> {
        self.trusted_edges
            .iter()
            .filter_map(|c| parse_cidr(c))
            .collect()
    }
}

/// `10.0.0.0/8`, or one address as a network of its own.
fn parse_cidr(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}
