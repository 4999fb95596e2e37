//! The pure part of Wake-on-LAN: the interfaces an agent's inventory reports, and the choice of
//! a relay — an online agent with an address in the same IPv4 network as one of the sleeping
//! machine's interfaces, which then broadcasts to that network.

use reap3r_store::Uuid;
use reap3r_wire::{Ipv4Net, NetInterface, format_mac, parse_mac};
use serde::{Deserialize, Serialize};

/// One interface as `agents.inventory.interfaces` keeps it (and the API shows it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceFacts {
    pub name: String,
    /// `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// `a.b.c.d/prefix` each.
    pub ipv4: Vec<String>,
}

impl From<&NetInterface> for InterfaceFacts {
    fn from(i: &NetInterface) -> Self {
        Self {
            name: i.name.as_str().to_owned(),
            mac: format_mac(i.mac),
            ipv4: i.ipv4.iter().map(Ipv4Net::to_string).collect(),
        }
    }
}

/// An interface read back: its MAC and networks (what does not parse is left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub mac: [u8; 6],
    pub ipv4: Vec<Ipv4Net>,
}

/// The interfaces in a stored inventory; none when it has no (readable) `interfaces`.
pub fn interfaces_of(inventory: &serde_json::Value) -> Vec<Interface> {
    let Some(list) = inventory.get("interfaces") else {
        return Vec::new();
    };
    let facts: Vec<InterfaceFacts> = serde_json::from_value(list.clone()).unwrap_or_default();
    facts
        .iter()
        .filter_map(|f| {
            Some(Interface {
                mac: parse_mac(&f.mac)?,
                ipv4: f.ipv4.iter().filter_map(|n| n.parse().ok()).collect(),
            })
        })
        .collect()
}

/// Who relays the magic packet, for which MAC, to which broadcast address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    pub agent_id: Uuid,
    pub mac: [u8; 6],
    /// The shared network (as the sleeping machine has it).
    pub network: Ipv4Net,
    pub broadcast: [u8; 4],
}

/// The first candidate (in the order given) sharing a network with one of `target`'s
/// interfaces, within `only` when given. Networks of one address (/31 and /32) have no
/// broadcast and are skipped.
pub fn pick_relay<'a>(
    target: &[Interface],
    candidates: impl IntoIterator<Item = (Uuid, &'a [Interface])>,
    only: Option<Ipv4Net>,
) -> Option<Relay> {
    let wanted: Vec<(&Interface, Ipv4Net)> = target
        .iter()
        .flat_map(|i| i.ipv4.iter().map(move |n| (i, *n)))
        .filter(|(_, n)| n.prefix < 31)
        .filter(|(_, n)| only.is_none_or(|o| o.same_network(*n)))
        .collect();
    candidates.into_iter().find_map(|(agent_id, interfaces)| {
        let shares = |net: Ipv4Net| {
            interfaces
                .iter()
                .flat_map(|i| &i.ipv4)
                .any(|c| c.same_network(net))
        };
        wanted
            .iter()
            .find(|(_, net)| shares(*net))
            .map(|(interface, net)| Relay {
                agent_id,
                mac: interface.mac,
                network: *net,
                broadcast: net.broadcast(),
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(mac: u8, nets: &[&str]) -> Interface {
        Interface {
            mac: [2, 0, 0, 0, 0, mac],
            ipv4: nets.iter().map(|n| n.parse().unwrap()).collect(),
        }
    }

    fn id(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    /// The relay chosen for `target` among `candidates`, within `only`.
    fn check(
        target: &[Interface],
        candidates: &[(Uuid, Vec<Interface>)],
        only: Option<&str>,
    ) -> Option<(Uuid, u8, String)> {
        pick_relay(
            target,
            candidates.iter().map(|(id, i)| (*id, i.as_slice())),
            only.map(|o| o.parse().unwrap()),
        )
        .map(|r| {
            let [a, b, c, d] = r.broadcast;
            (r.agent_id, r.mac[5], format!("{a}.{b}.{c}.{d}"))
        })
    }

    #[test]
    fn the_first_candidate_on_a_shared_network_relays_to_its_broadcast() {
        let target = [
            iface(1, &["10.0.1.5/24"]),
            iface(2, &["192.168.9.7/16", "172.16.0.4/32"]),
        ];
        let candidates = vec![
            (id(1), vec![iface(9, &["10.0.2.1/24"])]),
            (id(2), vec![iface(9, &["192.168.200.1/16"])]),
            (id(3), vec![iface(9, &["10.0.1.77/24"])]),
        ];
        assert_eq!(
            check(&target, &candidates, None),
            Some((id(2), 2, "192.168.255.255".into()))
        );
        assert_eq!(
            check(&target, &candidates, Some("10.0.1.0/24")),
            Some((id(3), 1, "10.0.1.255".into())),
            "only the named subnet"
        );
        assert_eq!(check(&target, &candidates, Some("10.0.1.0/25")), None);
        assert_eq!(
            check(&target, &candidates[..1], None),
            None,
            "nobody shares"
        );
    }

    #[test]
    fn a_network_must_match_in_prefix_and_have_a_broadcast() {
        let target = [iface(1, &["10.0.1.5/24", "10.9.9.9/32"])];
        let candidates = vec![
            (id(1), vec![iface(9, &["10.0.1.6/23"])]),
            (id(2), vec![iface(9, &["10.9.9.9/32"])]),
        ];
        assert_eq!(check(&target, &candidates, None), None);
        assert_eq!(check(&[], &candidates, None), None);
    }

    #[test]
    fn stored_interfaces_read_back_and_bad_entries_are_left_out() {
        let stored = serde_json::json!({
            "os_name": "Debian",
            "interfaces": [
                { "name": "eth0", "mac": "02:00:00:00:00:01", "ipv4": ["10.0.1.5/24", "bogus"] },
                { "name": "bad", "mac": "not-a-mac", "ipv4": [] }
            ]
        });
        assert_eq!(interfaces_of(&stored), vec![iface(1, &["10.0.1.5/24"])]);
        assert_eq!(interfaces_of(&serde_json::json!({})), vec![]);
        assert_eq!(
            interfaces_of(&serde_json::json!({ "interfaces": "x" })),
            vec![]
        );
    }
}
