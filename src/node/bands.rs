//! Sharing a node's free slots between the priority bands: what to ask
//! each band's consumer for, as a pure function of plain values.
//!
//! | band state                 | what it is asked for                                      |
//! |----------------------------|-----------------------------------------------------------|
//! | has work (busy)            | up to its share of the slots, less what it runs or was asked |
//! | no work seen (dry)         | one task (a probe), beyond the free slots, if none is asked |
//! | slots left after the shares| to the busy bands, highest first (no slot idle)          |
//! | no band busy               | the free slots to the band that last delivered (`idle_to`) |
//!
//! A busy band's share of the node's `capacity` is one slot, plus the rest
//! split by the weights of the busy bands only (a band with no work gives
//! its share to the others). With fewer slots than busy bands, the busy
//! bands take turns for the one slot each (`turn`), so none starves.
//!
//! A band is busy when the last task it delivered said more were pending
//! behind it (the ack subject's pending count), dry when a request to it
//! ended with tasks undelivered or its last task said none were pending.
//! A probe may deliver a task when no slot is free: it waits for the next
//! slot, before any new request is made. So may a request a node made
//! while idle, to the band that last had work (so that a flood of one band
//! is taken as fast as before bands existed), if another band's work came
//! first: at most a node's capacity waits, and only for a slot.

use crate::priority::Weights;

/// What the node knows of one band at a moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BandView {
    /// Whether the band has work waiting (see the module docs).
    pub(crate) busy: bool,
    /// Its tasks this node runs or holds for a slot.
    pub(crate) running: usize,
    /// Tasks asked of it and not yet delivered.
    pub(crate) outstanding: usize,
}

/// How many tasks to ask each band for now (high, normal, low), on a node
/// of `capacity` slots with `free` of them not running anything.
pub(crate) fn allot(
    capacity: usize,
    free: usize,
    weights: Weights,
    bands: [BandView; 3],
    turn: usize,
    idle_to: usize,
) -> [usize; 3] {
    let mut ask = [0usize; 3];
    if !bands.iter().any(|b| b.busy) {
        let asked: usize = bands.iter().map(|b| b.outstanding).sum();
        for (i, band) in bands.iter().enumerate() {
            ask[i] = usize::from(band.outstanding == 0);
        }
        ask[idle_to] = ask[idle_to].max(free.saturating_sub(asked));
        return ask;
    }
    let promised: usize = bands.iter().filter(|b| b.busy).map(|b| b.outstanding).sum();
    let mut unpromised = free.saturating_sub(promised);
    let targets = shares(capacity, weights, bands.map(|b| b.busy), turn);
    for (i, band) in bands.iter().enumerate() {
        if !band.busy {
            ask[i] = usize::from(band.outstanding == 0);
            continue;
        }
        let want = targets[i].saturating_sub(band.running + band.outstanding);
        ask[i] = want.min(unpromised);
        unpromised -= ask[i];
    }
    // No slot idle while a band has work: what the shares left over goes
    // to the busy bands, highest first.
    if let Some(i) = bands.iter().position(|b| b.busy) {
        ask[i] += unpromised;
    }
    ask
}

/// Each busy band's share of `capacity` slots: one each, then the rest by
/// the busy bands' weights (rounded down). With fewer slots than busy
/// bands, one slot each to as many as fit, starting at `turn`.
pub(crate) fn shares(
    capacity: usize,
    weights: Weights,
    busy: [bool; 3],
    turn: usize,
) -> [usize; 3] {
    let mut targets = [0usize; 3];
    let busy_bands: Vec<usize> = (0..3).filter(|&i| busy[i]).collect();
    if busy_bands.is_empty() {
        return targets;
    }
    if capacity < busy_bands.len() {
        for k in 0..capacity {
            targets[busy_bands[(turn + k) % busy_bands.len()]] = 1;
        }
        return targets;
    }
    let rest = capacity - busy_bands.len();
    let total: u64 = busy_bands.iter().map(|&i| u64::from(weights.0[i])).sum();
    for &i in &busy_bands {
        let part = rest as u64 * u64::from(weights.0[i]) / total.max(1);
        targets[i] = 1 + part as usize;
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const W: Weights = Weights([6, 3, 1]);

    fn busy(running: usize, outstanding: usize) -> BandView {
        BandView {
            busy: true,
            running,
            outstanding,
        }
    }

    fn dry(outstanding: usize) -> BandView {
        BandView {
            busy: false,
            running: 0,
            outstanding,
        }
    }

    #[test]
    fn an_idle_node_probes_every_band() {
        assert_eq!(allot(8, 8, W, [dry(0); 3], 0, 1), [1, 8, 1]);
        assert_eq!(allot(8, 8, W, [dry(1); 3], 0, 1), [0, 5, 0]);
        assert_eq!(allot(8, 8, W, [dry(1), dry(6), dry(1)], 0, 1), [0, 0, 0]);
        assert_eq!(allot(8, 8, W, [dry(0), dry(6), dry(0)], 0, 2), [1, 0, 2]);
    }

    #[test]
    fn a_band_alone_with_work_gets_every_slot() {
        // Only low work queued: the node runs it at full concurrency.
        assert_eq!(
            allot(8, 8, W, [dry(1), dry(1), busy(0, 0)], 0, 1),
            [0, 0, 8]
        );
        assert_eq!(
            allot(8, 3, W, [dry(1), dry(1), busy(5, 0)], 0, 1),
            [0, 0, 3]
        );
        assert_eq!(
            allot(8, 8, W, [dry(0), busy(0, 0), dry(0)], 0, 1),
            [1, 8, 1]
        );
    }

    #[test]
    fn shares_follow_the_weights_of_the_busy_bands() {
        assert_eq!(shares(10, W, [true; 3], 0), [1 + 4, 1 + 2, 1]);
        assert_eq!(shares(64, W, [true; 3], 0), [1 + 36, 1 + 18, 1 + 6]);
        // Normal has no work: its share goes to the others.
        assert_eq!(shares(8, W, [true, false, true], 0), [1 + 5, 0, 1]);
        assert_eq!(shares(8, W, [false; 3], 0), [0, 0, 0]);
        for turn in 0..3 {
            let s = shares(1, W, [true; 3], turn);
            assert_eq!(s.iter().sum::<usize>(), 1);
            assert_eq!(s[turn], 1, "with one slot the bands take turns");
        }
    }

    #[test]
    fn high_work_takes_slots_as_low_frees_them_but_low_keeps_its_share() {
        // Low held all 8 slots; high arrives; one slot frees.
        assert_eq!(
            allot(8, 1, W, [busy(0, 0), dry(1), busy(7, 0)], 0, 1),
            [1, 0, 0]
        );
        // Later: high runs 6, low 1, one slot frees: low is under its
        // share of 1? no (it runs 1): high takes it.
        assert_eq!(
            allot(8, 1, W, [busy(6, 0), dry(1), busy(1, 0)], 0, 1),
            [1, 0, 0]
        );
        // Low's last task ended: low is owed its one slot.
        assert_eq!(
            allot(8, 1, W, [busy(7, 0), dry(1), busy(0, 0)], 0, 1),
            [0, 0, 1]
        );
    }

    #[test]
    fn what_is_already_asked_is_not_asked_again() {
        assert_eq!(
            allot(8, 8, W, [busy(0, 6), dry(1), busy(0, 2)], 0, 1),
            [0, 0, 0]
        );
        assert_eq!(
            allot(8, 8, W, [busy(0, 2), dry(1), busy(0, 0)], 0, 1),
            [5, 0, 1]
        );
    }

    proptest! {
        /// Busy bands are never asked for more than the free slots, a dry
        /// band for at most one probe; every busy band below its share
        /// with slots unpromised gets some; and no free slot is left
        /// unasked while a band is busy.
        #[test]
        fn asks_stay_within_free_slots_and_leave_none_idle(
            capacity in 1usize..100,
            used in 0usize..100,
            states in proptest::collection::vec((any::<bool>(), 0usize..40, 0usize..40), 3),
            weights in proptest::collection::vec(1u32..20, 3),
            turn in 0usize..10,
        ) {
            let free = capacity.saturating_sub(used);
            let bands: [BandView; 3] = std::array::from_fn(|i| BandView {
                busy: states[i].0, running: states[i].1, outstanding: states[i].2,
            });
            let w = Weights([weights[0], weights[1], weights[2]]);
            let ask = allot(capacity, free, w, bands, turn, turn % 3);
            let promised: usize = bands.iter().filter(|b| b.busy).map(|b| b.outstanding).sum();
            let busy_asked: usize = (0..3).filter(|&i| bands[i].busy).map(|i| ask[i]).sum();
            prop_assert!(busy_asked <= free.saturating_sub(promised));
            let idle = !bands.iter().any(|b| b.busy);
            for i in 0..3 {
                if idle && i == turn % 3 {
                    let asked: usize = bands.iter().map(|b| b.outstanding).sum();
                    prop_assert!(ask[i] <= free.saturating_sub(asked).max(1));
                } else if !bands[i].busy {
                    prop_assert!(ask[i] <= 1);
                    prop_assert!(ask[i] == 0 || bands[i].outstanding == 0);
                }
            }
            if bands.iter().any(|b| b.busy) {
                prop_assert_eq!(busy_asked, free.saturating_sub(promised), "no slot idle");
            }
            let s = shares(capacity, w, bands.map(|b| b.busy), turn);
            prop_assert!(s.iter().sum::<usize>() <= capacity);
            if capacity >= 3 {
                for i in 0..3 {
                    prop_assert_eq!(s[i] >= 1, bands[i].busy, "every busy band has a share");
                }
            }
        }
    }
}
