#ifndef HAVEN_SHIMS_H
#define HAVEN_SHIMS_H
#include <sys/types.h>
#include <sys/xattr.h>

/// O_NOATIME is only visible with _GNU_SOURCE, which Swift's Glibc module does not set.
int haven_o_noatime(void);
/// O_TMPFILE (an unnamed file in a directory), or 0 where the system has none.
int haven_o_tmpfile(void);
/// posix_fadvise(POSIX_FADV_SEQUENTIAL) wrapper.
int haven_fadvise_sequential(int fd);
/// Asks the kernel to send `sig` to this process when its parent dies (Linux prctl PR_SET_PDEATHSIG).
/// Returns 0 on success, -1 where unsupported.
int haven_set_parent_death_signal(int sig);
/// Installs a handler for `sig` that writes the signal number (one byte) to a new pipe, and returns the
/// pipe's read end (-1 on error). Async-signal-safe; a program that execs keeps the default disposition.
int haven_signal_pipe(int sig);
/// Unmaps the pages of this process's executable code mappings (binary and shared libraries) and turns
/// off the kernel's fault-around for them, so only code that actually runs from now on is resident.
/// Returns the number of mappings trimmed (-1 if /proc is unavailable). Linux only; 0 elsewhere.
int haven_trim_code_pages(void);
/// Fills `buffer` with `count` bytes from the kernel's CSPRNG (getrandom(2)). Returns 0, or -1 on error.
int haven_random_bytes(void *buffer, size_t count);
#endif
