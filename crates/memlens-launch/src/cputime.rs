//! CPU time of the calling thread and of the whole memlens process, to charge reads to the
//! sampler's budget: the sampler thread's own work by thread, and whatever other threads of
//! memlens do (a Python view reading in the background) by the difference.

fn clock_seconds(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into the timespec we own.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    if r != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Seconds of CPU (user + system) the calling thread has used.
pub fn thread_cpu_seconds() -> f64 {
    clock_seconds(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// Seconds of CPU (user + system) every thread of this process has used (children excluded).
pub fn process_cpu_seconds() -> f64 {
    clock_seconds(libc::CLOCK_PROCESS_CPUTIME_ID)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_threads_work_shows_in_the_process_clock_only() {
        let (t0, p0) = (thread_cpu_seconds(), process_cpu_seconds());
        std::thread::spawn(|| {
            let c0 = thread_cpu_seconds();
            let mut x = 0u64;
            while thread_cpu_seconds() - c0 < 0.02 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
            x
        })
        .join()
        .unwrap_or(0);
        let (t1, p1) = (thread_cpu_seconds(), process_cpu_seconds());
        assert!(p1 - p0 >= 0.02, "process clock moved {}", p1 - p0);
        assert!(t1 - t0 < 0.02, "this thread's clock moved {}", t1 - t0);
    }
}
