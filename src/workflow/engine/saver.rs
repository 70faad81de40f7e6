//! Coalesced record writes: the run record is rewritten atomically as the run goes, but at most
//! every [`SAVE_INTERVAL`], so that a burst of steps costs dozens of writes, not thousands.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::nodes::Table;
use crate::workflow::record::RecordStore;

/// Keeps the record on disk while the run goes: every change marks it dirty, and a thread
/// writes the latest state, at most every [`SAVE_INTERVAL`], so that a burst of 500 steps
/// costs a few dozen writes rather than thousands.
pub(super) struct Saver {
    signal: Arc<(Mutex<SaverFlags>, Condvar)>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct SaverFlags {
    dirty: bool,
    stop: bool,
}

/// The longest a finished node stays unrecorded; a kill -9 inside this window re-runs it.
pub const SAVE_INTERVAL: Duration = Duration::from_millis(20);

impl Saver {
    pub fn start(table: Arc<Mutex<Table>>, store: RecordStore) -> Self {
        let signal = Arc::new((Mutex::new(SaverFlags::default()), Condvar::new()));
        let thread_signal = signal.clone();
        let thread = std::thread::spawn(move || {
            let (lock, cv) = &*thread_signal;
            loop {
                {
                    let mut flags = lock.lock().expect("saver lock");
                    while !flags.dirty && !flags.stop {
                        flags = cv.wait(flags).expect("saver lock");
                    }
                    if flags.stop {
                        return;
                    }
                    flags.dirty = false;
                }
                let (name, body) = {
                    let t = table.lock().expect("node table lock");
                    (
                        t.record.name.clone(),
                        serde_json::to_vec(&t.record).expect("run records always serialize"),
                    )
                };
                if let Err(e) = store.save_serialized(&name, &body) {
                    eprintln!("obsctl: warning: {e}");
                }
                std::thread::sleep(SAVE_INTERVAL);
            }
        });
        Self {
            signal,
            thread: Mutex::new(Some(thread)),
        }
    }

    pub fn dirty(&self) {
        let (lock, cv) = &*self.signal;
        lock.lock().expect("saver lock").dirty = true;
        cv.notify_one();
    }

    pub fn stop(&self) {
        let (lock, cv) = &*self.signal;
        lock.lock().expect("saver lock").stop = true;
        cv.notify_one();
        if let Some(t) = self.thread.lock().expect("saver thread lock").take() {
            let _ = t.join();
        }
    }
}
