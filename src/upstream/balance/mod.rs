//! Load-balancing algorithms, one file each, behind one small trait. Each worker owns its
//! balancer and reads only its own counters (in-flight, latency), so a pick takes no lock and
//! no atomic write; health and ejection come in through `eligible`.

mod least_conn;
mod p2c;
mod random;
mod ring_hash;
mod round_robin;
mod weighted;

pub use least_conn::LeastConn;
pub use p2c::{P2c, P2cEwma};
pub use random::{Random, Rng};
pub use ring_hash::RingHash;
pub use round_robin::RoundRobin;
pub use weighted::WeightedRoundRobin;

use super::ServerState;
use crate::config::Balance;

/// Chooses a server. `eligible(i)` says whether server `i` may take this request (health,
/// drain, limits, already tried); a balancer never returns an ineligible index. `hash` is the
/// request's key for consistent hashing (0 when the upstream does not hash).
pub trait Balancer {
    fn pick(
        &self,
        servers: &[ServerState],
        eligible: &dyn Fn(usize) -> bool,
        hash: u64,
    ) -> Option<usize>;
}

pub fn build(kind: Balance, servers: &[ServerState]) -> Box<dyn Balancer> {
    match kind {
        Balance::RoundRobin => Box::new(RoundRobin::new()),
        Balance::WeightedRoundRobin => Box::new(WeightedRoundRobin::new(servers)),
        Balance::LeastConn => Box::new(LeastConn::new()),
        Balance::Random => Box::new(Random::new()),
        Balance::P2c => Box::new(P2c::new()),
        Balance::P2cEwma => Box::new(P2cEwma::new()),
        Balance::RingHash => Box::new(RingHash::new(servers)),
    }
}

/// Stable 64-bit hash (FNV-1a, then a splitmix finaliser for spread): the same key must land
/// on the same server in every worker and across restarts, so no per-process random seed.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
pub(crate) mod testing {
    use super::super::ServerState;
    use crate::config::Server;

    pub fn servers(weights: &[u32]) -> Vec<ServerState> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                ServerState::new(
                    &Server {
                        addr: format!("127.0.0.1:{}", 9000 + i).parse().unwrap(),
                        weight: *w,
                        drain: false,
                    },
                    16,
                )
            })
            .collect()
    }
}
