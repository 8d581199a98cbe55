#define _GNU_SOURCE
#include <fcntl.h>
#include <fcntl.h>
#include "CHavenShims.h"

int haven_o_noatime(void) { return O_NOATIME; }
int haven_fadvise_sequential(int fd) { return posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL); }
