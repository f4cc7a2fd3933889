//! The process-wide CPU core allotment. Every model worker takes its threads from it
//! for each decode step, so models decoding at once split the cores and one decoding
//! alone uses them all. It knows nothing of models or llama.cpp.
//!
//! Why: llama.cpp's threads wait for each other at every graph barrier by spinning.
//! Two models each running every core's worth of threads on the same cores (a band
//! comping) make those spins wait on preempted threads, and both crawl.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

/// A fixed number of cores, lent out a step at a time.
///
/// Fair: requests are served first come, first served, so a model that steps again at
/// once cannot starve one that has been waiting.
#[derive(Debug)]
pub struct Cores {
    total: usize,
    // A std Mutex and Condvar, not tokio's: the callers are model worker threads that
    // block until their cores are free, never async tasks.
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Threads lent out right now.
    held: usize,
    /// The most threads ever lent out at once.
    peak: usize,
    /// Members with work to do, in the order they became busy; each gets a share.
    busy: Vec<u64>,
    /// Tickets of the requests waiting for cores, oldest first.
    waiting: VecDeque<u64>,
    next_ticket: u64,
    next_member: u64,
}

impl State {
    /// The threads `member` may use now: an equal share of the cores among the busy
    /// members (the first ones get the remainder), at least one.
    fn share(&self, total: usize, member: Option<u64>) -> usize {
        let rank = member.and_then(|m| self.busy.iter().position(|&b| b == m));
        let (rank, busy) = match rank {
            Some(r) => (r, self.busy.len()),
            None => (self.busy.len(), self.busy.len() + 1),
        };
        (total / busy + usize::from(rank < total % busy)).max(1)
    }
}

static GLOBAL: OnceLock<Arc<Cores>> = OnceLock::new();

impl Cores {
    /// An allotment of `total` cores (at least one).
    pub fn new(total: usize) -> Arc<Cores> {
        Arc::new(Cores {
            total: total.max(1),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        })
    }

    /// The allotment every model worker of this process shares: every core the
    /// process may use.
    pub fn global() -> Arc<Cores> {
        GLOBAL
            .get_or_init(|| Cores::new(super::model::default_threads().max(1) as usize))
            .clone()
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Threads lent out right now.
    pub fn held(&self) -> usize {
        self.lock().held
    }

    /// The most threads lent out at once since the allotment began: never above
    /// [`Cores::total`].
    pub fn peak(&self) -> usize {
        self.lock().peak
    }

    /// Members with work to do right now.
    pub fn busy(&self) -> usize {
        self.lock().busy.len()
    }

    /// Block until at least `n` members have work: for tests and benchmarks that need
    /// models decoding at once.
    pub fn wait_until_busy(&self, n: usize) {
        let mut st = self.lock();
        while st.busy.len() < n {
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// A new member (one model worker); it shares the cores while it is busy.
    pub fn join(self: &Arc<Self>) -> Member {
        let mut st = self.lock();
        st.next_member += 1;
        Member {
            cores: self.clone(),
            id: st.next_member,
        }
    }

    /// Take `threads` cores (at most all of them) for work outside the model workers,
    /// waiting until they are free; they return when the grant is dropped.
    pub fn reserve(self: &Arc<Self>, threads: usize) -> Grant {
        let threads = threads.clamp(1, self.total);
        self.take(None, threads)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(self: &Arc<Self>, member: Option<u64>, want: usize) -> Grant {
        let mut st = self.lock();
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.waiting.push_back(ticket);
        loop {
            if st.waiting.front() == Some(&ticket) {
                let n = match member {
                    Some(_) => want.min(st.share(self.total, member)),
                    None => want,
                }
                .clamp(1, self.total);
                if st.held + n <= self.total {
                    st.waiting.pop_front();
                    st.held += n;
                    st.peak = st.peak.max(st.held);
                    drop(st);
                    // The next ticket may fit in what is left.
                    self.changed.notify_all();
                    return Grant {
                        cores: self.clone(),
                        threads: n,
                    };
                }
            }
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Let the OpenMP threads this thread started go (its idle thread team), so they no
/// longer count against the cores.
///
/// Why: llama.cpp runs each decode on an OpenMP team started by the calling thread,
/// and GNU libgomp keeps that team's threads parked afterwards. Every model worker
/// that ever decoded with more than one thread keeps one, and once the parked threads
/// of all workers outnumber the cores, libgomp switches every barrier in the process
/// to a short ("throttled") spin that sleeps in the kernel at each of the graph's
/// hundreds of barriers: a soloist decodes ~1.5x slower for the rest of the process
/// after a band has comped once. An idle worker giving its team back keeps the count
/// at the cores of the workers actually decoding. Costs one thread start the next
/// time the worker decodes with more than one thread.
///
/// A no-op where llama.cpp was built without GNU OpenMP (the symbol is looked up at
/// run time, so nothing here links against an OpenMP runtime).
pub fn release_thread_team() {
    type Pause = unsafe extern "C" fn(libc::c_int) -> libc::c_int;
    static PAUSE: OnceLock<Option<Pause>> = OnceLock::new();
    let pause = PAUSE.get_or_init(|| {
        // SAFETY: dlsym with a NUL-terminated name on the default handle; the symbol,
        // where present, is libgomp's `int omp_pause_resource_all(omp_pause_resource_t)`.
        unsafe {
            let sym = libc::dlsym(libc::RTLD_DEFAULT, c"omp_pause_resource_all".as_ptr());
            (!sym.is_null()).then(|| std::mem::transmute::<*mut libc::c_void, Pause>(sym))
        }
    });
    if let Some(pause) = pause {
        // SAFETY: called outside any parallel region (libgomp refuses, returning
        // non-zero, if not); `omp_pause_soft` is 1. It frees only this thread's pool.
        unsafe { pause(1) };
    }
}

/// Calls [`release_thread_team`] when dropped: for code outside the model workers that
/// decodes on its own thread (the bare baseline loops), so its team does not outlive it.
pub struct ReleaseTeamOnDrop;

impl Drop for ReleaseTeamOnDrop {
    fn drop(&mut self) {
        release_thread_team();
    }
}

/// One model worker's place in the allotment.
#[derive(Debug)]
pub struct Member {
    cores: Arc<Cores>,
    id: u64,
}

impl Member {
    /// Say whether this member has work; only busy members count in the shares.
    pub fn set_busy(&self, busy: bool) {
        let mut st = self.cores.lock();
        let at = st.busy.iter().position(|&b| b == self.id);
        match (busy, at) {
            (true, None) => st.busy.push(self.id),
            (false, Some(i)) => {
                st.busy.remove(i);
            }
            _ => return,
        }
        drop(st);
        self.cores.changed.notify_all();
    }

    /// Threads for one step: at most `want` and this member's share, at least one;
    /// waits until they are free.
    pub fn acquire(&self, want: usize) -> Grant {
        self.cores.take(Some(self.id), want.max(1))
    }

    /// Exactly `threads` cores (at most all of them), whatever the shares: for work
    /// whose thread count cannot change. Waits until they are free.
    pub fn acquire_exact(&self, threads: usize) -> Grant {
        self.cores.take(None, threads.max(1))
    }

    /// Cores in the allotment.
    pub fn total(&self) -> usize {
        self.cores.total
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.set_busy(false);
    }
}

/// Cores lent for one step; dropping it gives them back.
#[derive(Debug)]
pub struct Grant {
    cores: Arc<Cores>,
    threads: usize,
}

impl Grant {
    pub fn threads(&self) -> usize {
        self.threads
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.cores.lock().held -= self.threads;
        self.cores.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_busy_member_gets_every_core_and_two_split_them() {
        let cores = Cores::new(4);
        let (a, b) = (cores.join(), cores.join());
        a.set_busy(true);
        assert_eq!(a.acquire(8).threads(), 4);
        b.set_busy(true);
        let (ga, gb) = (a.acquire(8), b.acquire(8));
        assert_eq!((ga.threads(), gb.threads()), (2, 2));
        assert_eq!(cores.held(), 4);
        drop((ga, gb));
        b.set_busy(false);
        assert_eq!(a.acquire(8).threads(), 4);
    }

    #[test]
    fn an_odd_core_goes_to_the_first_busy_member_and_wants_are_kept() {
        let cores = Cores::new(3);
        let (a, b) = (cores.join(), cores.join());
        a.set_busy(true);
        b.set_busy(true);
        assert_eq!(a.acquire(8).threads(), 2);
        assert_eq!(b.acquire(8).threads(), 1);
        assert_eq!(a.acquire(1).threads(), 1);
    }

    #[test]
    fn a_member_waits_until_the_cores_it_needs_are_back() {
        let cores = Cores::new(2);
        let (a, b) = (cores.join(), cores.join());
        a.set_busy(true);
        let solo = a.acquire(2);
        b.set_busy(true);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let g = b.acquire(2);
            tx.send(g.threads()).unwrap();
        });
        // b cannot have its core while a still holds both.
        assert!(rx.try_recv().is_err());
        assert_eq!(cores.held(), 2);
        drop(solo);
        assert_eq!(rx.recv().unwrap(), 1);
        waiter.join().unwrap();
        assert_eq!(cores.peak(), 2);
    }
}
