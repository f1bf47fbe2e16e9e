//! Scheduling of the server's background threads (Linux; elsewhere they run as they are).

/// Puts the calling thread in the idle class (`SCHED_IDLE`): it runs only on a core nothing
/// else wants. Where the class is refused, nice 19.
pub(crate) fn idle_class() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and sched_setscheduler take plain integers and a pointer to a parameter
    // that outlives the call; with a thread id they change that thread only.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(libc::gettid(), libc::SCHED_IDLE, &param) != 0 {
            lower_priority(19);
        }
    }
}

/// Lowers the calling thread's priority to `nice`.
pub(crate) fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority take plain integers; with a thread id setpriority changes
    // that thread only.
    unsafe {
        let tid = libc::gettid();
        if libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) != 0 {
            tracing::debug!(nice, "could not lower a background thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}
