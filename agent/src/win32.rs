//! The Win32 calls the Windows agent needs, each behind a safe function: Job Objects (one per
//! bot and per `agent.exec` run, kill-on-close), resuming a process created suspended, the
//! console break signal, process identity (creation time), DPAPI and the host's CPU times.
//!
//! This is the only module of the agent with `unsafe`, and only on Windows. Why no crate:
//! `process-wrap` (watchexec) covers the job object but its child's `wait` waits for the
//! *whole job* to drain on a blocking thread, where the agent needs the leader's exit (then it
//! kills the rest itself, as on Unix), and it offers neither the console break, process
//! creation times nor DPAPI; `win32job` covers jobs only. Those would still leave this module,
//! so it holds the few calls itself, over `windows-sys` bindings. Every handle is an
//! [`OwnedHandle`] the moment it exists, so std closes it exactly once.
#![allow(unsafe_code)]

use std::{
    io,
    os::windows::io::{FromRawHandle as _, OwnedHandle, RawHandle},
};

use windows_sys::Win32::{
    Foundation::{GetLastError, LocalFree, ERROR_ACCESS_DENIED, FILETIME, HANDLE, INVALID_HANDLE_VALUE, WAIT_TIMEOUT},
    Security::Cryptography::{CryptProtectData, CryptUnprotectData, CRYPTPROTECT_UI_FORBIDDEN, CRYPT_INTEGER_BLOB},
    System::{
        Console::{GenerateConsoleCtrlEvent, GetConsoleProcessList, CTRL_BREAK_EVENT},
        Diagnostics::ToolHelp::{
            CreateToolhelp32Snapshot, Thread32First, Thread32Next, TH32CS_SNAPTHREAD, THREADENTRY32,
        },
        JobObjects::{
            AssignProcessToJobObject, CreateJobObjectW, JobObjectBasicAccountingInformation,
            JobObjectExtendedLimitInformation, QueryInformationJobObject, SetInformationJobObject, TerminateJobObject,
            JOBOBJECT_BASIC_ACCOUNTING_INFORMATION, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
            JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
        },
        Threading::{
            GetProcessTimes, GetSystemTimes, OpenProcess, OpenThread, ResumeThread, TerminateProcess,
            WaitForSingleObject, PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_SYNCHRONIZE, PROCESS_TERMINATE,
            THREAD_SUSPEND_RESUME,
        },
    },
};

/// Takes ownership of a handle a Win32 call returned; a null or invalid one is the call's
/// failure, reported with the thread's last error.
fn owned(handle: HANDLE) -> io::Result<OwnedHandle> {
    if handle.is_null() || handle == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `handle` was just returned by a successful Win32 call that hands its ownership to
    // the caller, and nothing else holds or closes it: `OwnedHandle` becomes its only owner.
    Ok(unsafe { OwnedHandle::from_raw_handle(handle as RawHandle) })
}

fn check(ok: i32) -> io::Result<()> {
    if ok == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn raw(handle: &OwnedHandle) -> HANDLE {
    std::os::windows::io::AsRawHandle::as_raw_handle(handle) as HANDLE
}

/// A Job Object whose processes all die when its last handle closes
/// (`JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`): dropping the `Job` kills whatever is left in it.
#[derive(Debug)]
pub struct Job(OwnedHandle);

impl Job {
    pub fn new_kill_on_close() -> io::Result<Self> {
        // SAFETY: null security attributes and a null name ask for an unnamed job with the
        // default descriptor; both pointers are allowed to be null.
        let job = Job(owned(unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) })?);
        // SAFETY: an all-zero JOBOBJECT_EXTENDED_LIMIT_INFORMATION is a valid value (plain
        // integers, no limits set).
        let mut limits: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
        limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
        // SAFETY: the job handle is live (owned by `job`); `limits` is an initialised value of
        // the structure the information class names, and the length passed is its exact size.
        check(unsafe {
            SetInformationJobObject(
                raw(&job.0),
                JobObjectExtendedLimitInformation,
                (&raw const limits).cast(),
                size_of_u32::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>(),
            )
        })?;
        Ok(job)
    }

    /// Puts a process in the job; processes it starts from then on are in the job too.
    pub fn assign(&self, process: RawHandle) -> io::Result<()> {
        // SAFETY: the job handle is live; `process` is the handle of a child the caller holds
        // (tokio's `Child::raw_handle`), which stays open for the duration of the call.
        check(unsafe { AssignProcessToJobObject(raw(&self.0), process as HANDLE) })
    }

    /// Kills every process in the job (the whole tree) with `exit_code`.
    pub fn terminate(&self, exit_code: u32) -> io::Result<()> {
        // SAFETY: the job handle is live; the call takes no pointers.
        check(unsafe { TerminateJobObject(raw(&self.0), exit_code) })
    }

    /// How many processes of the job are still running.
    pub fn active_processes(&self) -> io::Result<u32> {
        // SAFETY: an all-zero accounting structure is a valid value (plain integers).
        let mut info: JOBOBJECT_BASIC_ACCOUNTING_INFORMATION = unsafe { std::mem::zeroed() };
        // SAFETY: the job handle is live; `info` is writable storage of the structure the
        // class names, its exact size passed; the returned-length pointer may be null.
        check(unsafe {
            QueryInformationJobObject(
                raw(&self.0),
                JobObjectBasicAccountingInformation,
                (&raw mut info).cast(),
                size_of_u32::<JOBOBJECT_BASIC_ACCOUNTING_INFORMATION>(),
                std::ptr::null_mut(),
            )
        })?;
        Ok(info.ActiveProcesses)
    }

    /// The ids of the job's running processes (up to 1024).
    #[cfg(test)]
    pub fn process_ids(&self) -> io::Result<Vec<u32>> {
        // JOBOBJECT_BASIC_PROCESS_ID_LIST: two u32 counts, then a ULONG_PTR array. A usize
        // buffer gives the array its alignment; slots 0 holds both counts.
        const SLOTS: usize = 1 + 1024;
        let mut buf = vec![0usize; SLOTS];
        let bytes = u32::try_from(SLOTS * std::mem::size_of::<usize>()).unwrap_or(u32::MAX);
        // SAFETY: the job handle is live; `buf` is writable, aligned for the structure (usize),
        // and `bytes` is its exact length, so the call writes only inside it.
        check(unsafe {
            QueryInformationJobObject(
                raw(&self.0),
                windows_sys::Win32::System::JobObjects::JobObjectBasicProcessIdList,
                buf.as_mut_ptr().cast(),
                bytes,
                std::ptr::null_mut(),
            )
        })?;
        let listed = (buf[0] >> 32) as usize;
        Ok(buf[1..].iter().take(listed.min(SLOTS - 1)).map(|&pid| pid as u32).collect())
    }
}

fn size_of_u32<T>() -> u32 {
    u32::try_from(std::mem::size_of::<T>()).unwrap_or(u32::MAX)
}

/// Resumes the threads of a process created with `CREATE_SUSPENDED` (std does not hand out
/// the primary thread's handle, so they are found through a thread snapshot).
pub fn resume_process(pid: u32) -> io::Result<()> {
    // SAFETY: a thread snapshot of the whole system; flags and pid are plain values.
    let snapshot = owned(unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0) })?;
    // SAFETY: an all-zero THREADENTRY32 is a valid value; `dwSize` is set below as required.
    let mut entry: THREADENTRY32 = unsafe { std::mem::zeroed() };
    entry.dwSize = size_of_u32::<THREADENTRY32>();
    let mut resumed = 0;
    // SAFETY: the snapshot handle is live; `entry` is writable, with `dwSize` set.
    let mut more = unsafe { Thread32First(raw(&snapshot), &raw mut entry) } != 0;
    while more {
        if entry.th32OwnerProcessID == pid {
            // SAFETY: plain values; the result is owned (and closed) by `thread`.
            let thread = owned(unsafe { OpenThread(THREAD_SUSPEND_RESUME, 0, entry.th32ThreadID) })?;
            // SAFETY: the thread handle is live and opened with THREAD_SUSPEND_RESUME.
            if unsafe { ResumeThread(raw(&thread)) } == u32::MAX {
                return Err(io::Error::last_os_error());
            }
            resumed += 1;
        }
        // SAFETY: as for Thread32First.
        more = unsafe { Thread32Next(raw(&snapshot), &raw mut entry) } != 0;
    }
    if resumed == 0 {
        return Err(io::Error::other(format!("no thread of process {pid} found to resume")));
    }
    Ok(())
}

/// Whether this process has a console (bots then share it, and can get CTRL_BREAK).
pub fn has_console() -> bool {
    let mut pids = [0u32; 4];
    // SAFETY: `pids` is writable storage for as many ids as the count passed.
    unsafe { GetConsoleProcessList(pids.as_mut_ptr(), pids.len() as u32) != 0 }
}

/// CTRL_BREAK_EVENT to the console process group `group` (the pid of a process started with
/// `CREATE_NEW_PROCESS_GROUP`, which leads it). Fails when this process has no console.
pub fn send_ctrl_break(group: u32) -> io::Result<()> {
    // SAFETY: plain values; the signal goes only to processes of that group on our console.
    check(unsafe { GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, group) })
}

/// What a pid names now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    /// Running, created at this time (100 ns units since 1601, as `GetProcessTimes` tells).
    Running { created: u64 },
    /// A process exists but may not be looked at (another user's): never one of our bots.
    Foreign,
    /// No such process, or it has exited.
    Gone,
}

pub fn process_state(pid: u32) -> ProcessState {
    // SAFETY: plain values; the result is owned (and closed) by `process`.
    let process = match owned(unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION | PROCESS_SYNCHRONIZE, 0, pid) }) {
        Ok(process) => process,
        // SAFETY: reads this thread's last error, set by the failed OpenProcess just above.
        Err(_) if unsafe { GetLastError() } == ERROR_ACCESS_DENIED => return ProcessState::Foreign,
        Err(_) => return ProcessState::Gone,
    };
    // SAFETY: the process handle is live and has SYNCHRONIZE; a zero timeout only polls.
    if unsafe { WaitForSingleObject(raw(&process), 0) } != WAIT_TIMEOUT {
        return ProcessState::Gone;
    }
    let mut times = [FILETIME { dwLowDateTime: 0, dwHighDateTime: 0 }; 4];
    let [created, exited, kernel, user] = &mut times;
    // SAFETY: the handle is live with PROCESS_QUERY_LIMITED_INFORMATION; the four pointers are
    // distinct, writable FILETIMEs.
    if unsafe { GetProcessTimes(raw(&process), created, exited, kernel, user) } == 0 {
        return ProcessState::Foreign;
    }
    ProcessState::Running { created: (u64::from(created.dwHighDateTime) << 32) | u64::from(created.dwLowDateTime) }
}

/// Kills one process, if it is still the one created at `created`.
pub fn terminate_process(pid: u32, created: u64, exit_code: u32) -> io::Result<()> {
    // SAFETY: plain values; the result is owned (and closed) by `process`.
    let process = owned(unsafe { OpenProcess(PROCESS_TERMINATE, 0, pid) })?;
    // Checked after opening: the open handle pins the process, so the pid cannot be reused
    // between the check and the kill.
    if process_state(pid) != (ProcessState::Running { created }) {
        return Ok(());
    }
    // SAFETY: the handle is live and opened with PROCESS_TERMINATE.
    check(unsafe { TerminateProcess(raw(&process), exit_code) })
}

/// The host's CPU time counters (100 ns units, all CPUs summed).
#[derive(Debug, Clone, Copy)]
pub struct SystemTimes {
    idle: u64,
    /// Kernel time, idle time included (as Windows counts it).
    kernel: u64,
    user: u64,
}

impl SystemTimes {
    /// The share of CPU time spent busy since `before`, in percent.
    pub fn busy_percent_since(self, before: SystemTimes) -> f32 {
        let idle = self.idle.saturating_sub(before.idle);
        let total = self.kernel.saturating_sub(before.kernel) + self.user.saturating_sub(before.user);
        if total == 0 {
            return 0.0;
        }
        (100.0 * (1.0 - idle as f64 / total as f64)).clamp(0.0, 100.0) as f32
    }
}

pub fn system_times() -> Option<SystemTimes> {
    let mut times = [FILETIME { dwLowDateTime: 0, dwHighDateTime: 0 }; 3];
    let [idle, kernel, user] = &mut times;
    // SAFETY: three distinct, writable FILETIMEs.
    if unsafe { GetSystemTimes(idle, kernel, user) } == 0 {
        return None;
    }
    let value = |t: &FILETIME| (u64::from(t.dwHighDateTime) << 32) | u64::from(t.dwLowDateTime);
    Some(SystemTimes { idle: value(idle), kernel: value(kernel), user: value(user) })
}

/// DPAPI-encrypts `data` for the current user (`CryptProtectData`, no UI).
pub fn dpapi_protect(data: &[u8], description: &str) -> io::Result<Vec<u8>> {
    let input = blob(data)?;
    let description: Vec<u16> = description.encode_utf16().chain(std::iter::once(0)).collect();
    let mut output = CRYPT_INTEGER_BLOB { cbData: 0, pbData: std::ptr::null_mut() };
    // SAFETY: `input` points into `data`, alive and unchanged for the call (DPAPI only reads
    // it); `description` is NUL-terminated UTF-16; entropy, reserved and prompt may be null;
    // `output` is writable and receives a LocalAlloc'd buffer, which `take_blob` frees.
    check(unsafe {
        CryptProtectData(
            &input,
            description.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null(),
            CRYPTPROTECT_UI_FORBIDDEN,
            &mut output,
        )
    })?;
    Ok(take_blob(output))
}

/// Decrypts what [`dpapi_protect`] produced, for the same user.
pub fn dpapi_unprotect(data: &[u8]) -> io::Result<Vec<u8>> {
    let input = blob(data)?;
    let mut output = CRYPT_INTEGER_BLOB { cbData: 0, pbData: std::ptr::null_mut() };
    // SAFETY: as in `dpapi_protect`; the description out-pointer may be null (not wanted).
    check(unsafe {
        CryptUnprotectData(
            &input,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null(),
            CRYPTPROTECT_UI_FORBIDDEN,
            &mut output,
        )
    })?;
    Ok(take_blob(output))
}

fn blob(data: &[u8]) -> io::Result<CRYPT_INTEGER_BLOB> {
    let len = u32::try_from(data.len()).map_err(|_| io::Error::other("data too large for DPAPI"))?;
    // DPAPI declares the input mutable but never writes it.
    Ok(CRYPT_INTEGER_BLOB { cbData: len, pbData: data.as_ptr().cast_mut() })
}

/// Copies a DPAPI output buffer and frees it.
fn take_blob(output: CRYPT_INTEGER_BLOB) -> Vec<u8> {
    if output.pbData.is_null() {
        return Vec::new();
    }
    // SAFETY: after a successful call, `pbData` points to `cbData` initialised bytes that
    // DPAPI allocated for us; they are copied before being freed below.
    let bytes = unsafe { std::slice::from_raw_parts(output.pbData, output.cbData as usize) }.to_vec();
    // SAFETY: the buffer came from DPAPI's LocalAlloc and is freed once, here.
    unsafe { LocalFree(output.pbData.cast()) };
    bytes
}

/// Starts `command` suspended, puts it in a new kill-on-close [`Job`], then lets it run: no
/// process it starts can escape the job, not even one started in its first instant.
/// `creation_flags` are added to `CREATE_SUSPENDED`. On failure nothing is left running.
pub fn spawn_in_job(
    command: &mut tokio::process::Command,
    creation_flags: u32,
) -> io::Result<(tokio::process::Child, Job)> {
    use windows_sys::Win32::System::Threading::CREATE_SUSPENDED;
    let job = Job::new_kill_on_close()?;
    command.creation_flags(CREATE_SUSPENDED | creation_flags);
    let mut child = command.spawn()?;
    let setup = match (child.raw_handle(), child.id()) {
        (Some(handle), Some(pid)) => job.assign(handle).and_then(|()| resume_process(pid)),
        _ => Err(io::Error::other("the new process has no handle")),
    };
    if let Err(e) = setup {
        // Suspended and maybe outside the job: kill it directly.
        let _ = child.start_kill();
        return Err(e);
    }
    Ok((child, job))
}
