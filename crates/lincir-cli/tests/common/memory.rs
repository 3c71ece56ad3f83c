//! A process's memory, for the tests' bounds: /proc's VmRSS and VmHWM on Linux, the working set
//! and its peak (GetProcessMemoryInfo) on Windows.

pub struct Memory {
    pub resident_kib: u64,
    pub peak_kib: u64,
}

impl Memory {
    pub fn peak_mib(&self) -> f64 {
        self.peak_kib as f64 / 1024.0
    }
}

#[cfg(not(windows))]
pub fn of_process(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |field: &str| -> Option<u64> { status.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok() };
    Some(Memory { resident_kib: kib("VmRSS:")?, peak_kib: kib("VmHWM:")? })
}

#[cfg(windows)]
pub fn of_process(pid: u32) -> Option<Memory> {
    use windows_sys::Win32::Foundation::CloseHandle;
    use windows_sys::Win32::System::ProcessStatus::{GetProcessMemoryInfo, PROCESS_MEMORY_COUNTERS};
    use windows_sys::Win32::System::Threading::{OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION};
    // SAFETY: plain Win32 calls on a handle opened and closed here, into a zeroed struct whose
    // size is passed along.
    unsafe {
        let process = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
        if process.is_null() {
            return None;
        }
        let mut counters: PROCESS_MEMORY_COUNTERS = std::mem::zeroed();
        let ok = GetProcessMemoryInfo(process, &mut counters, std::mem::size_of::<PROCESS_MEMORY_COUNTERS>() as u32);
        CloseHandle(process);
        (ok != 0).then(|| Memory { resident_kib: counters.WorkingSetSize as u64 / 1024, peak_kib: counters.PeakWorkingSetSize as u64 / 1024 })
    }
}
