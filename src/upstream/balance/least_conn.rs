//! Least connections: the eligible server with the fewest requests in flight from this worker;
//! ties go round-robin so equal servers share evenly. Counts are per core on purpose: reading
//! other cores' counts would put a shared cache line on every pick, and with SO_REUSEPORT
//! spreading clients evenly each core's view converges to the global one.

use super::{Balancer, ServerState};
use std::cell::Cell;

#[derive(Default)]
pub struct LeastConn {
    next: Cell<usize>,
}

impl LeastConn {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Balancer for LeastConn {
    fn pick(
        &self,
        servers: &[ServerState],
        eligible: &dyn Fn(usize) -> bool,
        _hash: u64,
    ) -> Option<usize> {
        let count = servers.len();
        let start = self.next.get();
        let mut best: Option<(usize, u64)> = None;
        for k in 0..count {
            let i = (start + k) % count;
            if !eligible(i) {
                continue;
            }
            // Weight scales capacity: a weight-2 server may hold twice the requests.
            let load = (servers[i].in_flight.get() as u64 * 1000)
                / servers[i].effective_weight().max(1) as u64;
            if best.is_none_or(|(_, l)| load < l) {
                best = Some((i, load));
            }
        }
        let (i, _) = best?;
        self.next.set(i + 1);
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::servers;
    use super::*;

    #[test]
    fn prefers_idle_server() {
        let s = servers(&[1, 1, 1]);
        s[0].in_flight.set(5);
        s[1].in_flight.set(1);
        s[2].in_flight.set(3);
        let lc = LeastConn::new();
        assert_eq!(lc.pick(&s, &|_| true, 0), Some(1));
        assert_eq!(lc.pick(&s, &|i| i != 1, 0), Some(2));
    }
}
