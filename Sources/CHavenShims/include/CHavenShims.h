#ifndef HAVEN_SHIMS_H
#define HAVEN_SHIMS_H
#include <sys/types.h>
#include <sys/xattr.h>

/// O_NOATIME is only visible with _GNU_SOURCE, which Swift's Glibc module does not set.
int haven_o_noatime(void);
/// posix_fadvise(POSIX_FADV_SEQUENTIAL) wrapper.
int haven_fadvise_sequential(int fd);
#endif
