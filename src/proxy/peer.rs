//! Building the Pingora peer for one attempt at one upstream server.

use pingora::upstreams::peer::HttpPeer;

use crate::upstreams::UpstreamGroup;

pub fn build(group: &UpstreamGroup, server: usize) -> HttpPeer {
    let s = &group.settings;
    let mut peer = HttpPeer::new(group.server(server).addr, s.tls, s.sni.clone());
    let o = &mut peer.options;
    o.connection_timeout = Some(s.connect_timeout);
    o.total_connection_timeout = Some(s.connect_timeout.saturating_mul(2));
    o.read_timeout = Some(s.read_timeout);
    o.write_timeout = Some(s.write_timeout);
    o.idle_timeout = Some(s.idle_timeout);
    peer
}
