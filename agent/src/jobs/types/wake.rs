//! `wake_on_lan`: this agent is the relay on a sleeping machine's subnet and broadcasts the
//! magic packet for its MAC. Sent three times, 100 ms apart: a magic packet is one unacknowledged
//! UDP datagram and a busy switch may drop one.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use reap3r_wire::{format_mac, magic_packet};
use serde_json::json;
use tracing::info;

use crate::jobs::ctx::Outcome;

/// How many copies of the packet are sent.
const COPIES: u32 = 3;
const BETWEEN_COPIES: Duration = Duration::from_millis(100);

pub(super) async fn wake_on_lan(mac: [u8; 6], broadcast: [u8; 4], port: u16) -> Outcome {
    let to = SocketAddrV4::new(Ipv4Addr::from(broadcast), port);
    match send(mac, to).await {
        Ok(()) => {
            info!(mac = %format_mac(mac), %to, "sent the magic packet");
            Outcome::succeeded(Some(
                json!({ "mac": format_mac(mac), "sent_to": to.to_string(), "copies": COPIES })
                    .to_string(),
            ))
        }
        Err(e) => Outcome::failed(format!("cannot send the magic packet to {to}: {e}")),
    }
}

async fn send(mac: [u8; 6], to: SocketAddrV4) -> std::io::Result<()> {
    let socket = tokio::net::UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).await?;
    socket.set_broadcast(true)?;
    let packet = magic_packet(mac);
    for copy in 0..COPIES {
        if copy > 0 {
            tokio::time::sleep(BETWEEN_COPIES).await;
        }
        socket.send_to(&packet, to).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reap3r_wire::JobEnd;

    #[tokio::test]
    async fn the_packet_goes_out_three_times_and_the_result_says_where() {
        let listener = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mac = [2, 0, 0, 0, 0, 7];
        let outcome = wake_on_lan(mac, [127, 0, 0, 1], port).await;
        assert_eq!(outcome.end, JobEnd::Succeeded);
        let data = outcome.data.unwrap_or_default();
        assert!(data.contains(&format!("127.0.0.1:{port}")), "{data}");
        let mut buf = [0u8; 256];
        for _ in 0..COPIES {
            let (n, _) = listener.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], magic_packet(mac).as_slice());
        }
    }
}
