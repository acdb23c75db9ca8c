//! The one scheduler of apply: walks a dependency graph of steps with bounded parallelism.
//!
//! A step starts once every step it waits for finished successfully; at most `parallelism`
//! steps run at once; among the ready steps the one with the lowest index (the plan's order)
//! starts first, so a walk with `parallelism` 1 runs the plan exactly in its shown order.
//! After a failure or a cancel no new step starts (the running ones finish); the steps not
//! started are left out of the result, for the caller to report as skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// How long a worker waiting for a ready step sleeps before it looks at `cancel` again.
const CANCEL_POLL: Duration = Duration::from_millis(100);

/// Whether a finished step succeeded: only then do the steps waiting for it become ready.
pub trait Outcome {
    /// True when the step did what it had to.
    fn succeeded(&self) -> bool;
}

/// Walk state, under one lock.
struct State<O> {
    /// Steps whose every dependency succeeded, not started yet: lowest index first.
    ready: BTreeSet<usize>,
    /// For each step, how many of its dependencies have not succeeded yet.
    pending: Vec<usize>,
    finished: BTreeMap<usize, O>,
    running: usize,
    /// Set after a failure or a cancel: no new step starts.
    stop: bool,
}

/// Runs `run(i)` for the steps `0..deps.len()`, step `i` after every step of `deps[i]`
/// (indices into the same list; an index out of range is ignored), at most `parallelism`
/// at once (at least 1). `cancel` is polled: once set, no new step starts. Returns the
/// outcome of every step that ran, by index; a step absent from the result was not started
/// (an earlier step failed, the walk was cancelled, or it waits in a dependency cycle,
/// which the planner never makes: [`stuck`] names those).
pub fn walk<O, F>(deps: &[BTreeSet<usize>], parallelism: usize, cancel: &AtomicBool, run: F) -> BTreeMap<usize, O>
where
    O: Outcome + Send,
    F: Fn(usize) -> O + Sync,
{
    let n = deps.len();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut pending = vec![0; n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds.iter().filter(|&&d| d < n && d != i) {
            dependents[d].push(i);
            pending[i] += 1;
        }
    }
    let ready = (0..n).filter(|&i| pending[i] == 0).collect();
    let state = Mutex::new(State { ready, pending, finished: BTreeMap::new(), running: 0, stop: false });
    let wake = Condvar::new();
    let workers = parallelism.max(1).min(n.max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                while let Some(i) = next(&state, &wake, cancel) {
                    let outcome = run(i);
                    // Invariant: no code panics while holding this lock (`run` is outside it).
                    let mut st = state.lock().expect("walk state lock");
                    if outcome.succeeded() {
                        for &j in &dependents[i] {
                            st.pending[j] -= 1;
                            if st.pending[j] == 0 {
                                st.ready.insert(j);
                            }
                        }
                    } else {
                        st.stop = true;
                    }
                    st.running -= 1;
                    st.finished.insert(i, outcome);
                    wake.notify_all();
                }
                wake.notify_all();
            });
        }
    });
    // Invariant: every worker has joined and none panicked while holding the lock.
    state.into_inner().expect("walk state lock").finished
}

/// The next step for a worker to run, or `None` when nothing can start any more.
fn next<O>(state: &Mutex<State<O>>, wake: &Condvar, cancel: &AtomicBool) -> Option<usize> {
    let mut st = state.lock().expect("walk state lock");
    loop {
        if cancel.load(Ordering::SeqCst) {
            st.stop = true;
        }
        if !st.stop
            && let Some(i) = st.ready.pop_first()
        {
            st.running += 1;
            return Some(i);
        }
        if st.running == 0 {
            return None;
        }
        st = wake.wait_timeout(st, CANCEL_POLL).expect("walk state lock").0;
    }
}

/// The steps of `deps` that can never start because they wait, directly or not, on a
/// dependency cycle (empty for a plan made by the planner, whose order has no cycle).
pub fn stuck(deps: &[BTreeSet<usize>]) -> BTreeSet<usize> {
    let n = deps.len();
    let mut done = vec![false; n];
    loop {
        let before = done.iter().filter(|d| **d).count();
        for i in 0..n {
            if !done[i] && deps[i].iter().all(|&d| d >= n || d == i || done[d]) {
                done[i] = true;
            }
        }
        if done.iter().filter(|d| **d).count() == before {
            break;
        }
    }
    (0..n).filter(|&i| !done[i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    impl Outcome for bool {
        fn succeeded(&self) -> bool {
            *self
        }
    }

    fn deps(list: &[&[usize]]) -> Vec<BTreeSet<usize>> {
        list.iter().map(|d| d.iter().copied().collect()).collect()
    }

    #[test]
    fn one_worker_runs_in_index_order_after_dependencies() {
        let order = Mutex::new(Vec::new());
        let d = deps(&[&[2], &[], &[], &[0, 1]]);
        let out = walk(&d, 1, &AtomicBool::new(false), |i| {
            order.lock().unwrap().push(i);
            true
        });
        assert_eq!(out.len(), 4);
        assert_eq!(*order.lock().unwrap(), vec![1, 2, 0, 3]);
    }

    #[test]
    fn never_more_than_parallelism_at_once_and_independent_steps_overlap() {
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let d = vec![BTreeSet::new(); 12];
        walk(&d, 3, &AtomicBool::new(false), |_| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            running.fetch_sub(1, Ordering::SeqCst);
            true
        });
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_failure_starts_nothing_new_and_dependents_are_not_run() {
        let d = deps(&[&[], &[0], &[1], &[]]);
        let out = walk(&d, 1, &AtomicBool::new(false), |i| i != 0);
        assert_eq!(out.keys().copied().collect::<Vec<_>>(), vec![0]);
        assert!(!out[&0]);
    }

    #[test]
    fn cancelled_starts_nothing() {
        let d = vec![BTreeSet::new(); 3];
        let out: BTreeMap<usize, bool> = walk(&d, 2, &AtomicBool::new(true), |_| true);
        assert!(out.is_empty());
    }

    #[test]
    fn a_cycle_is_stuck_and_never_runs() {
        let d = deps(&[&[1], &[0], &[], &[0]]);
        let out = walk(&d, 2, &AtomicBool::new(false), |_| true);
        assert_eq!(out.keys().copied().collect::<Vec<_>>(), vec![2]);
        assert_eq!(stuck(&d), BTreeSet::from([0, 1, 3]));
        assert!(stuck(&deps(&[&[], &[0], &[0, 1]])).is_empty());
    }
}
