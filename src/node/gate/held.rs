//! The tasks a node holds back, as a plain round-robin queue: one FIFO per
//! group (a kind and a `Task-Key`), and a ring of the groups that have
//! work. The gate tries groups in ring order; a group whose task starts
//! goes to the back of the ring, so a key with a burst of a thousand tasks
//! takes one turn in as many as there are keys with work, and never delays
//! another key's tasks by more than its share.
//!
//! | event                         | queue                                           |
//! |-------------------------------|-------------------------------------------------|
//! | a task arrives, room left     | appended to its group; a new group joins the ring's back |
//! | a task arrives, no room       | refused (the node hands it back)                |
//! | a group's head starts         | removed; the group moves to the ring's back (or leaves it, empty) |
//! | a group cannot start          | stays where it is in the ring                   |

use std::collections::{HashMap, VecDeque};

/// A group of held tasks: their kind and `Task-Key` (with its tenant).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Group {
    pub(crate) kind: String,
    pub(crate) key: Option<String>,
}

/// Held tasks, at most `bound` of them.
#[derive(Debug)]
pub(crate) struct Held<T> {
    groups: HashMap<Group, VecDeque<T>>,
    ring: VecDeque<Group>,
    len: usize,
    bound: usize,
}

impl<T> Held<T> {
    pub(crate) fn new(bound: usize) -> Self {
        Held {
            groups: HashMap::new(),
            ring: VecDeque::new(),
            len: 0,
            bound,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tasks it may still take.
    pub(crate) fn room(&self) -> usize {
        self.bound.saturating_sub(self.len)
    }

    /// Holds `item` in `group`; gives it back when there is no room.
    pub(crate) fn push(&mut self, group: Group, item: T) -> Result<(), T> {
        if self.room() == 0 {
            return Err(item);
        }
        let queue = self.groups.entry(group.clone()).or_default();
        if queue.is_empty() {
            self.ring.push_back(group);
        }
        queue.push_back(item);
        self.len += 1;
        Ok(())
    }

    /// The groups with work, in the order to try them.
    pub(crate) fn order(&self) -> Vec<Group> {
        self.ring.iter().cloned().collect()
    }

    /// Takes the head of `group` to start it; the group moves to the back.
    pub(crate) fn take(&mut self, group: &Group) -> Option<T> {
        let queue = self.groups.get_mut(group)?;
        let item = queue.pop_front()?;
        self.len -= 1;
        let left = !queue.is_empty();
        if !left {
            self.groups.remove(group);
        }
        if let Some(at) = self.ring.iter().position(|g| g == group) {
            self.ring.remove(at);
        }
        if left {
            self.ring.push_back(group.clone());
        }
        Some(item)
    }

    /// Takes the first held task (groups in turn order, each from its head)
    /// that `ends` says needs no turn.
    pub(crate) fn take_where(&mut self, mut ends: impl FnMut(&T) -> bool) -> Option<T> {
        let (group, at) = self.ring.iter().find_map(|g| {
            let at = self.groups.get(g)?.iter().position(&mut ends)?;
            Some((g.clone(), at))
        })?;
        let queue = self.groups.get_mut(&group)?;
        let item = queue.remove(at)?;
        self.len -= 1;
        if queue.is_empty() {
            self.groups.remove(&group);
            self.ring.retain(|g| g != &group);
        }
        Some(item)
    }

    /// Every held task, emptying the queue.
    pub(crate) fn drain(&mut self) -> Vec<T> {
        self.len = 0;
        self.ring.clear();
        self.groups.drain().flat_map(|(_, q)| q).collect()
    }

    /// Every held task.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.groups.values().flatten()
    }
}

/// How many tasks a node holds back at most: 16 per slot, at least 1,024
/// (enough to reach past one key's burst of a thousand to the next key's
/// tasks). A node holding that many asks for no more tasks until one starts.
pub(crate) fn bound(concurrency: usize) -> usize {
    concurrency.saturating_mul(16).max(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(key: &str) -> Group {
        Group {
            kind: "crawl".into(),
            key: Some(key.into()),
        }
    }

    /// Starts every task, always the first group that may start.
    fn run_all(held: &mut Held<u32>, may_start: impl Fn(&Group) -> bool) -> Vec<u32> {
        let mut started = Vec::new();
        while let Some(group) = held.order().into_iter().find(|g| may_start(g)) {
            started.push(held.take(&group).unwrap());
        }
        started
    }

    #[test]
    fn a_burst_on_one_key_takes_turns_with_the_others() {
        let mut held = Held::new(100);
        for n in 0..10 {
            held.push(g("a"), n).unwrap();
        }
        for n in 100..103 {
            held.push(g("b"), n).unwrap();
        }
        held.push(g("c"), 200).unwrap();
        let started = run_all(&mut held, |_| true);
        assert_eq!(&started[..7], &[0, 100, 200, 1, 101, 2, 102]);
        assert_eq!(&started[7..], &[3, 4, 5, 6, 7, 8, 9]);
        assert!(held.is_empty() && held.order().is_empty());
    }

    #[test]
    fn a_group_that_cannot_start_keeps_its_place() {
        let mut held = Held::new(100);
        held.push(g("a"), 1).unwrap();
        held.push(g("b"), 2).unwrap();
        held.push(g("a"), 3).unwrap();
        // a is at its limit: b goes first, a keeps the front.
        assert_eq!(run_all(&mut held, |g| g.key.as_deref() == Some("b")), [2]);
        assert_eq!(held.order(), [g("a")]);
        assert_eq!(run_all(&mut held, |_| true), [1, 3]);
    }

    #[test]
    fn a_task_that_needs_no_turn_is_taken_from_anywhere() {
        let mut held = Held::new(100);
        for n in [1, 2, 3] {
            held.push(g("a"), n).unwrap();
        }
        held.push(g("b"), 4).unwrap();
        // One in the middle of a's queue (cancelled, say): a keeps its place.
        assert_eq!(held.take_where(|&n| n == 2), Some(2));
        assert_eq!(held.order(), [g("a"), g("b")]);
        // b's only one: b leaves the ring.
        assert_eq!(held.take_where(|&n| n == 4), Some(4));
        assert_eq!(held.order(), [g("a")]);
        assert_eq!(held.take_where(|&n| n == 9), None);
        assert_eq!((held.len(), run_all(&mut held, |_| true)), (2, vec![1, 3]));
    }

    #[test]
    fn it_holds_no_more_than_its_bound() {
        let mut held = Held::new(2);
        assert!(held.push(g("a"), 1).is_ok());
        assert!(held.push(g("b"), 2).is_ok());
        assert_eq!(held.room(), 0);
        assert_eq!(held.push(g("a"), 3), Err(3));
        assert_eq!(held.take(&g("b")), Some(2));
        assert_eq!(held.room(), 1);
        let mut all = held.drain();
        all.sort();
        assert_eq!(all, [1]);
        assert_eq!((held.len(), held.room()), (0, 2));
        assert_eq!(bound(8), 1024);
        assert_eq!(bound(64), 1024);
        assert_eq!(bound(256), 4096);
    }
}
