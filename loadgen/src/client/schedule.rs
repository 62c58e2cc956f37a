//! When requests go out: the closed loop's shared request budget (`-n`) and the open loop's
//! constant-rate timetable (`--rate`) with its per-thread dispatch to whichever connection is free.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// A thread's share of `-n`, taken by its connections batch by batch so the total is exact.
pub struct Budget {
    remaining: Cell<u64>,
    unlimited: bool,
}

impl Budget {
    pub fn new(limit: Option<u64>) -> Self {
        Self {
            remaining: Cell::new(limit.unwrap_or(0)),
            unlimited: limit.is_none(),
        }
    }

    /// Takes up to `want` requests; 0 means the budget is spent.
    pub fn take(&self, want: u64) -> u64 {
        if self.unlimited {
            return want;
        }
        let got = want.min(self.remaining.get());
        self.remaining.set(self.remaining.get() - got);
        got
    }
}

/// The open loop timetable. Request `j` (counted over all connections) is due at
/// `t0 + j / rate`. A thread owns the indices `j` with `j mod c` among its connections' ids, so
/// each thread carries a constant share of the rate in proportion to its connections.
#[derive(Debug, Clone, Copy)]
pub struct Timetable {
    pub t0: Instant,
    pub rate: f64,
    pub connections: u64,
    /// First measured index: requests due before the warmup ends are not recorded.
    pub first_measured: u64,
    /// One past the last index to send (`-n`), if bounded by count.
    pub limit: Option<u64>,
    pub end: Option<Instant>,
}

impl Timetable {
    pub fn new(
        t0: Instant,
        rate: f64,
        connections: u64,
        warmup: Duration,
        requests: Option<u64>,
        end: Option<Instant>,
    ) -> Self {
        let first_measured = (warmup.as_secs_f64() * rate).ceil() as u64;
        Self {
            t0,
            rate,
            connections,
            first_measured,
            limit: requests.map(|n| first_measured + n),
            end,
        }
    }

    /// When request `j` is due, or None once the run is over.
    pub fn due(&self, j: u64) -> Option<Instant> {
        if self.limit.is_some_and(|l| j >= l) {
            return None;
        }
        let due = self.t0 + Duration::from_secs_f64(j as f64 / self.rate);
        match self.end {
            Some(e) if due >= e => None,
            _ => Some(due),
        }
    }

    pub fn measured(&self, j: u64) -> bool {
        j >= self.first_measured
    }
}

/// A thread's open-loop queue: the thread's requests in due order, each taken by whichever of
/// its connections is free first (as a client with a pool of connections would), so one slow
/// response holds up only requests that find every connection busy.
pub struct Dispatch {
    pub tt: Timetable,
    /// Global ids of this thread's connections, ascending.
    ids: Vec<u64>,
    round: Cell<u64>,
    next: Cell<usize>,
    /// Connections with a request on the wire.
    in_flight: Cell<usize>,
    /// Since when the server has held every connection, until the backlog this built is sent.
    stuck_since: Cell<Option<Instant>>,
}

impl Dispatch {
    pub fn new(tt: Timetable, ids: Vec<u64>) -> Self {
        Self {
            tt,
            ids,
            round: Cell::new(0),
            next: Cell::new(0),
            in_flight: Cell::new(0),
            stuck_since: Cell::new(None),
        }
    }

    /// A connection put a request on the wire.
    pub fn sent(&self) {
        self.in_flight.set(self.in_flight.get() + 1);
        if self.in_flight.get() == self.ids.len() && self.stuck_since.get().is_none() {
            self.stuck_since.set(Some(Instant::now()));
        }
    }

    /// A connection has its answer and is free again.
    pub fn freed(&self) {
        self.in_flight.set(self.in_flight.get().saturating_sub(1));
    }

    /// For a request just taken: when it is overdue and the server has been holding every
    /// connection, since when. A request taken before its due time means the backlog is gone.
    pub fn backlog(&self, due: Instant, now: Instant) -> Option<Instant> {
        if due > now {
            self.stuck_since.set(None);
            return None;
        }
        self.stuck_since.get()
    }

    /// The next request index and its due time, or None once the run is over.
    pub fn take(&self) -> Option<(u64, Instant)> {
        // A generator that fell behind stops at the end too (as wrk2 does) rather than working
        // off its backlog: the shortfall then shows as the achieved rate.
        if self.tt.end.is_some_and(|e| Instant::now() >= e) {
            return None;
        }
        let id = *self.ids.get(self.next.get())?;
        let j = self.round.get() * self.tt.connections + id;
        let due = self.tt.due(j)?;
        if self.next.get() + 1 == self.ids.len() {
            self.next.set(0);
            self.round.set(self.round.get() + 1);
        } else {
            self.next.set(self.next.get() + 1);
        }
        Some((j, due))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_exact() {
        let b = Budget::new(Some(10));
        assert_eq!((b.take(4), b.take(4), b.take(4), b.take(4)), (4, 4, 2, 0));
        assert_eq!(Budget::new(None).take(7), 7);
    }

    #[test]
    fn timetable_spreads_connections_and_counts_exactly() {
        let t0 = Instant::now();
        let t = Timetable::new(t0, 1000.0, 4, Duration::from_millis(10), Some(100), None);
        assert_eq!(t.first_measured, 10);
        let sent: u64 = (0..4u64)
            .map(|i| {
                (0..)
                    .map(|k| i + k * 4)
                    .take_while(|&j| t.due(j).is_some())
                    .count() as u64
            })
            .sum();
        assert_eq!(sent, 110);
        assert_eq!(t.due(5), Some(t0 + Duration::from_millis(5)));
        let t = Timetable::new(
            t0,
            100.0,
            1,
            Duration::ZERO,
            None,
            Some(t0 + Duration::from_secs(1)),
        );
        assert!(t.due(99).is_some() && t.due(100).is_none());
    }

    #[test]
    fn threads_split_the_indices_exactly_and_in_order() {
        let t0 = Instant::now();
        let tt = Timetable::new(t0, 1000.0, 5, Duration::ZERO, Some(23), None);
        let mut all = Vec::new();
        for ids in [vec![0, 2, 4], vec![1, 3]] {
            let d = Dispatch::new(tt, ids);
            let mine: Vec<u64> = std::iter::from_fn(|| d.take().map(|(j, _)| j)).collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "due order");
            all.extend(mine);
        }
        all.sort_unstable();
        assert_eq!(all, (0..23).collect::<Vec<_>>());
    }
}
